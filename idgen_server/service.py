"""The gRPC servicer: a thin translation between messages and the server's objects.

``NextId`` is served from the ``BufferPool``, ``NextSegment`` straight from the
``Allocator``. Errors become status codes in one place (``_rpc``, with the table
in ``idgen_wire.status``), and requests are parsed here rather than by gRPC
(``add_to_server``), so that even bytes that are no message get INVALID_ARGUMENT.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

from idgen_core.errors import IdGenError
from idgen_core.segment import validate_biz_type, validate_count
from idgen_server.allocator import Allocator
from idgen_server.buffers import BufferPool
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from idgen_wire.status import code_for

__all__ = ["IdGenService", "add_to_server"]

log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def _rpc(method: Callable[..., _Resp]) -> Callable[..., _Resp]:
    """Map idgen's errors to status codes; anything else is INTERNAL, logged here."""

    @functools.wraps(method)
    def wrapper(self: IdGenService, request: _Req, context: grpc.ServicerContext) -> _Resp:
        try:
            return method(self, request, context)
        except IdGenError as exc:
            code, message = code_for(exc), str(exc)
        except Exception:
            log.exception("%s failed", method.__name__)
            code = grpc.StatusCode.INTERNAL
            message = "internal error in the ID server; its log has the details"
        context.abort(code, message)  # raises: outside the except blocks, so it is not caught
        raise AssertionError("unreachable")

    return wrapper


class IdGenService(idgen_pb2_grpc.IdGeneratorServicer):
    """The ``idgen.v1.IdGenerator`` service over a ``BufferPool`` and an ``Allocator``."""

    def __init__(self, buffers: BufferPool, allocator: Allocator) -> None:
        self.buffers = buffers
        self.allocator = allocator

    @_rpc
    def NextId(self, request: idgen_pb2.NextIdRequest, context: grpc.ServicerContext
               ) -> idgen_pb2.NextIdResponse:
        count = validate_count(request.count)
        return idgen_pb2.NextIdResponse(ids=self.buffers.next_ids(request.biz_type, count))

    @_rpc
    def NextSegment(self, request: idgen_pb2.NextSegmentRequest, context: grpc.ServicerContext
                    ) -> idgen_pb2.NextSegmentResponse:
        biz_type = validate_biz_type(request.biz_type)
        segment = self.allocator.allocate(biz_type, request.floor, request.steps or 1,
                                          above_all=request.above_all)
        return idgen_pb2.NextSegmentResponse(
            biz_type=biz_type, start=segment.start, end=segment.end,
            delta=segment.delta, remainder=segment.remainder,
        )


def add_to_server(service: idgen_pb2_grpc.IdGeneratorServicer, server: grpc.Server) -> None:
    """Register ``service`` on ``server``, parsing each request here rather than in gRPC.

    gRPC's own parsing answers a request that is not a valid message (a string
    field holding invalid UTF-8, a truncated varint, plain garbage) with
    INTERNAL "Exception deserializing request!" and logs a stack trace; bad
    input deserves INVALID_ARGUMENT and a reason, like any other. Every RPC of
    the service in the proto is registered this way.
    """
    descriptor = idgen_pb2.DESCRIPTOR.services_by_name["IdGenerator"]
    handlers = {}
    for method in descriptor.methods:
        request_type = getattr(idgen_pb2, method.input_type.name)
        response_type = getattr(idgen_pb2, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _parsing(getattr(service, method.name), request_type),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    server.add_registered_method_handlers(descriptor.full_name, handlers)


def _parsing(method: Callable[[_Req, grpc.ServicerContext], _Resp], request_type: type[_Req]
             ) -> Callable[[bytes, grpc.ServicerContext], _Resp]:
    name = request_type.DESCRIPTOR.full_name  # type: ignore[attr-defined]

    def handler(data: bytes, context: grpc.ServicerContext) -> _Resp:
        try:
            request = request_type.FromString(data)  # type: ignore[attr-defined]
        except DecodeError as exc:
            reason = str(exc).rpartition(": ")[2] or "malformed"
            detail = f"the request is not a valid {name} message: {reason}"
            if "UTF-8" in reason:
                detail += " (string fields such as biz_type must be valid UTF-8)"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, detail)
            raise AssertionError("unreachable")  # context.abort raises
        return method(request, context)

    return handler
