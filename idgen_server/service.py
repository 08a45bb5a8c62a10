"""The gRPC servicer: a thin translation between messages and the server's objects.

``NextId`` is served from the ``BufferPool``, ``NextSegment`` straight from the
``Allocator``, the lease calls by ``Leases`` over the same databases. Errors become status codes in one place (``_rpc``, with the table
in ``idgen_wire.status``), and requests are parsed here rather than by gRPC
(``add_to_server``), so that even bytes that are no message get INVALID_ARGUMENT.
Every call passes the ``Gate`` (token, then quota) before it is served.

What a caller is told never describes the deployment: a database is named by
its label (``db0``), never by its URL, and a database failure, whose driver
text may name hosts and users, reaches the caller as a plain "unavailable"
(the server's log has the details).
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from idgen_core.errors import IdGenError, StorageUnavailable
from idgen_core.segment import Segment, validate_biz_type, validate_count
from idgen_server.allocator import Allocator
from idgen_server.buffers import BufferPool
from idgen_server.gate import Gate
from idgen_server.leases import Leases
from idgen_server.stats import RpcStats
from idgen_server.tokens import Grant
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from idgen_wire.status import status_for

__all__ = ["Admit", "IdGenService", "Scope", "abort", "add_to_server", "register_service"]

log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def abort(context: grpc.ServicerContext, error: IdGenError, message: str | None = None) -> None:
    """End the call with ``error``'s status (and details, such as a quota's); raises."""
    context.abort_with_status(status_for(error, str(error) if message is None else message))
    raise AssertionError("unreachable")  # abort_with_status raises


def _rpc(method: Callable[..., _Resp]) -> Callable[..., _Resp]:
    """Map idgen's errors to status codes; anything else is INTERNAL, logged here."""

    @functools.wraps(method)
    def wrapper(self: IdGenService, request: _Req, context: grpc.ServicerContext) -> _Resp:
        try:
            return method(self, request, context)
        except IdGenError as exc:
            error, message = exc, self.public_message(exc, getattr(request, "biz_type", ""))
        except Exception:
            log.exception("%s failed", method.__name__)
            error = IdGenError()
            message = "internal error in the ID server; its log has the details"
        abort(context, error, message)  # outside the except blocks, so it is not caught
        raise AssertionError("unreachable")

    return wrapper


class IdGenService(idgen_pb2_grpc.IdGeneratorServicer):
    """The ``idgen.v1.IdGenerator`` service over a ``BufferPool`` and an ``Allocator``."""

    def __init__(self, buffers: BufferPool, allocator: Allocator) -> None:
        self.buffers = buffers
        self.allocator = allocator
        self.leases = Leases(allocator)
        self._labels = list(zip((s.name for s in allocator.stores), allocator.labels, strict=True))

    def next_segment(self, biz_type: str, floor: int, steps: int, above_all: bool) -> Segment:
        """What ``NextSegment`` serves (the HTTP API too): a new segment, counted as served.
        Blocks on the databases."""
        biz_type = validate_biz_type(biz_type)
        segment = self.allocator.allocate(biz_type, floor, steps or 1, above_all=above_all)
        self.allocator.served.add(biz_type, len(segment))  # after the allocation: the name exists
        return segment

    @_rpc
    def NextId(self, request: idgen_pb2.NextIdRequest, context: grpc.ServicerContext
               ) -> idgen_pb2.NextIdResponse:
        count = validate_count(request.count)
        return idgen_pb2.NextIdResponse(ids=self.buffers.next_ids(request.biz_type, count))

    @_rpc
    def NextSegment(self, request: idgen_pb2.NextSegmentRequest, context: grpc.ServicerContext
                    ) -> idgen_pb2.NextSegmentResponse:
        biz_type = request.biz_type
        segment = self.next_segment(biz_type, request.floor, request.steps, request.above_all)
        return idgen_pb2.NextSegmentResponse(
            biz_type=biz_type, start=segment.start, end=segment.end,
            delta=segment.delta, remainder=segment.remainder,
        )

    @_rpc
    def AcquireLease(self, request: idgen_pb2.AcquireLeaseRequest, context: grpc.ServicerContext
                     ) -> idgen_pb2.AcquireLeaseResponse:
        grant = self.leases.acquire(request.biz_type, request.name, request.holder,
                                    request.ttl_ms, request.epoch)
        return idgen_pb2.AcquireLeaseResponse(
            granted=grant.granted, epoch=grant.epoch,
            retry_after_ms=min(int(grant.retry_after * 1000), 2**32 - 1))

    @_rpc
    def ReleaseLease(self, request: idgen_pb2.ReleaseLeaseRequest, context: grpc.ServicerContext
                     ) -> idgen_pb2.ReleaseLeaseResponse:
        released = self.leases.release(request.biz_type, request.name, request.holder,
                                       request.epoch)
        return idgen_pb2.ReleaseLeaseResponse(released=released)

    def public_message(self, error: IdGenError, biz_type: str) -> str:
        """What the caller is told of ``error``: databases by label, not URL. The allocator's
        errors are made for callers already; what comes from elsewhere (a database's own
        ``StorageUnavailable``, with driver text) is replaced whole, as a last line of defence."""
        message = str(error)
        for name, label in self._labels:
            message = message.replace(name, label)
        if isinstance(error, StorageUnavailable) and "://" in message:
            return (f"no database can serve {biz_type!r} right now: retry shortly; "
                    "the server's log has the details")
        return message


def add_to_server(service: idgen_pb2_grpc.IdGeneratorServicer, server: grpc.Server,
                  gate: Gate | None = None, stats: RpcStats | None = None) -> None:
    """Register ``service`` on ``server`` as ``idgen.v1.IdGenerator`` (``register_service``):
    each call's biz type is checked against the caller's grant and charged to its quota."""
    gate = gate or Gate()

    def admit(grant: Grant | None, context: grpc.ServicerContext, request: Message) -> None:
        gate.admit(grant, context.peer, getattr(request, "biz_type", ""), getattr(request, "count", 0))

    register_service(server, "IdGenerator", service, gate, stats, admit=admit)


Admit = Callable[[Grant | None, grpc.ServicerContext, Message], None]
"""A check of a parsed request against the caller's grant (and its quota); raises ``IdGenError``."""
Scope = Callable[[Grant | None, grpc.ServicerContext], None]
"""A check of the caller's grant before its request is even parsed; raises ``IdGenError``."""


def register_service(server: grpc.Server, name: str, servicer: object, gate: Gate,
                     stats: RpcStats | None = None, *, scope: Scope | None = None,
                     admit: Admit | None = None) -> None:
    """Register every RPC of the proto's service ``name`` on ``server``, served by the
    methods of ``servicer`` of the same names, each call passing ``gate`` first.

    A call is identified from its metadata (``gate.identify``) and checked by ``scope``
    before its request is parsed, so a caller without a valid token or scope learns
    nothing; then parsed here, then checked by ``admit``. gRPC's own parsing answers a
    request that is not a valid message (a string field holding invalid UTF-8, a
    truncated varint, plain garbage) with INTERNAL "Exception deserializing request!"
    and logs a stack trace; bad input deserves INVALID_ARGUMENT and a reason, like any
    other. With ``stats`` (metrics on), each call's method, status code and seconds are
    counted there; without, nothing is.
    """
    descriptor = idgen_pb2.DESCRIPTOR.services_by_name[name]
    handlers = {}
    for method in descriptor.methods:
        request_type = getattr(idgen_pb2, method.input_type.name)
        response_type = getattr(idgen_pb2, method.output_type.name)
        call = _handler(getattr(servicer, method.name), request_type, gate, scope, admit)
        if stats is not None:
            call = stats.timed(call, stats.register(descriptor.full_name, method.name))
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            call, response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    server.add_registered_method_handlers(descriptor.full_name, handlers)


def _handler(method: Callable[[_Req, grpc.ServicerContext], _Resp], request_type: type[_Req],
             gate: Gate, scope: Scope | None, admit: Admit | None
             ) -> Callable[[bytes, grpc.ServicerContext], _Resp]:
    name = request_type.DESCRIPTOR.full_name  # type: ignore[attr-defined]

    def handler(data: bytes, context: grpc.ServicerContext) -> _Resp:
        try:
            grant = gate.identify(context.invocation_metadata(), context.peer)  # before parsing
            if scope is not None:
                scope(grant, context)
        except IdGenError as exc:
            abort(context, exc)
        try:
            request = request_type.FromString(data)  # type: ignore[attr-defined]
        except DecodeError as exc:
            reason = str(exc).rpartition(": ")[2] or "malformed"
            detail = f"the request is not a valid {name} message: {reason}"
            if "UTF-8" in reason:
                detail += " (string fields such as biz_type must be valid UTF-8)"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, detail)
            raise AssertionError("unreachable")  # context.abort raises
        if admit is not None:
            try:
                admit(grant, context, request)  # type: ignore[arg-type]
            except IdGenError as exc:
                abort(context, exc)
        return method(request, context)

    return handler
