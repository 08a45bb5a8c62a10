"""The ``idgen.v1.Admin`` service: what one server holds, for operators (``idgen status``).

``Status`` is a snapshot of the server's memory: each biz type's double buffer
(``BufferPool.states``), each database's health (``Allocator.health``) and its
rows as the server last read them (``Allocator.last_read``). It never queries a
database, so a database that hangs cannot hang it: it answers what the server
last saw, and says since when a database has been benched.

It is for operators only: once tokens exist, a caller needs one with the admin
scope. Like the ID service (``idgen_server.service``), requests are parsed here,
after the caller is identified and its scope checked, so a caller without the
admin scope learns nothing, and bytes that are no message are INVALID_ARGUMENT.
Its calls count against the caller's quota like any other.

The reply names databases by their URL with the password masked
(``SegmentStore.name``) and carries their last error as recorded by the health
tracker (one line, without password or SQL); no token ever enters it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from idgen_core.segment import INT64_MAX, Segment
from idgen_core.version import installed_version
from idgen_server.allocator import Allocator
from idgen_server.buffers import BufferPool
from idgen_server.gate import Gate
from idgen_server.rows import BizRow
from idgen_server.service import register_service
from idgen_server.stats import RpcStats
from idgen_server.tokens import Grant
from idgen_server.urls import redact_text
from idgen_wire import idgen_pb2

__all__ = ["AdminService", "add_admin_to_server"]

log = logging.getLogger(__name__)



def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(round(seconds * 1e6))  # a float's nanoseconds would be noise
    return stamp


def _segment(segment: Segment | None, left: int) -> idgen_pb2.SegmentStatus | None:
    if segment is None:
        return None
    return idgen_pb2.SegmentStatus(start=segment.start, end=segment.end, delta=segment.delta,
                                   remainder=segment.remainder, ids_left=left)


class AdminService:
    """``Status`` over a server's buffers and allocator. ``serving`` says what the health
    service answers for the ID service; ``started_at`` is the server's start (``time.time()``)."""

    def __init__(self, buffers: BufferPool, allocator: Allocator, serving: Callable[[], bool],
                 started_at: float | None = None) -> None:
        self.buffers = buffers
        self.allocator = allocator
        self._serving = serving
        self.started_at = time.time() if started_at is None else started_at
        self.version = installed_version()

    def Status(self, request: idgen_pb2.StatusRequest, context: grpc.ServicerContext
               ) -> idgen_pb2.StatusResponse:
        try:
            return self.status()
        except Exception:
            log.exception("Status failed")
            context.abort(grpc.StatusCode.INTERNAL,
                          "internal error in the ID server; its log has the details")
            raise AssertionError("unreachable") from None  # context.abort raises

    def status(self) -> idgen_pb2.StatusResponse:
        """The snapshot: only memory is read, never a database; takes no lock held over I/O."""
        rows = [self.allocator.last_read(index) for index in range(len(self.allocator.stores))]
        reply = idgen_pb2.StatusResponse(version=self.version, started_at=_timestamp(self.started_at),
                                         serving=bool(self._serving()))
        for biz_type, state, multiplier in self.buffers.states():
            # The rows' step; the first database (in configured order) read so far that has the row.
            step = next((read[biz_type].step for read in rows if biz_type in read), 0)
            reply.biz_types.append(idgen_pb2.BizTypeStatus(
                biz_type=biz_type,
                current=_segment(state.current, state.left),
                next=_segment(state.next, len(state.next) if state.next is not None else 0),
                step=step, step_multiplier=multiplier,
                fetches=state.fetches, waits=state.waits, ids_issued=state.issued,
            ))
        stores = self.allocator.stores
        for store, label, health, read in zip(stores, self.allocator.labels, self.allocator.health(),
                                              rows, strict=True):
            reply.databases.append(idgen_pb2.DatabaseStatus(
                label=label, name=store.name, reachable=health.reachable,
                # Recorded without password already; masked again, as a last line of defence.
                since=_timestamp(health.since), last_error=redact_text(health.last_error),
                rows=[_row(row) for _, row in sorted(read.items())], node=store.node or "",
            ))
        return reply


def _row(row: BizRow) -> idgen_pb2.DatabaseRowStatus:
    return idgen_pb2.DatabaseRowStatus(biz_type=row.biz_type, max_id=row.max_id, step=row.step,
                                       delta=row.delta, remainder=row.remainder,
                                       range_used=row.max_id / INT64_MAX)


def add_admin_to_server(admin: AdminService, server: grpc.Server, gate: Gate | None = None,
                        stats: RpcStats | None = None) -> None:
    """Register ``admin`` on ``server`` as ``idgen.v1.Admin``, behind ``gate`` and the admin
    scope, checked before the request is parsed (``register_service``)."""
    gate = gate or Gate()

    def scope(grant: Grant | None, context: grpc.ServicerContext) -> None:
        gate.admit_admin(grant, context.peer)  # the admin scope, then the quota; refusals logged

    register_service(server, "Admin", admin, gate, stats, scope=scope)
