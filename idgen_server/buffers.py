"""The server's IDs for ``NextId``: one double buffer per biz type, over the allocator.

A buffer is made on first use, so a biz type added while the server runs is
served without a restart. Names no database knows are remembered for a moment
(``UNKNOWN_TTL``) and in bounded number (``UNKNOWN_MAX``): a client asking for
random names costs one database read per name and second, and never a buffer.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from idgen_core.buffer import DEFAULT_PRELOAD_AT, BufferState, DoubleBuffer
from idgen_core.errors import ServiceUnavailable
from idgen_core.segment import validate_biz_type
from idgen_core.sizing import AdaptiveSteps
from idgen_server.allocator import Allocator, unknown_biz_type

__all__ = ["UNKNOWN_MAX", "UNKNOWN_TTL", "BufferPool"]

UNKNOWN_TTL = 1.0
"""Seconds an unknown biz type is remembered as unknown."""
UNKNOWN_MAX = 10_000
"""Unknown names remembered at most; beyond that the memory starts afresh."""


class BufferPool:
    """IDs of every biz type, from in-memory segments. Thread-safe; close it to stop
    the buffers' background fetches (later calls raise ``ServiceUnavailable``)."""

    def __init__(self, allocator: Allocator, *, preload_at: float = DEFAULT_PRELOAD_AT) -> None:
        self._allocator = allocator
        self._preload_at = preload_at
        self._buffers: dict[str, DoubleBuffer] = {}
        self._steps: dict[str, AdaptiveSteps] = {}
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()
        self._closed = False

    def next_ids(self, biz_type: str, count: int) -> list[int]:
        """``count`` new IDs of ``biz_type``, increasing; raises ``IdGenError`` subclasses."""
        buffer = self._buffers.get(biz_type) or self._buffer(biz_type)
        if count == 1:
            return [buffer.next_id()]
        return buffer.next_ids(count)

    def next_ids_nowait(self, biz_type: str, count: int) -> list[int]:
        """Up to ``count`` IDs of ``biz_type``, those buffered, never waiting on a database
        (none for a biz type not served yet); the rest from ``next_ids`` lie above them."""
        buffer = self._buffers.get(biz_type)
        return buffer.next_ids_nowait(count) if buffer is not None else []

    def __iter__(self) -> Iterator[tuple[str, DoubleBuffer]]:
        """The biz types served so far, with their buffers (a snapshot)."""
        return iter(list(self._buffers.items()))

    def states(self) -> list[tuple[str, BufferState, int]]:
        """Per biz type served so far, by name: what its buffer holds, and how many steps
        its next allocation claims (dynamic step sizing)."""
        return [(biz_type, buffer.state(), self._steps[biz_type].steps)
                for biz_type, buffer in sorted(self._buffers.items())]

    def holding(self) -> bool:
        """Whether any biz type has IDs in memory (served without a database)."""
        return any(buffer.state().buffered for buffer in list(self._buffers.values()))

    def _buffer(self, biz_type: str) -> DoubleBuffer:
        validate_biz_type(biz_type)
        now = time.monotonic()
        with self._lock:
            self._check_open()
            buffer = self._buffers.get(biz_type)
            if buffer is not None:
                return buffer
            if self._unknown.get(biz_type, 0.0) > now:
                raise unknown_biz_type(biz_type)
        # A database round trip, outside the lock: unknown names must not create buffers.
        if not self._allocator.exists(biz_type):
            with self._lock:
                if len(self._unknown) >= UNKNOWN_MAX:
                    self._unknown.clear()
                self._unknown[biz_type] = now + UNKNOWN_TTL
            raise unknown_biz_type(biz_type)
        with self._lock:
            self._check_open()
            buffer = self._buffers.get(biz_type)
            if buffer is None:
                allocate = self._allocator.allocate
                steps = AdaptiveSteps(lambda floor, steps: allocate(biz_type, floor, steps), name=biz_type)
                buffer = DoubleBuffer(steps, name=biz_type, preload_at=self._preload_at)
                self._steps[biz_type] = steps
                self._buffers[biz_type] = buffer
            self._unknown.pop(biz_type, None)
            return buffer

    def _check_open(self) -> None:
        if self._closed:
            # UNAVAILABLE, not a bad request: the client's next attempt goes to another server.
            raise ServiceUnavailable("the ID server is shutting down: retry on another server")

    def close(self) -> None:
        """Stop every buffer's background fetches."""
        with self._lock:
            self._closed = True
            buffers = list(self._buffers.values())
        for buffer in buffers:
            buffer.close()
