"""Abuse: callers that take too much, and what callers may learn of the deployment.

Real ``idgen serve`` processes on loopback, real databases. Quotas per caller (a token,
else a peer host), the ``above_all`` concurrency limit, and errors and metrics that name
databases by label, never by URL, host, user or database name.

The floods run in a process of their own (``flood_main``, started by ``Flood``): in the
test's process their threads would hold the GIL while decoding 100,000-ID answers, and the
steady caller's latency would measure this process, not the server.
"""
from __future__ import annotations

import json
import math
import statistics
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from idgen_client import (
    INT64_MAX,
    IdGenError,
    IdSpaceExhausted,
    PermissionDenied,
    QuotaExceeded,
    RemoteClient,
    ServiceUnavailable,
    Unauthenticated,
)
from idgen_server.defaults import DEFAULT_QUOTA_IDS
from idgen_wire import idgen_pb2
from idgen_wire.auth import bearer
from idgen_wire.status import error_from
from tests.support.cli import db_args, idgen
from tests.support.databases import MARIADB_PORT
from tests.support.servers import ServerProcess, free_port, stub_to
from tests.support.stores import ProxiedDatabases, edit_row, prepare
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------------

def create_token(url: str, *biz_types: str, name: str) -> str:
    """``idgen token create --biz ... --name NAME --db URL``; the token it printed."""
    result = idgen("token", "create", *[a for b in biz_types for a in ("--biz", b)], "--name", name,
                   "--db", url)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_until_known(address: str, token: str) -> None:
    """Until the server knows ``token``: a call for a biz type it does not grant is refused
    as PermissionDenied (the token is known) rather than Unauthenticated. The grant is
    checked before the quota, so this charges the caller nothing."""
    def denied() -> bool:
        try:
            client.next_ids("not-granted", 1)
        except PermissionDenied:
            return True
        except Unauthenticated:
            return False
        raise AssertionError("a biz type the token does not grant was served")

    with RemoteClient(address, token=token, retries=0) as client:
        wait_until(denied, 10, "the server to know the new token")


def quota_refusal(call: Callable[[], object], limit: int = 10) -> QuotaExceeded:
    """Make ``call()`` up to ``limit`` times; the QuotaExceeded it ends with."""
    for _ in range(limit):
        try:
            call()
        except QuotaExceeded as exc:
            return exc
    raise AssertionError(f"{limit} calls in a row were never refused for the quota")


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def p50(latencies: list[float]) -> float:
    return statistics.median(latencies)


def steady_latencies(client: RemoteClient, biz_type: str, calls: int, budget: float) -> list[float]:
    """Seconds each of ``calls`` NextId(count=1) calls took (fewer if ``budget`` seconds run out)."""
    latencies: list[float] = []
    deadline = time.monotonic() + budget
    while len(latencies) < calls and time.monotonic() < deadline:
        started = time.perf_counter()
        client.next_ids(biz_type, 1)
        latencies.append(time.perf_counter() - started)
    return latencies


# --- the flood, in a process of its own ---------------------------------------------------------

def flood_main() -> None:
    """Run in a child process (``Flood``): ``sys.argv[1]`` is a JSON object with
    ``address``, ``token``, ``mode`` (``next_id``: NextId(count=100000) honouring
    QuotaExceeded.retry_after, sleeping it, at most 1 s; ``above_all``: NextSegment with
    above_all and no retries), ``biz_type``, ``threads``, ``calls`` (per thread) and
    ``seconds``. Prints ``flooding`` once the server first held it back (a quota refusal,
    or UNAVAILABLE): from then on it is a flood the server is defending against, the burst
    a full quota bucket allows spent. Floods until stdin closes (or the bounds are
    reached), then prints one JSON line of what happened."""
    spec = json.loads(sys.argv[1])
    stop = threading.Event()
    held_back = threading.Event()
    lock = threading.Lock()
    seen: dict[str, object] = {"ok": 0, "quota": 0, "unavailable": 0, "retry_after": 0.0,
                               "unavailable_messages": [], "errors": []}

    def record(key: str, message: str | None = None, retry_after: float = 0.0) -> None:
        with lock:
            seen[key] = int(seen[key]) + 1  # type: ignore[call-overload]
            seen["retry_after"] = max(float(seen["retry_after"]), retry_after)  # type: ignore[arg-type]
            if message is not None:
                messages = seen["errors" if key == "errors" else "unavailable_messages"]
                assert isinstance(messages, list)
                if message not in messages and len(messages) < 10:
                    messages.append(message)
        if key in ("quota", "unavailable"):
            held_back.set()

    def run(client: RemoteClient) -> None:
        for _ in range(spec["calls"]):
            if stop.is_set():
                return
            try:
                if spec["mode"] == "next_id":
                    # The answer's 100,000 IDs are not made into a list of Python ints (25 ms
                    # of this 2-core machine's CPU each): the load is the server's to carry.
                    try:
                        stub.NextId(request, timeout=10, metadata=metadata)
                    except grpc.RpcError as exc:
                        raise error_from(exc) from None
                else:
                    client.next_segment(spec["biz_type"], above_all=True)
                record("ok")
            except QuotaExceeded as exc:
                record("quota", retry_after=exc.retry_after)
                stop.wait(min(exc.retry_after, 1.0))
            except ServiceUnavailable as exc:
                record("unavailable", str(exc))
            except IdGenError as exc:
                record("errors", f"{type(exc).__name__}: {exc}")

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    request = idgen_pb2.NextIdRequest(biz_type=spec["biz_type"], count=100_000)
    metadata = (bearer(spec["token"]),) if spec["token"] else ()
    with RemoteClient(spec["address"], token=spec["token"], retries=0, timeout=10) as client, \
            stub_to(spec["address"]) as stub:
        threads = [threading.Thread(target=run, args=(client,)) for _ in range(spec["threads"])]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        threading.Thread(target=watch_stdin, daemon=True).start()
        print("flooding" if held_back.wait(30) else "never held back", flush=True)
        stop.wait(spec["seconds"])
        stop.set()
        for thread in threads:
            thread.join(30)
        seen["seconds"] = time.monotonic() - started
    print(json.dumps(seen), flush=True)


class Flood:
    """``flood_main`` in a child process, while the ``with`` block runs; ``result`` after."""

    def __init__(self, address: str, *, mode: str, biz_type: str, threads: int, calls: int,
                 token: str | None = None, seconds: float = 60.0) -> None:
        spec = {"address": address, "token": token, "mode": mode, "biz_type": biz_type,
                "threads": threads, "calls": calls, "seconds": seconds}
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.test_abuse import flood_main; flood_main()",
             json.dumps(spec)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.result: dict[str, object] = {}

    def __enter__(self) -> Flood:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "flooding":
            self._proc.kill()
            raise AssertionError(f"the server never held the flood back: {line!r} "
                                 f"{self._proc.stderr.read()}")  # type: ignore[union-attr]
        return self

    def __exit__(self, *exc_info: object) -> None:
        out, err = self._proc.communicate(timeout=90)  # closes stdin: the flood ends
        assert self._proc.returncode == 0, err
        self.result = json.loads(out.strip().splitlines()[-1])


# --- 1. quotas ------------------------------------------------------------------------------

QUOTA_ARGS = ["--quota-ids", "200000", "--quota-calls", "50"]
"""200,000 IDs (two NextId calls of 100,000) and 50 calls per second per caller."""


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server with QUOTA_ARGS on SQLite, with biz types ``q`` and ``top`` (its max_id 1,500
    below 2^63-1), that needs tokens (one exists); and its database's URL."""
    directory = tmp_path_factory.mktemp("quota")
    url = f"sqlite:///{directory}/idgen.db"
    prepare([url], "q", step=10_000)
    prepare([url], "top", step=1000)
    edit_row(url, "top", f"max_id = {INT64_MAX - 1500}")
    create_token(url, "q", name="first")
    server = ServerProcess([url], extra_args=QUOTA_ARGS, cwd=str(directory)).start()
    yield server, url
    server.stop()


def new_caller(quota_server: tuple[ServerProcess, str], name: str, *biz_types: str) -> RemoteClient:
    """A client with a fresh token of its own (so a fresh quota), which the server knows."""
    server, url = quota_server
    token = create_token(url, *(biz_types or ("q",)), name=name)
    wait_until_known(server.address, token)
    return RemoteClient(server.address, token=token, retries=0)


def test_a_caller_over_its_ids_quota_is_told_when_to_retry_and_is_served_after_waiting_that_long(
        quota_server):
    with new_caller(quota_server, "ids") as client:
        refused = quota_refusal(lambda: client.next_ids("q", 100_000), limit=4)
        assert not isinstance(refused, IdSpaceExhausted)
        # The bucket holds one second of IDs: 100,000 of them come back within 0.5 s.
        assert 0 < refused.retry_after <= 0.5
        assert "quota" in str(refused)
        time.sleep(refused.retry_after)  # what the refusal asks of the caller, the behaviour under test
        assert len(client.next_ids("q", 100_000)) == 100_000


def test_a_caller_over_its_calls_quota_is_refused_with_a_retry_after(quota_server):
    with new_caller(quota_server, "calls") as client:
        refused = quota_refusal(lambda: client.next_ids("q", 1), limit=200)
        # 50 calls per second: a call comes back within 1/50 s.
        assert 0 < refused.retry_after <= 1 / 50
        time.sleep(refused.retry_after)
        assert len(client.next_ids("q", 1)) == 1


def test_callers_with_different_tokens_have_separate_quotas(quota_server):
    with new_caller(quota_server, "greedy") as greedy, new_caller(quota_server, "modest") as modest:
        quota_refusal(lambda: greedy.next_ids("q", 100_000), limit=4)
        # The greedy caller is over quota for another 0.5 s at least; the other is served in full.
        assert len(modest.next_ids("q", 100_000)) == 100_000
        assert len(modest.next_ids("q", 100_000)) == 100_000
        with pytest.raises(QuotaExceeded):
            greedy.next_ids("q", 100_000)


def test_a_quota_refusal_is_resource_exhausted_with_quota_failure_and_retry_info_details(quota_server):
    server, url = quota_server
    token = create_token(url, "q", name="raw")
    wait_until_known(server.address, token)
    request = idgen_pb2.NextIdRequest(biz_type="q", count=100_000)
    with stub_to(server.address) as stub:
        with pytest.raises(grpc.RpcError) as raised:
            for _ in range(4):
                stub.NextId(request, timeout=10, metadata=(bearer(token),))
    error = raised.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(error)
    assert status is not None and status.code == code_pb2.RESOURCE_EXHAUSTED
    failures = [d for d in status.details if d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR)]
    retries = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(failures) == 1 and len(retries) == 1
    failure, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    failures[0].Unpack(failure)
    retries[0].Unpack(retry)
    assert failure.violations and failure.violations[0].description
    delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    assert 0 < delay <= 0.5


def test_an_exhausted_id_space_is_still_id_space_exhausted_on_a_server_with_quotas(quota_server):
    server, _ = quota_server
    with new_caller(quota_server, "top", "top") as client:
        with pytest.raises(IdSpaceExhausted, match="int64") as raised:
            for _ in range(10):  # 1,500 IDs are left: at most 4 of these calls can be served
                client.next_ids("top", 500)
    assert not isinstance(raised.value, QuotaExceeded)
    # On the wire: RESOURCE_EXHAUSTED without the quota's details.
    token = create_token(quota_server[1], "top", name="top-raw")
    wait_until_known(server.address, token)
    with stub_to(server.address) as stub, pytest.raises(grpc.RpcError) as wire:
        stub.NextId(idgen_pb2.NextIdRequest(biz_type="top", count=1), timeout=10,
                    metadata=(bearer(token),))
    assert wire.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(wire.value)
    assert status is None or not any(
        d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR) for d in status.details)


def test_without_tokens_the_quota_is_per_peer_host(tmp_path, start_server):
    """``localhost:0`` listens on 127.0.0.1 and ::1 (one port): two hosts, both loopback."""
    url = f"sqlite:///{tmp_path}/idgen.db"
    prepare([url], "q", step=10_000)
    server = start_server([url], listen="localhost:0", extra_args=QUOTA_ARGS)
    port = server.address.rpartition(":")[2]
    with RemoteClient(f"127.0.0.1:{port}", retries=0) as first, \
            RemoteClient(f"127.0.0.1:{port}", retries=0) as second, \
            RemoteClient(f"[::1]:{port}", retries=0) as other_host:
        for client in (first, second, other_host):
            client.next_ids("q", 1)  # connected before the quota runs out
        quota_refusal(lambda: first.next_ids("q", 100_000), limit=4)
        # Another connection from the same host shares its quota ...
        with pytest.raises(QuotaExceeded):
            second.next_ids("q", 100_000)
        # ... another host does not.
        assert len(other_host.next_ids("q", 100_000)) == 100_000


# --- 2. the NextId flood ----------------------------------------------------------------------

FLOOD_FACTOR, FLOOD_SLACK = 10, 0.020
"""The bound of the NextId flood: the median under it <= 10 x the quiet median + 20 ms.

The median, not the p99: what the defence changes is the typical call (92 ms without
quotas, 1-3 ms with them), while the p99 of 400 calls on a shared 2-core CI machine is
one scheduler stall (a CI run saw 73 ms with the defence working)."""
STEADY_CALLS = 400


@pytest.mark.slow
def test_a_flood_of_large_next_id_calls_from_one_token_leaves_another_callers_latency_within_bounds(
        tmp_path, start_server):
    """One client (token A) floods NextId(count=100000) from 15 threads, honouring each
    QuotaExceeded's retry_after (sleeping it, at most 1 s), while a steady caller (token B)
    makes NextId(count=1) calls of the same biz type. Default quotas (5,000,000 IDs per
    second per caller).

    Bound: the steady caller's median latency over 400 calls during the flood is at most
    10 x its median over 400 calls in a quiet phase of the same run, plus 20 ms (p99s are
    reported, not asserted: see FLOOD_FACTOR).

    The flood phase is measured once the server has first refused the flood: the burst a
    full bucket allows (one second's worth, so all 15 first calls at once) is spent, and
    the flood is held to its rate. Measured on the 2-core machine, shared with other test
    runs, p99: 12-19 ms under the flood (73 ms once), 1-6 ms quiet. Not asserted: that
    first burst stalls other callers once, for 90-150 ms; and without quotas the steady
    caller's p50 was 92 ms and p99 165 ms (such a flood is never refused, which fails
    this test first).
    """
    url = f"sqlite:///{tmp_path}/idgen.db"
    prepare([url], "flood", step=10_000)
    flooder = create_token(url, "flood", name="flooder")
    steady = create_token(url, "flood", name="steady")
    server = start_server([url])
    with RemoteClient(server.address, token=steady, retries=0) as client:
        steady_latencies(client, "flood", 50, 10)  # warm: channel, buffer, segments
        quiet = steady_latencies(client, "flood", STEADY_CALLS, 30)
        with Flood(server.address, mode="next_id", biz_type="flood", threads=15, calls=1000,
                   token=flooder) as flood:
            loud = steady_latencies(client, "flood", STEADY_CALLS, 60)
    seen = flood.result
    report = (f"steady median/p99 {p50(quiet) * 1000:.2f}/{p99(quiet) * 1000:.2f} ms quiet, "
              f"{p50(loud) * 1000:.2f}/{p99(loud) * 1000:.2f} ms under the flood ({len(loud)} "
              f"calls); flood: {seen['ok']} served, {seen['quota']} over quota")
    print(report)
    assert seen["errors"] == [] and seen["unavailable"] == 0, seen
    assert seen["quota"] > 0, "the flood went over its quota (else it was no flood): " + report
    assert 0 < float(seen["retry_after"]) <= 1.0  # type: ignore[arg-type]
    # Held to its quota: a full bucket (one second's worth) plus the rate over its lifetime.
    assert int(seen["ok"]) * 100_000 <= DEFAULT_QUOTA_IDS * (1 + float(seen["seconds"])), report  # type: ignore[call-overload,arg-type]
    assert len(quiet) == len(loud) == STEADY_CALLS, report
    assert p50(loud) <= FLOOD_FACTOR * p50(quiet) + FLOOD_SLACK, report


# --- 3. the above_all flood -------------------------------------------------------------------

ABOVE_ALL_SLACK = 0.050


@pytest.fixture
def proxied_dbs(make_mariadb) -> Iterator[ProxiedDatabases]:
    """Two MariaDB databases, each behind a proxy of its own."""
    dbs = ProxiedDatabases([make_mariadb() for _ in range(2)])
    yield dbs
    dbs.close()


@pytest.mark.mariadb
@pytest.mark.slow
def test_a_flood_of_above_all_calls_is_held_to_the_limit_and_next_id_keeps_its_latency(
        proxied_dbs, start_server):
    """20 threads call NextSegment(above_all=True) in a loop, without pause, beside a steady
    NextId(count=1) caller of the same biz type. Each above_all call reads both MariaDB
    databases, made slow (every chunk 20 ms late through their proxies: half a second a
    call), and the server has 16 RPC threads, fewer than the flood's: without the limit
    (default 2 at once) the flood would hold every one of them, and the steady caller
    would wait for one (measured: p50 1.1 s, p99 2.4 s with the limit raised to 16).
    Quotas are off, so that every call meets the limit, not a quota.

    Bound: the steady caller's median during the flood is at most 10 x its median in a
    quiet phase of the same run (the databases as slow), plus 50 ms; every one of its
    calls succeeds. (Measured on the 2-core machine, shared with other test runs, p99:
    7-33 ms under the flood, 1-4 ms quiet. The median, as for FLOOD_FACTOR.)
    """
    proxied_dbs.register("aa", step=100_000)  # the steady caller never waits for a segment
    server = start_server(proxied_dbs.proxied, extra_args=[
        "--quota-calls", "0", "--quota-ids", "0", "--workers", "16"])
    with RemoteClient(server.address, retries=0) as client:
        steady_latencies(client, "aa", 50, 10)
        for proxy in proxied_dbs.proxies:
            proxy.slow(0.020)
        quiet = steady_latencies(client, "aa", STEADY_CALLS, 30)
        with Flood(server.address, mode="above_all", biz_type="aa", threads=20, calls=300) as flood:
            loud = steady_latencies(client, "aa", STEADY_CALLS, 60)
    seen = flood.result
    report = (f"steady median/p99 {p50(quiet) * 1000:.2f}/{p99(quiet) * 1000:.2f} ms quiet, "
              f"{p50(loud) * 1000:.2f}/{p99(loud) * 1000:.2f} ms under the flood; above_all: "
              f"{seen['ok']} served, {seen['unavailable']} refused")
    print(report)
    assert seen["errors"] == [], seen
    assert seen["ok"] > 0, report
    assert seen["unavailable"] > 0, "more than the limit asked at once: some must be refused"
    messages = seen["unavailable_messages"]
    assert isinstance(messages, list)
    assert all("requests for IDs above every database 2 at a time, and that many are being served"
               in m for m in messages), messages
    assert len(quiet) == len(loud) == STEADY_CALLS, report  # every NextId call succeeded
    assert p50(loud) <= FLOOD_FACTOR * p50(quiet) + ABOVE_ALL_SLACK, report


# --- 4. nothing of the deployment reaches callers ---------------------------------------------

LABELS = ("primary", "secondary")


def deployment_details(dbs: ProxiedDatabases) -> list[str]:
    """What a caller must never read: drivers, the user, the databases' addresses and names."""
    names = [url.rpartition("/")[2] for url in dbs.urls]
    addresses = [f"127.0.0.1:{p.port}" for p in dbs.proxies] + [f":{MARIADB_PORT}"]
    return ["mysql", "pymysql", "root", "OperationalError", "Errno", *names, *addresses]


def caller_messages(address: str, calls: list[tuple[str, object]]) -> list[str]:
    """The message of each failed call, as the status the server sent and as the client's
    exception; each call must fail."""
    messages = []
    with stub_to(address) as stub, RemoteClient(address, retries=0) as client:
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as raised:
                getattr(stub, method)(request, timeout=20)
            messages.append(raised.value.details() or "")
            with pytest.raises(IdGenError) as error:
                if method == "NextId":
                    client.next_ids(request.biz_type, request.count)  # type: ignore[attr-defined]
                else:
                    client.next_segment(request.biz_type,  # type: ignore[attr-defined]
                                        above_all=request.above_all)  # type: ignore[attr-defined]
            messages.append(str(error.value))
    return messages


@pytest.mark.mariadb
@pytest.mark.parametrize("cut", ["one", "all"])
def test_callers_read_database_labels_never_urls_users_or_names_when_databases_are_cut(
        proxied_dbs, start_server, cut):
    proxied_dbs.register("a", step=200)
    server = start_server([], extra_args=[
        *db_args(f"{label}={url}" for label, url in zip(LABELS, proxied_dbs.proxied, strict=True)),
        "--db-timeout", "1"])
    cut_off = proxied_dbs.proxies[:1] if cut == "one" else proxied_dbs.proxies
    for proxy in cut_off:
        proxy.refuse()
    calls: list[tuple[str, object]] = [
        ("NextSegment", idgen_pb2.NextSegmentRequest(biz_type="a", above_all=True))]
    if cut == "all":  # with one left, these are served
        calls += [("NextId", idgen_pb2.NextIdRequest(biz_type="a", count=1)),
                  ("NextSegment", idgen_pb2.NextSegmentRequest(biz_type="a"))]
    messages = caller_messages(server.address, calls)
    forbidden = deployment_details(proxied_dbs)
    leaks = [(m, word) for m in messages for word in forbidden if word.lower() in m.lower()]
    assert leaks == []
    assert all("primary" in m for m in messages), messages
    # The operator's log does name them.
    cut_name = proxied_dbs.urls[0].rpartition("/")[2]
    wait_until(lambda: any(cut_name in line and "pymysql" in line for line in server.output), 10,
               "the server's log to name the cut database")


@pytest.mark.mariadb
def test_a_damaged_row_is_reported_to_callers_by_its_database_label(proxied_dbs, start_server):
    proxied_dbs.register("a", step=200)
    edit_row(proxied_dbs.stores[1], "a", "remainder = 0")  # both databases now hand out even IDs
    server = start_server([], extra_args=[
        *db_args(f"{label}={url}" for label, url in zip(LABELS, proxied_dbs.proxied, strict=True))])
    messages = caller_messages(server.address, [
        ("NextId", idgen_pb2.NextIdRequest(biz_type="a", count=1)),
        ("NextSegment", idgen_pb2.NextSegmentRequest(biz_type="a", above_all=True))])
    forbidden = deployment_details(proxied_dbs)
    assert [(m, w) for m in messages for w in forbidden if w.lower() in m.lower()] == []
    assert all("primary" in m and "secondary" in m for m in messages), messages
    names = [url.rpartition("/")[2] for url in proxied_dbs.urls]
    wait_until(lambda: any(all(n in line for n in names) for line in server.output), 10,
               "the server's log to name both databases in the refusal")


def listeners(port: int) -> list[str]:
    """The local addresses listening on TCP ``port`` (hex, as /proc/net/tcp{,6} has them)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                address, _, hex_port = fields[1].rpartition(":")
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    found.append(address)
    return found


LOOPBACK_HEX = "0100007F"
"""127.0.0.1 as /proc/net/tcp writes it."""


@pytest.mark.mariadb
@pytest.mark.parametrize("listen, labels", [
    ("0.0.0.0:0", ("db0", "db1")),  # with --insecure: the RPCs beyond loopback, metrics not
    ("127.0.0.1:0", LABELS),
])
def test_metrics_listen_on_loopback_only_and_name_databases_by_label(
        proxied_dbs, start_server, listen, labels):
    proxied_dbs.register("a", step=200)
    port = free_port()
    entries = [f"{label}={url}" if labels == LABELS else url
               for label, url in zip(labels, proxied_dbs.urls, strict=True)]
    server = start_server([], listen=listen, extra_args=[
        *db_args(entries), "--metrics-port", str(port),
        *(["--insecure"] if listen.startswith("0.0.0.0") else [])])
    with RemoteClient(f"127.0.0.1:{server.address.rpartition(':')[2]}") as client:
        client.next_ids("a", 10)
    assert listeners(port) == [LOOPBACK_HEX]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for label in labels:
        assert f'idgen_database_up{{db="{label}"}} 1.0' in text
    forbidden = deployment_details(proxied_dbs)
    assert [w for w in forbidden if w.lower() in text.lower()] == []
