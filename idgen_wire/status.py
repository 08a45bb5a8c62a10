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
"""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from idgen_core.errors import (
    BizTypeMisconfigured,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    PermissionDenied,
    QuotaExceeded,
    ServiceUnavailable,
    Unauthenticated,
    UnknownBizType,
)

__all__ = ["HTTP_STATUS", "code_for", "error_for", "error_from", "http_status_for", "status_for"]

_CODES: tuple[tuple[type[IdGenError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownBizType, grpc.StatusCode.NOT_FOUND),
    (BizTypeMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (ServiceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (IdSpaceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)


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
    details = []
    if isinstance(error, QuotaExceeded):
        quota = error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject="caller", description=message)])
        seconds = max(error.retry_after, 0.001)
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(seconds), nanos=int(seconds % 1 * 1e9)))
        for detail in (quota, retry):
            packed = any_pb2.Any()
            packed.Pack(detail)
            details.append(packed)
    return rpc_status.to_status(status_pb2.Status(
        code=code.value[0], message=message, details=details))


def error_for(code: grpc.StatusCode, message: str) -> IdGenError:
    """The exception the client raises for a status without details (``IdGenError`` if
    unmapped). ``RESOURCE_EXHAUSTED`` without a quota detail is ``IdSpaceExhausted``."""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceUnavailable(f"the ID server did not answer in time: {message}")
    for cls, mapped in _CODES:
        if mapped is code:
            return cls(message)
    return IdGenError(f"{code.name}: {message}")


def error_from(error: grpc.RpcError) -> IdGenError:
    """The exception the client raises for a failed call, its details read."""
    code, message = error.code(), error.details() or ""
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_after = _quota_retry_after(error)
        if retry_after is not None:
            return QuotaExceeded(message, retry_after)
    return error_for(code, message)


def _quota_retry_after(error: grpc.RpcError) -> float | None:
    """The retry delay of a quota refusal; None if ``error`` carries no QuotaFailure."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # the trailers disagree with the status: not ours to trust
        return None
    if status is None or status.code != code_pb2.RESOURCE_EXHAUSTED:
        return None
    quota, delay = False, 1.0
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = True
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return delay if quota else None
