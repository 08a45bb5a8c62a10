"""The one table between idgen's errors and gRPC status codes.

The server aborts with ``code_for(error)``; the client raises
``error_for(code, message)``: the same exception class comes out on the other
side of the wire.
"""
from __future__ import annotations

import grpc

from idgen_core.errors import (
    BizTypeMisconfigured,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    ServiceUnavailable,
    UnknownBizType,
)

_CODES: tuple[tuple[type[IdGenError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownBizType, grpc.StatusCode.NOT_FOUND),
    (BizTypeMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (ServiceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (IdSpaceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


def code_for(error: IdGenError) -> grpc.StatusCode:
    """The status code the server answers ``error`` with."""
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_for(code: grpc.StatusCode, message: str) -> IdGenError:
    """The exception the client raises for a status (``IdGenError`` if unmapped)."""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceUnavailable(f"the ID server did not answer in time: {message}")
    for cls, mapped in _CODES:
        if mapped is code:
            return cls(message)
    return IdGenError(f"{code.name}: {message}")
