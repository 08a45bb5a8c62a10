"""Bad input on the wire: every field of every RPC, metadata, raw bytes, half-open connections.

One real server (on MariaDB, where SQL metacharacters would matter) takes the
fuzzing while a bystander thread keeps calling it: each bad request gets the
precise status and a message that leaks nothing, and the bystander never fails.
"""
from __future__ import annotations

import random
import socket

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idgen_core.errors import InvalidRequest, safe_repr
from idgen_core.segment import MAX_BIZ_TYPE_LENGTH, MAX_COUNT, validate_biz_type
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from tests.support.servers import ServerProcess
from tests.support.stores import prepare
from tests.support.threads import Background
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

REGISTERED = "fuzz"
STEP = 1_000_000
INT64_MIN, INT64_MAX, UINT32_MAX = -(2**63), 2**63 - 1, 2**32 - 1
LEAKS = ("Traceback", 'File "', "SELECT", "UPDATE", "INSERT", "idgen_segment", "sqlalchemy",
         "pymysql", "Exception deserializing", "[SQL")
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Served:
    """A server on MariaDB with one registered biz type, and a bystander calling it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = idgen_pb2_grpc.IdGeneratorStub(self.channel)
        self.stub.NextId(idgen_pb2.NextIdRequest(biz_type=REGISTERED, count=1), timeout=10)
        # Five IDs every 10 ms, on a channel of its own, up to a million IDs.
        self._bystander_channel = grpc.insecure_channel(self.server.address)
        bystander_stub = idgen_pb2_grpc.IdGeneratorStub(self._bystander_channel)
        self.bystander = Background(
            lambda: bystander_stub.NextId(idgen_pb2.NextIdRequest(biz_type=REGISTERED, count=5),
                                          timeout=10).ids,
            catch=grpc.RpcError, pause=0.01, max_calls=1_000_000 // 5, name="bystander")

    def raw(self, method: str) -> grpc.UnaryUnaryMultiCallable:
        """A call that sends bytes as they are: the wire may carry what protobuf would not build."""
        return self.channel.unary_unary(f"/idgen.v1.IdGenerator/{method}",
                                        request_serializer=None, response_deserializer=None)

    def close(self) -> None:
        self.bystander.stop(30)
        self._bystander_channel.close()
        self.channel.close()


@pytest.fixture(scope="module")
def served(mariadb_server, tmp_path_factory):
    # One server for the whole module (start_server is per test), so the bystander
    # sees every bad request of every test.
    url = mariadb_server.create()
    prepare([url], REGISTERED, step=STEP)
    process = ServerProcess([url], cwd=str(tmp_path_factory.mktemp("fuzz"))).start()
    s = Served(process)
    yield s
    s.close()
    process.stop()
    assert s.bystander.errors == [], "bad input from others never fails a good caller"
    ids = s.bystander.ids()
    assert len(ids) == len(set(ids)) > 0


def outcome(call, request, echo: str = ""):
    """The status and message of a call; checks that the message leaks nothing.

    ``echo`` is the caller's own input, which a message may quote back.
    """
    try:
        call(request, timeout=30)
    except grpc.RpcError as exc:
        details = exc.details() or ""
        own = details
        if echo:  # quoted back as repr, or as safe_repr where it looks like a URL
            for quoted in (repr(echo[:MAX_BIZ_TYPE_LENGTH]), safe_repr(echo)):
                own = own.replace(quoted, "")
        for leak in LEAKS:
            assert leak not in own, f"{leak!r} leaked into {details!r}"
        assert details.strip(), "every error carries a message"
        return exc.code(), details
    return grpc.StatusCode.OK, ""


def biz_type_verdict(biz_type: str) -> grpc.StatusCode:
    try:
        validate_biz_type(biz_type)
    except InvalidRequest:
        return grpc.StatusCode.INVALID_ARGUMENT
    # Names compare byte for byte on every database (binary collation on MariaDB).
    return grpc.StatusCode.OK if biz_type == REGISTERED else grpc.StatusCode.NOT_FOUND


nasty_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),  # control characters
    st.sampled_from(["", " ", REGISTERED, REGISTERED.upper(), f"{REGISTERED} ", f"{REGISTERED}\x00",
                     "'; DROP TABLE idgen_segment; --", "\" OR 1=1 --", "a%", "a_", "\\", "`x`",
                     "a" * MAX_BIZ_TYPE_LENGTH, "a" * (MAX_BIZ_TYPE_LENGTH + 1), "unknown-biz",
                     "ﬁ", "\u202e", "x\ny", "%s", "{0}", "a\u0000b"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,70}", fullmatch=True),
)
uint32s = st.one_of(st.sampled_from([0, 1, MAX_COUNT, MAX_COUNT + 1, UINT32_MAX]),
                    st.integers(0, UINT32_MAX))
int64s = st.one_of(st.sampled_from([INT64_MIN, -1, 0, 1, INT64_MAX]), st.integers(INT64_MIN, INT64_MAX))


@FUZZ
@given(biz_type=nasty_text, count=uint32s)
def test_next_id_answers_every_request_with_the_precise_status(served, biz_type, count):
    code, details = outcome(served.stub.NextId, idgen_pb2.NextIdRequest(biz_type=biz_type, count=count),
                            biz_type)
    if not 1 <= count <= MAX_COUNT:
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "count" in details
    else:
        assert code is biz_type_verdict(biz_type)
        if code is not grpc.StatusCode.OK:
            assert "biz type" in details


@FUZZ
@given(biz_type=nasty_text, floor=int64s, steps=uint32s, above_all=st.booleans())
def test_next_segment_answers_every_request_with_the_precise_status(served, biz_type, floor, steps,
                                                                   above_all):
    fields = {"biz_type": biz_type, "floor": floor}
    known = {f.name for f in idgen_pb2.NextSegmentRequest.DESCRIPTOR.fields}
    if "steps" in known:
        fields["steps"] = steps
    if "above_all" in known:
        fields["above_all"] = above_all
    code, details = outcome(served.stub.NextSegment, idgen_pb2.NextSegmentRequest(**fields), biz_type)
    verdict = biz_type_verdict(biz_type)
    if verdict is grpc.StatusCode.INVALID_ARGUMENT:
        assert code is verdict and "biz type" in details
    elif floor < 0:
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "floor" in details
    elif "steps" in fields and steps > 1024:
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "step" in details
    elif verdict is grpc.StatusCode.NOT_FOUND:
        assert code is grpc.StatusCode.NOT_FOUND and "add-biz" in details
    elif floor > 2**40:  # far above anything allocated here: a floor must be earned
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "floor" in details
    else:
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), details


def lease_verdict(biz_type: str, name: str, holder: str, ttl_ms: int | None, epoch: int
                  ) -> tuple[grpc.StatusCode, str]:
    """The status a lease request must get, and a word its message must hold."""
    if biz_type_verdict(biz_type) is grpc.StatusCode.INVALID_ARGUMENT:
        return grpc.StatusCode.INVALID_ARGUMENT, "biz type"
    for what, value in (("lease name", name), ("lease holder", holder)):
        try:
            validate_biz_type(value)  # the same rules
        except InvalidRequest:
            return grpc.StatusCode.INVALID_ARGUMENT, what
    if ttl_ms is not None and not 200 <= ttl_ms <= 600_000:
        return grpc.StatusCode.INVALID_ARGUMENT, "ttl"
    if epoch < 0:
        return grpc.StatusCode.INVALID_ARGUMENT, "epoch"
    if biz_type_verdict(biz_type) is grpc.StatusCode.NOT_FOUND:
        return grpc.StatusCode.NOT_FOUND, "add-biz"
    return grpc.StatusCode.OK, ""


@FUZZ
@given(biz_type=nasty_text, name=nasty_text, holder=nasty_text, ttl_ms=uint32s, epoch=int64s)
def test_acquire_lease_answers_every_request_with_the_precise_status(served, biz_type, name,
                                                                   holder, ttl_ms, epoch):
    request = idgen_pb2.AcquireLeaseRequest(biz_type=biz_type, name=name, holder=holder,
                                            ttl_ms=ttl_ms, epoch=epoch)
    code, details = outcome(served.stub.AcquireLease, request, biz_type)
    expected, word = lease_verdict(biz_type, name, holder, ttl_ms, epoch)
    assert code is expected, details
    assert word in details


@FUZZ
@given(biz_type=nasty_text, name=nasty_text, holder=nasty_text, epoch=int64s)
def test_release_lease_answers_every_request_with_the_precise_status(served, biz_type, name,
                                                                   holder, epoch):
    request = idgen_pb2.ReleaseLeaseRequest(biz_type=biz_type, name=name, holder=holder,
                                            epoch=epoch)
    code, details = outcome(served.stub.ReleaseLease, request, biz_type)
    expected, word = lease_verdict(biz_type, name, holder, None, epoch)
    if expected is grpc.StatusCode.NOT_FOUND:
        expected, word = grpc.StatusCode.OK, ""  # nothing of it to free anywhere
    assert code is expected, details
    assert word in details


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    """One protobuf field, encoded by hand (tags < 16, lengths < 2^21)."""
    key = bytes([number << 3 | wire_type])
    if wire_type == 2:
        n, length = len(payload), b""
        while True:
            byte, n = n & 0x7F, n >> 7
            length += bytes([byte | (0x80 if n else 0)])
            if not n:
                break
        return key + length + payload
    return key + payload


@FUZZ
@given(method=st.sampled_from(["NextId", "NextSegment", "AcquireLease", "ReleaseLease"]),
       name=st.binary(min_size=1, max_size=40).filter(lambda b: not _utf8(b)))
def test_invalid_utf8_in_a_string_field_is_invalid_argument_not_internal(served, method, name):
    code, details = outcome(served.raw(method), field(1, 2, name) + field(2, 0, b"\x01"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, details
    assert "UTF-8" in details and "biz_type" in details


@FUZZ
@given(method=st.sampled_from(["NextId", "NextSegment", "AcquireLease", "ReleaseLease"]),
       data=st.binary(max_size=200))
def test_arbitrary_bytes_as_a_request_get_a_status_never_internal(served, method, data):
    code, details = outcome(served.raw(method), data)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.NOT_FOUND), (code, details)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("size", [1 << 20, 3 << 20])
def test_megabytes_of_biz_type_are_invalid_argument_with_a_short_message(served, size):
    code, details = outcome(served.stub.NextId, idgen_pb2.NextIdRequest(biz_type="a" * size, count=1))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and f"{size} characters" in details
    assert len(details) < 500, "the message does not echo the megabytes back"


def test_a_request_above_grpcs_size_limit_is_resource_exhausted(served):
    code, details = outcome(served.stub.NextId,
                            idgen_pb2.NextIdRequest(biz_type="a" * (5 << 20), count=1))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details


@FUZZ
@given(metadata=st.lists(st.tuples(
    st.from_regex(r"x-[a-z0-9_.-]{0,30}", fullmatch=True),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=2000)),
    max_size=5),
    binary=st.lists(st.binary(max_size=2000), max_size=3))
def test_metadata_is_ignored_whatever_it_holds(served, metadata, binary):
    md = metadata + [(f"x-blob{i}-bin", b) for i, b in enumerate(binary)]
    request = idgen_pb2.NextIdRequest(biz_type=REGISTERED, count=1)
    reply = served.stub.NextId(request, metadata=md, timeout=10)
    assert len(reply.ids) == 1


def test_metadata_above_the_header_limit_is_refused_and_the_server_keeps_serving(served):
    request = idgen_pb2.NextIdRequest(biz_type=REGISTERED, count=1)
    with pytest.raises(grpc.RpcError) as info:
        served.stub.NextId(request, metadata=[("x-huge", "a" * (1 << 20))], timeout=10)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.stub.NextId(request, timeout=10).ids


def test_unknown_method_is_unimplemented(served):
    code, _ = outcome(served.raw("DropEverything"), b"")
    assert code is grpc.StatusCode.UNIMPLEMENTED


# -- raw TCP on the gRPC port ---------------------------------------------------------

def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_garbage_bytes_and_half_open_connections_do_not_stop_the_server(served):
    rng = random.Random(4)
    target = _host_port(served.server.address)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))) for _ in range(30)]
    payloads += [preface, preface + b"\x00" * 9, preface + bytes(range(256)) * 8,
                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]
    for payload in payloads:
        with socket.create_connection(target, timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass  # reset by the server: fine
    # Half-open: connections that say nothing, or half a preface, and stay open.
    idle = [socket.create_connection(target, timeout=5) for _ in range(50)]
    try:
        for sock in idle[:25]:
            sock.sendall(preface[:10])
        request = idgen_pb2.NextIdRequest(biz_type=REGISTERED, count=10)
        for _ in range(20):
            assert len(served.stub.NextId(request, timeout=10).ids) == 10
    finally:
        for sock in idle:
            sock.close()
    assert served.server.proc.poll() is None, "the server is still running"
    wait_until(lambda: len(served.bystander.ids()) >= 10, 10, "the bystander's calls",
               interval=0.05)
