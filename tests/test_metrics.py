"""The Prometheus endpoint: every family with its type and labels, counts that follow the
calls made, databases by label (never URL or password), ``/metrics`` only, and nothing
recorded when metrics are off.

In-process ``IdGenServer``s on real databases (SQLite; MariaDB behind a ``TcpProxy`` for a
database cut off), scraped over HTTP and parsed with prometheus_client's own parser.
Calls go through a raw stub, never a retrying client, so that every count is exact.
"""
from __future__ import annotations

import importlib.metadata
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from idgen_core.segment import INT64_MAX
from idgen_server.config import ServerConfig
from idgen_server.server import IdGenServer
from idgen_server.stats import CODES, RpcStats
from idgen_wire import idgen_pb2
from tests.support.proxy import behind_proxy
from tests.support.servers import stub_to
from tests.support.stores import edit_row, prepare
from tests.support.users import database_user
from tests.support.waiting import wait_until

SERVICE = "idgen.v1.IdGenerator"
RPC = ["grpc_type", "grpc_service", "grpc_method"]
FAMILIES = {
    # family name (as parsed: counters without _total) -> (type, labels of its samples)
    "grpc_server_started": ("counter", RPC),
    "grpc_server_handled": ("counter", [*RPC, "grpc_code"]),
    "grpc_server_handling_seconds": ("histogram", RPC),
    "idgen_allocation_seconds": ("histogram", ["db"]),
    "idgen_allocation_conflicts": ("counter", ["db"]),
    "idgen_segments_allocated": ("counter", ["db"]),
    "idgen_database_up": ("gauge", ["db"]),
    "idgen_range_used_ratio": ("gauge", ["biz_type", "db"]),
    "idgen_ids_issued": ("counter", ["biz_type"]),
    "idgen_ids_buffered": ("gauge", ["biz_type"]),
    "idgen_buffer_waits": ("counter", ["biz_type"]),
    "idgen_segment_fetches": ("counter", ["biz_type"]),
    "idgen_build_info": ("gauge", ["version"]),
}
STANDARD = ["process_cpu_seconds", "process_resident_memory_bytes", "python_info",
            "python_gc_objects_collected"]
"""Families of prometheus_client's process, platform and GC collectors."""


# -- helpers --------------------------------------------------------------------------

def fetch(server: IdGenServer, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://{server.metrics_address}{path}", timeout=10) as reply:
        assert reply.status == 200
        return reply.read().decode()  # type: ignore[no-any-return]


def scrape(server: IdGenServer) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(fetch(server))}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float | None:
    """The value of the one sample named ``sample`` with these labels (others ignored)."""
    family = sample.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
    found = [s.value for s in families[family].samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (sample, labels, found)
    return found[0] if found else None


@contextmanager
def serving(*db_urls: str, metrics: bool = True, **settings: Any) -> Iterator[IdGenServer]:
    config = ServerConfig(db_urls=db_urls, listen="127.0.0.1:0",
                          metrics_port=0 if metrics else None, **settings)
    with IdGenServer(config) as server:
        yield server


def next_id(stub: object, biz_type: str, count: int = 1) -> list[int]:
    reply = stub.NextId(idgen_pb2.NextIdRequest(biz_type=biz_type, count=count), timeout=10)  # type: ignore[attr-defined]
    return list(reply.ids)


def status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return,attr-defined]


@pytest.fixture
def order(sqlite_url: str) -> str:
    """A SQLite database where "order" is registered (step 1000)."""
    prepare([sqlite_url], "order", step=1000)
    return sqlite_url


# -- what is exposed ------------------------------------------------------------------

def test_every_family_is_exposed_with_its_type_and_labels(order):
    with serving(f"main={order}") as server, stub_to(server.address) as stub:
        next_id(stub, "order", 5)
        stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="order"), timeout=10)
        families = wait_until(lambda: (f := scrape(server))["idgen_range_used_ratio"].samples and f,
                              message="the watch thread's first read of the table")
    for name, (kind, labels) in FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no sample"
        for sample in family.samples:
            assert sorted(k for k in sample.labels if k != "le") == sorted(labels), sample
    for name in STANDARD:
        assert families[name].samples, name
    assert value(families, "idgen_database_up", db="main") == 1


def test_build_info_names_the_installed_version(order):
    with serving(order) as server:
        families = scrape(server)
    [sample] = families["idgen_build_info"].samples
    assert sample.labels == {"version": importlib.metadata.version("idgen")}
    assert sample.value == 1


def test_only_the_metrics_path_answers(order):
    with serving(order) as server:
        assert "idgen_build_info" in fetch(server, "/metrics")
        assert "idgen_build_info" in fetch(server, "/metrics?name[]=idgen_build_info")
        for path in ("/", "/other", "/metrics/", "/metricsx", "/favicon.ico"):
            with pytest.raises(urllib.error.HTTPError) as info:
                fetch(server, path)
            assert info.value.code == 404, path


# -- RPCs -----------------------------------------------------------------------------

def test_rpcs_are_counted_by_method_and_status_code(order):
    with serving(order) as server, stub_to(server.address) as stub:
        for _ in range(7):
            next_id(stub, "order")
        assert status_of(lambda: next_id(stub, "nope")) is grpc.StatusCode.NOT_FOUND
        assert status_of(lambda: next_id(stub, "order", 0)) is grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(2):
            stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="order"), timeout=10)
        families = scrape(server)

    def handled(method: str, code: str) -> float | None:
        return value(families, "grpc_server_handled_total", grpc_type="unary",
                     grpc_service=SERVICE, grpc_method=method, grpc_code=code)

    assert handled("NextId", "OK") == 7
    assert handled("NextId", "NOT_FOUND") == 1
    assert handled("NextId", "INVALID_ARGUMENT") == 1
    assert handled("NextSegment", "OK") == 2
    # Every code is there from the start, at 0: a rate over an error never starts from nothing.
    assert handled("NextSegment", "UNAVAILABLE") == 0
    ours = [sample for sample in families["grpc_server_handled"].samples
            if sample.labels["grpc_service"] == SERVICE]
    methods = idgen_pb2.DESCRIPTOR.services_by_name["IdGenerator"].methods  # NextId, ..., leases
    assert len(ours) == len(methods) * len(CODES)
    for method, calls in (("NextId", 9), ("NextSegment", 2)):
        labels = {"grpc_service": SERVICE, "grpc_method": method}
        assert value(families, "grpc_server_started_total", **labels) == calls
        assert value(families, "grpc_server_handling_seconds_count", **labels) == calls
        assert value(families, "grpc_server_handling_seconds_bucket", le="+Inf", **labels) == calls


def test_rpc_stats_count_every_call_of_every_thread_exactly():
    """Lock-free shards: 8 threads x 2,000 calls, each counted once, none lost."""

    class Context:
        def __init__(self, code: grpc.StatusCode | None) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode | None:
            return self._code

    def fails(request: object, context: object) -> None:
        raise RuntimeError("a bug in the servicer")

    stats = RpcStats()
    ok = stats.timed(lambda request, context: request, stats.register("s.S", "Ok"))
    buggy = stats.timed(fails, stats.register("s.S", "Buggy"))
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(2000):
            ok(1, Context(None))
        ok(1, Context(grpc.StatusCode.NOT_FOUND))
        with pytest.raises(RuntimeError):
            buggy(1, Context(None))

    threads = [threading.Thread(target=work, name=f"test-rpc-stats-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    late = stats.register("s.S", "Late")  # after the shards exist: they grow
    stats.timed(lambda request, context: request, late)(1, Context(None))
    figures = {m.method: m for m in stats.snapshot()}
    assert figures["Ok"].started == 8 * 2001
    assert figures["Ok"].handled[grpc.StatusCode.OK] == 8 * 2000
    assert figures["Ok"].handled[grpc.StatusCode.NOT_FOUND] == 8
    assert figures["Ok"].latency.count == 8 * 2001
    assert figures["Buggy"].handled[grpc.StatusCode.UNKNOWN] == 8
    assert figures["Late"].started == figures["Late"].handled[grpc.StatusCode.OK] == 1
    assert stats.register("s.S", "Ok") == 0  # registering again is the same slot


def test_without_metrics_no_call_is_recorded(order):
    with serving(order, metrics=False) as server, stub_to(server.address) as stub:
        assert next_id(stub, "order", 3)
        assert server.rpc_stats is None and server.metrics_address is None


# -- buffers, allocations and rows ----------------------------------------------------

def test_ids_issued_is_every_id_handed_out_and_buffered_what_is_left(order):
    with serving(order) as server, stub_to(server.address) as stub:
        handed_out = sum(len(next_id(stub, "order", count)) for count in (1, 5, 100, 1, 250))
        families = scrape(server)
    issued = value(families, "idgen_ids_issued_total", biz_type="order")
    assert issued == handed_out == 357
    # One buffer state per scrape: what was fetched (segments of 1000) is issued or buffered.
    fetches = value(families, "idgen_segment_fetches_total", biz_type="order")
    assert value(families, "idgen_ids_buffered", biz_type="order") == 1000 * fetches - issued > 0


def test_ids_handed_out_in_whole_segments_are_counted_apart_from_next_id(order):
    with serving(order) as server, stub_to(server.address) as stub:
        replies = [stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="order", steps=steps),
                                    timeout=10) for steps in (1, 3)]
        with pytest.raises(grpc.RpcError):  # an unknown name is counted nowhere
            stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="nosuch"), timeout=10)
        families = scrape(server)
    in_segments = sum(len(range(r.start, r.end + 1, r.delta)) for r in replies)
    assert value(families, "idgen_segment_ids_served_total", biz_type="order") == in_segments
    assert in_segments == 1000 * 4  # the order biz type's step is 1000
    assert not [s for f in families.values() for s in f.samples if s.labels.get("biz_type") == "nosuch"]


def test_allocations_are_counted_and_timed_per_database(tmp_path):
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    prepare(urls, "order", step=10)
    with serving(f"east={urls[0]}", f"west={urls[1]}") as server, stub_to(server.address) as stub:
        for _ in range(6):
            stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="order"), timeout=10)
        families = scrape(server)
        stores = {label: store for label, store in zip(server.allocator.labels,
                                                       server.allocator.stores, strict=True)}
    assert set(stores) == {"east", "west"}
    for label, store in stores.items():
        assert value(families, "idgen_segments_allocated_total", db=label) == store.allocations > 0
        assert value(families, "idgen_allocation_seconds_count", db=label) == store.allocations
        assert value(families, "idgen_allocation_conflicts_total", db=label) == 0
    assert sum(s.allocations for s in stores.values()) == 6


def test_range_used_ratio_is_max_id_over_the_int64_range(order):
    with serving(order) as server, stub_to(server.address) as stub:
        next_id(stub, "order")
        edit_row(order, "order", f"max_id = {2**62}")  # half the range, by hand

        def ratio() -> float | None:
            return value(scrape(server), "idgen_range_used_ratio", biz_type="order", db="db0")

        assert wait_until(lambda: (r := ratio()) is not None and r >= 0.5 and r,
                          message="the ratio to follow the row") == pytest.approx(2**62 / INT64_MAX)


def test_biz_types_are_only_those_the_server_serves(order):
    with serving(order) as server, stub_to(server.address) as stub:
        next_id(stub, "order")
        for name in ("nope", "nothing-here"):
            assert status_of(lambda n=name: next_id(stub, n)) is grpc.StatusCode.NOT_FOUND
        text = fetch(server)
    assert "nope" not in text and "nothing-here" not in text
    assert 'idgen_ids_issued_total{biz_type="order"} 1.0' in text


# -- a database cut off, and what must never show ------------------------------------

@pytest.mark.mariadb
def test_a_cut_database_is_down_then_up_and_no_scrape_names_it(mariadb_server):
    with database_user(mariadb_server) as user:
        url = make_url(user.url).set(password=user.password).render_as_string(hide_password=False)
        prepare([url], "order", step=1000)
        proxy, via_proxy = behind_proxy(url)
        try:
            with serving(f"primary={via_proxy}", db_timeout=1.0) as server, \
                    stub_to(server.address) as stub:
                next_id(stub, "order")

                def up() -> float | None:
                    return value(scrape(server), "idgen_database_up", db="primary")

                texts = [fetch(server)]
                assert up() == 1
                proxy.refuse()
                wait_until(lambda: up() == 0, message="idgen_database_up 0 with the database cut")
                texts.append(fetch(server))
                proxy.restore()
                wait_until(lambda: up() == 1, message="idgen_database_up 1 once it is back")
                texts.append(fetch(server))
        finally:
            proxy.close()
    forbidden = [*user.forms(), make_url(user.url).username, user.database, proxy.address, "mysql"]
    for text in texts:
        assert 'idgen_database_up{db="primary"}' in text
        assert [word for word in forbidden if word.lower() in text.lower()] == []
