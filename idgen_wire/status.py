"""The one table between idgen's errors and gRPC status codes.

The server aborts with ``code_for(error)`` (``status_for`` when the error carries
details); the client raises ``error_from(rpc_error)``: the same exception class
comes out on the other side of the wire.

``RESOURCE_EXHAUSTED`` means two things that a caller must tell apart: the biz
type has used up the int64 range (``IdSpaceExhausted``, for good), or the caller
went over its quota (``QuotaExceeded``, for a second). A quota refusal carries the
standard ``google.rpc.QuotaFailure`` and ``google.rpc.RetryInfo`` details
(grpcio-status), which is how the client tells them apart, and how clients in
other languages can.

``UNAVAILABLE`` too: nothing answers (``ServiceUnavailable``), or the biz type is
paused while ``idgen add-db`` moves it (``BizTypeMoving``), which a caller waits
out rather than fail over. A pause carries ``google.rpc.ErrorInfo`` (reason
``BIZ_TYPE_MOVING``, domain ``idgen``) and ``google.rpc.RetryInfo``.
"""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
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
    Unauthenticated,
    UnknownBizType,
)

__all__ = ["HTTP_STATUS", "MOVING_RETRY", "code_for", "error_for", "error_from", "http_status_for",
           "status_for"]

MOVING_RETRY = 0.1
"""Seconds after which a caller told of a pause (``BizTypeMoving``) may ask again."""
_DOMAIN = "idgen"
_MOVING = "BIZ_TYPE_MOVING"

_CODES: tuple[tuple[type[IdGenError], grpc.StatusCode], ...] = (
    (BizTypeMoving, grpc.StatusCode.UNAVAILABLE),  # before its parent BizTypeMisconfigured
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownBizType, grpc.StatusCode.NOT_FOUND),
    (BizTypeMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (ServiceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (IdSpaceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)

_TOLD_BY_DETAILS = (BizTypeMoving, QuotaExceeded)
"""Errors that share their code with another and are told from it by the status's details."""


HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
}
"""The HTTP status of each code, as gRPC's own HTTP mapping and Google's APIs give it, for
the HTTP/JSON API: a caller sees the same outcome over either."""


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status an error of ``code`` is answered with (500 for an unmapped one)."""
    return HTTP_STATUS.get(code, 500)


def code_for(error: IdGenError) -> grpc.StatusCode:
    """The status code the server answers ``error`` with."""
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def status_for(error: IdGenError, message: str) -> grpc.Status:
    """The status to abort with, details included (``context.abort_with_status``)."""
    code = code_for(error)
    found: list[Message] = []
    if isinstance(error, QuotaExceeded):
        found = [error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject="caller", description=message)]),
            _retry_info(error.retry_after)]
    elif isinstance(error, BizTypeMoving):
        found = [error_details_pb2.ErrorInfo(reason=_MOVING, domain=_DOMAIN), _retry_info(MOVING_RETRY)]
    details = []
    for detail in found:
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    return rpc_status.to_status(status_pb2.Status(
        code=code.value[0], message=message, details=details))


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    seconds = max(seconds, 0.001)
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(seconds), nanos=int(seconds % 1 * 1e9)))


def error_for(code: grpc.StatusCode, message: str) -> IdGenError:
    """The exception the client raises for a status without details (``IdGenError`` if
    unmapped). ``RESOURCE_EXHAUSTED`` without a quota detail is ``IdSpaceExhausted``."""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceUnavailable(f"the ID server did not answer in time: {message}")
    for cls, mapped in _CODES:
        if mapped is code and cls not in _TOLD_BY_DETAILS:
            return cls(message)
    return IdGenError(f"{code.name}: {message}")


def error_from(error: grpc.RpcError) -> IdGenError:
    """The exception the client raises for a failed call, its details read."""
    code, message = error.code(), error.details() or ""
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        quota, delay = _details(error, code_pb2.RESOURCE_EXHAUSTED)
        if quota == "quota":
            return QuotaExceeded(message, delay)
    elif code is grpc.StatusCode.UNAVAILABLE and _details(error, code_pb2.UNAVAILABLE)[0] == _MOVING:
        return BizTypeMoving(message)
    return error_for(code, message)


def _details(error: grpc.RpcError, code: int) -> tuple[str | None, float]:
    """What the details of ``error`` (a status of ``code``) say: ``"quota"`` for a
    QuotaFailure, an ErrorInfo's reason (of idgen's domain), else None; and the RetryInfo's
    delay (1 s without one)."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # the trailers disagree with the status: not ours to trust
        return None, 1.0
    if status is None or status.code != code:
        return None, 1.0
    kind, delay = None, 1.0
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            kind = "quota"
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == _DOMAIN:
                kind = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return kind, delay
