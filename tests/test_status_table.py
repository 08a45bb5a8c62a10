"""The table between idgen's errors, gRPC status codes and HTTP statuses, in this process."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from idgen_core.errors import (
    BizTypeMisconfigured,
    BizTypeMoving,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    PermissionDenied,
    QuotaExceeded,
    ServiceUnavailable,
    StorageUnavailable,
    Unauthenticated,
    UnknownBizType,
)
from idgen_client.calls import client_settings, no_answer
from idgen_wire.status import code_for, error_for, error_from, http_status_for, status_for

TABLE = [
    (BizTypeMoving, grpc.StatusCode.UNAVAILABLE, 503),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (UnknownBizType, grpc.StatusCode.NOT_FOUND, 404),
    (BizTypeMisconfigured, grpc.StatusCode.FAILED_PRECONDITION, 400),
    (ServiceUnavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (IdSpaceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
]


class _Failed(grpc.RpcError):
    """A failed call as the client sees it: its code, details and trailers."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(self._status.trailing_metadata or ())


@pytest.mark.parametrize(("error", "code", "http"), TABLE)
def test_each_error_crosses_the_wire_as_itself(error, code, http):
    status = status_for(error("what happened"), "what happened")
    assert status.code is code is code_for(error("x"))
    assert http_status_for(code) == http
    back = error_from(_Failed(status))
    assert type(back) is error and str(back) == "what happened"


def test_a_quota_refusal_keeps_its_wait_and_is_told_from_exhaustion():
    status = status_for(QuotaExceeded("slow down", 2.5), "slow down")
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    back = error_from(_Failed(status))
    assert isinstance(back, QuotaExceeded) and back.retry_after == pytest.approx(2.5)
    exhausted = error_from(_Failed(status_for(IdSpaceExhausted("used up"), "used up")))
    assert type(exhausted) is IdSpaceExhausted
    assert rpc_status.from_call(_Failed(status)) is not None  # the details travel in the trailers


def test_a_pause_is_told_from_an_outage_and_from_damage_by_its_details():
    status = status_for(BizTypeMoving("being moved"), "being moved")
    assert status.code is grpc.StatusCode.UNAVAILABLE  # retried, never FAILED_PRECONDITION
    assert type(error_from(_Failed(status))) is BizTypeMoving
    bare = grpc.Status()
    bare.code, bare.details, bare.trailing_metadata = grpc.StatusCode.UNAVAILABLE, "down", ()
    assert type(error_from(_Failed(bare))) is ServiceUnavailable  # no details: an outage
    outage = status_for(StorageUnavailable("db down"), "db down")
    assert type(error_from(_Failed(outage))) is ServiceUnavailable
    # Another domain's reason is not idgen's pause.
    foreign = status_for(BizTypeMoving("x"), "x")
    trailers = tuple((k, v.replace(b"idgen", b"other")) if k == "grpc-status-details-bin" else (k, v)
                     for k, v in foreign.trailing_metadata)
    other = grpc.Status()
    other.code, other.details, other.trailing_metadata = foreign.code, foreign.details, trailers
    assert type(error_from(_Failed(other))) is ServiceUnavailable


def test_a_call_that_met_a_pause_and_then_timed_out_is_told_of_the_pause():
    settings = client_settings("127.0.0.1:1", timeout=1, retries=2, backoff=0.01, max_backoff=0.01,
                               token=None, ca_file=None, cert_file=None, key_file=None, tls=None,
                               tls_server_name=None, env={})
    timed_out = grpc.Status()
    timed_out.code, timed_out.details, timed_out.trailing_metadata = \
        grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ()
    paused = status_for(BizTypeMoving("being moved"), "being moved")
    told = no_answer(settings, 3, [_Failed(paused), _Failed(timed_out), _Failed(timed_out)])
    assert type(told) is BizTypeMoving and str(told) == "being moved"
    nobody = no_answer(settings, 3, [_Failed(timed_out)] * 3)
    assert type(nobody) is ServiceUnavailable and "no ID server answered after 3 attempts" in str(nobody)
    assert "no attempt was made" in str(no_answer(settings, 0, []))


def test_a_quota_wait_below_a_millisecond_is_sent_as_a_millisecond():
    back = error_from(_Failed(status_for(QuotaExceeded("x", 0.0), "x")))
    assert isinstance(back, QuotaExceeded) and back.retry_after == pytest.approx(0.001)


def test_what_is_not_in_the_table_is_internal_and_unmapped_codes_say_their_name():
    assert code_for(IdGenError("a bug")) is grpc.StatusCode.INTERNAL
    assert code_for(StorageUnavailable("db down")) is grpc.StatusCode.UNAVAILABLE
    assert http_status_for(grpc.StatusCode.INTERNAL) == 500
    assert http_status_for(grpc.StatusCode.DATA_LOSS) == 500  # not in the table
    unmapped = error_for(grpc.StatusCode.DATA_LOSS, "lost")
    assert type(unmapped) is IdGenError and "DATA_LOSS" in str(unmapped) and "lost" in str(unmapped)
    late = error_for(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")
    assert isinstance(late, ServiceUnavailable) and "in time" in str(late)


def _details_of(status: grpc.Status) -> list:
    return list(rpc_status.from_call(_Failed(status)).details)


def test_a_quota_refusal_names_the_caller_as_the_subject_of_its_violation():
    [quota, _] = _details_of(status_for(QuotaExceeded("over 100 calls/s", 0.5), "over 100 calls/s"))
    failure = error_details_pb2.QuotaFailure()
    assert quota.Unpack(failure)
    [violation] = failure.violations
    assert (violation.subject, violation.description) == ("caller", "over 100 calls/s")


def test_a_quota_wait_crosses_the_wire_to_the_nanosecond():
    for wait in (2.5, 1.25, 0.75):
        back = error_from(_Failed(status_for(QuotaExceeded("x", wait), "x")))
        assert back.retry_after == wait


def test_a_quota_refusal_without_a_retry_info_waits_one_second():
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.QuotaFailure())
    status = rpc_status.to_status(status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message="slow down", details=[packed]))
    back = error_from(_Failed(status))
    assert isinstance(back, QuotaExceeded) and back.retry_after == 1.0


def test_a_quota_refusal_is_told_with_its_message():
    back = error_from(_Failed(status_for(QuotaExceeded("over 100 calls/s", 0.5), "over 100 calls/s")))
    assert str(back) == "over 100 calls/s"


def test_a_failed_call_without_details_is_told_with_an_empty_message():
    class _Bare:  # what grpc gives for a status sent without a message
        code, details, trailing_metadata = grpc.StatusCode.NOT_FOUND, None, None

    back = error_from(_Failed(_Bare()))
    assert type(back) is UnknownBizType and str(back) == ""
