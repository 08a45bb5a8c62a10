"""The gRPC servicer: a thin translation between messages and the core.

It validates requests, hands ``NextId`` out of one double buffer per biz type
(created on first use, so a biz type added while the server runs is served
without a restart), allocates ``NextSegment`` straight from the databases, and
maps errors to status codes in one place (``_rpc``).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

from idgen_client._proto import idgen_pb2, idgen_pb2_grpc
from idgen_client._status import code_for
from idgen_client.buffer import DoubleBuffer
from idgen_client.errors import IdGenError, InvalidRequest
from idgen_client.segment import validate_biz_type, validate_count
from idgen_client.sizing import AdaptiveSteps
from idgen_server.allocator import Allocator, unknown_biz_type

__all__ = ["IdGenService", "add_to_server"]

log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_UNKNOWN_TTL = 1.0  # seconds an unknown biz type is remembered as unknown
_UNKNOWN_MAX = 10_000


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
    """The ``idgen.v1.IdGenerator`` service over an ``Allocator``. Close it to stop preloads."""

    def __init__(self, allocator: Allocator, *, preload_at: float) -> None:
        self.allocator = allocator
        self._preload_at = preload_at
        self._buffers: dict[str, DoubleBuffer] = {}
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()
        self._closed = False

    def buffers(self) -> Iterator[tuple[str, DoubleBuffer]]:
        """The biz types served so far, with their buffers."""
        return iter(list(self._buffers.items()))

    def _buffer(self, biz_type: str) -> DoubleBuffer:
        buffer = self._buffers.get(biz_type)
        if buffer is not None:
            return buffer
        validate_biz_type(biz_type)
        now = time.monotonic()
        with self._lock:
            buffer = self._buffers.get(biz_type)
            if buffer is not None:
                return buffer
            if self._unknown.get(biz_type, 0.0) > now:
                raise unknown_biz_type(biz_type)
        # A database round trip, outside the lock: unknown names must not create buffers.
        if not self.allocator.exists(biz_type):
            with self._lock:
                if len(self._unknown) >= _UNKNOWN_MAX:
                    self._unknown.clear()
                self._unknown[biz_type] = now + _UNKNOWN_TTL
            raise unknown_biz_type(biz_type)
        with self._lock:
            if self._closed:
                raise InvalidRequest("the server is shutting down")
            buffer = self._buffers.get(biz_type)
            if buffer is None:
                allocate = self.allocator.allocate
                buffer = DoubleBuffer(
                    AdaptiveSteps(lambda floor, steps: allocate(biz_type, floor, steps)),
                    name=biz_type, preload_at=self._preload_at,
                )
                self._buffers[biz_type] = buffer
            self._unknown.pop(biz_type, None)
            return buffer

    @_rpc
    def NextId(self, request: idgen_pb2.NextIdRequest, context: grpc.ServicerContext
               ) -> idgen_pb2.NextIdResponse:
        count = validate_count(request.count)
        buffer = self._buffer(request.biz_type)
        if count == 1:
            return idgen_pb2.NextIdResponse(ids=(buffer.next_id(),))
        return idgen_pb2.NextIdResponse(ids=buffer.next_ids(count))

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

    def close(self) -> None:
        """Stop every buffer's background loader."""
        with self._lock:
            self._closed = True
            buffers = list(self._buffers.values())
        for buffer in buffers:
            buffer.close()


def add_to_server(service: IdGenService, server: grpc.Server) -> None:
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
