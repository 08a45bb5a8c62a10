"""What load balancers, probes and generic gRPC tools see: the health service, draining on
SIGTERM, ``idgen health``, server reflection and ``idgen proto``."""
from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from idgen_client import RemoteClient
from idgen_server.config import ServerConfig
from idgen_server.server import IdGenServer
from tests.support.cli import add_biz, init_db
from tests.support.proxy import behind_proxy
from tests.support.waiting import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _check(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status  # type: ignore[no-any-return]


class _Watcher:
    """A ``Health/Watch`` stream read in a thread: every status it hears, in order."""

    def __init__(self, address: str, service: str = "") -> None:
        self._channel = grpc.insecure_channel(address)
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=120)
        self.heard: queue.Queue[tuple[int, float]] = queue.Queue()
        self.history: list[int] = []
        self._thread = threading.Thread(target=self._read, name="test-health-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for reply in self._stream:
                self.heard.put((reply.status, time.monotonic()))
        except grpc.RpcError:
            pass

    def wait_for(self, status: int, timeout: float = 20.0) -> float:
        """When ``status`` was heard (monotonic time); AssertionError if it was not in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                heard, when = self.heard.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"heard {self.history}, never {status}") from None
            self.history.append(heard)
            if heard == status:
                return when

    def close(self) -> None:
        self._stream.cancel()
        self._channel.close()
        self._thread.join(5)


@contextmanager
def watching(address: str, service: str = "") -> Iterator[_Watcher]:
    watcher = _Watcher(address, service)
    try:
        yield watcher
    finally:
        watcher.close()


@contextmanager
def serving(*db_urls: str, **settings: object) -> Iterator[IdGenServer]:
    config = ServerConfig(db_urls=db_urls, listen="127.0.0.1:0", **settings)  # type: ignore[arg-type]
    with IdGenServer(config) as server:
        yield server


def test_the_server_and_each_of_its_services_report_serving(sqlite_url):
    init_db(sqlite_url)
    with serving(sqlite_url) as server:
        for service in ("", "idgen.v1.IdGenerator", "idgen.v1.Admin"):
            assert _check(server.address, service) == SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            _check(server.address, "no.such.Service")
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.mariadb
def test_every_database_down_with_nothing_buffered_is_not_serving_until_one_returns(make_mariadb):
    url = make_mariadb()
    init_db(url)
    proxy, via_proxy = behind_proxy(url)
    try:
        with serving(via_proxy, db_timeout=1.0) as server, watching(server.address) as watcher:
            watcher.wait_for(SERVING)
            proxy.refuse()
            watcher.wait_for(NOT_SERVING)
            assert _check(server.address, "idgen.v1.IdGenerator") == NOT_SERVING
            proxy.restore()
            watcher.wait_for(SERVING)
            assert _check(server.address, "idgen.v1.IdGenerator") == SERVING
    finally:
        proxy.close()


@pytest.mark.mariadb
def test_a_server_started_with_every_database_down_is_not_serving_from_its_first_answer(
        make_mariadb):
    url = make_mariadb()
    init_db(url)
    proxy, via_proxy = behind_proxy(url)
    try:
        proxy.refuse()
        # db_timeout 3 s: a server that found out only from its watch thread's first ping
        # would answer SERVING for its first seconds.
        with serving(via_proxy, db_timeout=3.0) as server:
            assert server.unreachable == [server.allocator.stores[0].name]
            assert _check(server.address) == NOT_SERVING
            assert _check(server.address, "idgen.v1.IdGenerator") == NOT_SERVING
            assert _check(server.address, "liveness") == SERVING  # alive: not to be restarted
            proxy.restore()
            wait_until(lambda: _check(server.address) == SERVING, 20, "SERVING once it answers")
    finally:
        proxy.close()


@pytest.mark.mariadb
def test_ids_still_buffered_keep_the_server_serving_while_its_databases_are_down(make_mariadb):
    url = make_mariadb()
    init_db(url)
    add_biz("order", url, step=100_000)
    proxy, via_proxy = behind_proxy(url)
    try:
        with serving(via_proxy, db_timeout=1.0) as server:
            with RemoteClient(server.address) as client:
                client.next_ids("order", 10)
            proxy.refuse()
            wait_until(lambda: not any(server.allocator.healthy()), 20, "the database benched")
            assert server.buffers.holding()
            answers = set()
            until = time.monotonic() + 1.5  # three health intervals: a wrong answer would show
            while time.monotonic() < until:
                answers.add(_check(server.address))
            assert answers == {SERVING}
            with RemoteClient(server.address) as client:
                assert len(client.next_ids("order", 10)) == 10  # and it is true
    finally:
        proxy.close()


def test_sigterm_turns_not_serving_first_and_serves_calls_until_the_drain_ends(start_server):
    server = start_server([], extra_args=["--drain", "3"])
    with watching(server.address, "idgen.v1.IdGenerator") as watcher, \
            RemoteClient(server.address, retries=0) as client:
        watcher.wait_for(SERVING)
        client.next_ids("default", 1)
        assert server.proc is not None
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        left = watcher.wait_for(NOT_SERVING, timeout=10)
        served_after = 0
        while time.monotonic() - left < 1.5:  # well inside the 3 s drain
            client.next_ids("default", 1)
            served_after += 1
        assert served_after > 0
        assert server.proc.wait(20) == 0
        assert time.monotonic() - sent >= 3.0
    assert "idgen: draining for 3s" in "".join(server.output)


def test_idgen_health_exits_0_when_serving_and_1_when_draining_or_unreachable(start_server):
    server = start_server([], extra_args=["--drain", "30"])
    probe = [sys.executable, "-m", "idgen_cli", "health", "--target", server.address]
    ok = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "SERVING" in ok.stdout
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: _check(server.address) == NOT_SERVING, 10, "NOT_SERVING")
    draining = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert draining.returncode == 1
    assert "NOT_SERVING" in draining.stdout
    server.proc.send_signal(signal.SIGTERM)  # a second signal ends the drain at once
    assert server.proc.wait(20) == 0
    gone = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1
    assert "not serving" in gone.stdout and "Traceback" not in gone.stderr


def test_a_client_without_generated_code_finds_and_calls_next_id_by_reflection(sqlite_url):
    init_db(sqlite_url)
    add_biz("order", sqlite_url)
    with serving(sqlite_url) as server, grpc.insecure_channel(server.address) as channel:
        # Everything below is learned from the server: no idgen module is used.
        found = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = next(iter(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)))
        names = {s.name for s in listing.list_services_response.service}
        assert {"idgen.v1.IdGenerator", "idgen.v1.Admin", "grpc.health.v1.Health"} <= names
        method = found.FindServiceByName("idgen.v1.IdGenerator").methods_by_name["NextId"]
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary("/idgen.v1.IdGenerator/NextId",
                                   request_serializer=request_class.SerializeToString,
                                   response_deserializer=reply_class.FromString)
        reply = call(json_format.Parse('{"biz_type": "order", "count": 3}', request_class()),
                     timeout=5)
        ids = [int(i) for i in json.loads(json_format.MessageToJson(reply))["ids"]]
        assert len(ids) == 3 and ids == sorted(set(ids))


def test_no_reflection_turns_reflection_off(sqlite_url):
    init_db(sqlite_url)
    with serving(sqlite_url, reflection=False) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as off:
            next(iter(stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)))
        assert off.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert _check(server.address) == SERVING  # health stays on


def test_idgen_proto_prints_the_contract_the_package_ships():
    printed = subprocess.run([sys.executable, "-m", "idgen_cli", "proto"], capture_output=True,
                             text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    shipped = (resources.files("idgen_wire") / "idgen.proto").read_text(encoding="utf-8")
    assert printed.stdout == shipped
    assert "service IdGenerator" in shipped and "service Admin" in shipped
