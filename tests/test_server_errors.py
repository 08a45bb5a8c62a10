"""Every error status, from a real server process, with a message a person can act on."""
from __future__ import annotations

import grpc
import pytest

from idgen_client import (
    IdSpaceExhausted,
    InvalidRequest,
    LocalGenerator,
    RemoteClient,
    UnknownBizType,
)
from idgen_core.errors import StorageUnavailable
from idgen_core.segment import MAX_COUNT
from idgen_wire import idgen_pb2
from tests.support.proxy import behind_proxy
from tests.support.servers import stub_to
from tests.support.stores import edit_row, prepare, registered


@pytest.fixture
def order(sqlite_url):
    """A SQLite database where "order" is registered, step 1000, and a store on it."""
    [store] = registered([sqlite_url], "order", step=1000)
    yield store
    store.close()


@pytest.fixture
def server(order, sqlite_url, start_server):
    return start_server([sqlite_url])


@pytest.fixture
def stub(server):
    with stub_to(server.address) as stub:
        yield stub


def status_of(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), info.value.details()


@pytest.mark.parametrize("count", [0, MAX_COUNT + 1, 2**32 - 1])
def test_count_out_of_range_is_invalid_argument(stub, count):
    code, details = status_of(stub.NextId, idgen_pb2.NextIdRequest(biz_type="order", count=count))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert f"between 1 and {MAX_COUNT}" in details and str(count) in details


@pytest.mark.parametrize("biz_type", ["", "a b", "x" * 65, "'; DROP TABLE idgen_segment; --"])
def test_malformed_biz_type_is_invalid_argument(stub, biz_type):
    code, details = status_of(stub.NextId, idgen_pb2.NextIdRequest(biz_type=biz_type, count=1))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "biz type" in details


def test_unknown_biz_type_is_not_found_and_says_how_to_add_it(stub):
    for call, request in ((stub.NextId, idgen_pb2.NextIdRequest(biz_type="nope", count=1)),
                          (stub.NextSegment, idgen_pb2.NextSegmentRequest(biz_type="nope"))):
        code, details = status_of(call, request)
        assert code is grpc.StatusCode.NOT_FOUND and "idgen add-biz nope" in details


def test_negative_or_unearned_floor_is_invalid_argument(stub):
    code, _ = status_of(stub.NextSegment, idgen_pb2.NextSegmentRequest(biz_type="order", floor=-1))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    code, details = status_of(stub.NextSegment,
                              idgen_pb2.NextSegmentRequest(biz_type="order", floor=2**62))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "above every ID" in details


def test_int64_used_up_is_resource_exhausted_never_a_wrap(stub, order):
    edit_row(order, "order", f"max_id = {2**63 - 1 - 1500}")
    ids = []
    with pytest.raises(grpc.RpcError) as info:
        while True:
            ids += stub.NextId(idgen_pb2.NextIdRequest(biz_type="order", count=500), timeout=10).ids
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "int64" in info.value.details()
    assert ids == sorted(set(ids)) and ids[-1] == 2**63 - 1 and len(ids) == 1500


@pytest.mark.mariadb
def test_no_database_and_nothing_buffered_is_unavailable(mariadb_url, start_server):
    prepare([mariadb_url], "order", step=10)
    proxy, via_proxy = behind_proxy(mariadb_url)
    try:
        server = start_server([via_proxy])
        proxy.refuse()
        with stub_to(server.address) as stub:
            code, details = status_of(stub.NextId,
                                      idgen_pb2.NextIdRequest(biz_type="order", count=1))
    finally:
        proxy.close()
    assert code is grpc.StatusCode.UNAVAILABLE and "retry" in details
    assert "SELECT" not in details and "Traceback" not in details


def test_client_raises_the_servers_errors_as_the_same_exceptions(server):
    with RemoteClient(server.address) as client:
        with pytest.raises(UnknownBizType):
            client.next_ids("nope", 1)
        with pytest.raises(InvalidRequest):
            client.next_ids("order", 0)
        with pytest.raises(InvalidRequest):
            client.next_segment("order", floor=2**62)
    with LocalGenerator("nope", server.address) as generator:
        with pytest.raises(UnknownBizType):
            generator.next_id()


def test_client_reports_unreachable_servers_after_retries():
    with RemoteClient(["127.0.0.1:1", "127.0.0.1:2"], retries=2, timeout=1) as client:
        with pytest.raises(StorageUnavailable.__mro__[1], match="no ID server answered"):
            client.next_ids("order", 1)


def test_exhaustion_reaches_local_generators_too(order, start_server, sqlite_url):
    edit_row(order, "order", f"max_id = {2**63 - 1 - 10}")
    server = start_server([sqlite_url])
    with LocalGenerator("order", server.address) as generator:
        ids = generator.next_ids(10)
        assert ids[-1] == 2**63 - 1
        with pytest.raises(IdSpaceExhausted):
            generator.next_id()


@pytest.mark.parametrize("count", [-1, 0, MAX_COUNT + 1, 2**32, 2**64, 1.5, "10", True, None])
def test_the_client_refuses_a_count_out_of_range_as_invalid_request(server, count):
    with RemoteClient(server.address) as client:
        with pytest.raises(InvalidRequest, match="count must be"):
            client.next_ids("order", count)


@pytest.mark.parametrize("arguments, message", [
    ({"steps": 0}, "steps must be"), ({"steps": -1}, "steps must be"),
    ({"steps": 1025}, "steps must be"), ({"steps": 2**32}, "steps must be"),
    ({"floor": -1}, "floor must be"), ({"floor": 2**63}, "floor must be"),
    ({"floor": 1.0}, "floor must be"),
])
def test_the_client_refuses_steps_or_floor_out_of_range_as_invalid_request(
        server, arguments, message):
    with RemoteClient(server.address) as client:
        with pytest.raises(InvalidRequest, match=message):
            client.next_segment("order", **arguments)
