"""The two segments a double buffer holds, and the rules for moving from one to the next.

Both double buffers stand on this: ``DoubleBuffer`` (``idgen_core.buffer``), whose fetches
run in a thread, and ``AsyncDoubleBuffer`` (``idgen_core.async_buffer``), whose fetches are
tasks on an event loop. They differ only in how a caller waits and how a fetch is started;
what is handed out, in which order, and when the next segment is asked for is decided here.

How it stays cheap. The current segment is split in two plain ``range`` iterators: the first
``preload_at`` share of it, then the rest. The hot path is ``next()`` on the current iterator,
a single C call. Only when an iterator runs dry does a caller come here (``_move_on``), which
either moves on to the rest of the segment (and asks for the next one: that is the preload
threshold, crossed without counting anything per call) or installs the preloaded segment.

Why IDs always increase. Each fetch passes the end of the segment in use as the floor, so
every segment lies above the one before it, and an iterator is only ever replaced once it is
exhausted. So the IDs one buffer hands out increase across segments too, not just within one;
in multi-DB mode that is what moves a lagging database forward.
"""
from __future__ import annotations

import operator
import time
from collections.abc import Iterator
from dataclasses import dataclass

from idgen_core.errors import BizTypeMoving, ConfigError, IdGenError, ServiceUnavailable
from idgen_core.retry import Backoff
from idgen_core.segment import Segment

__all__ = ["DEFAULT_PRELOAD_AT", "DEFAULT_RETRY", "DEFAULT_WAIT_TIMEOUT", "PAUSE_WAIT", "BufferState",
           "Patience", "SegmentPair", "check_preload_at", "check_wait_timeout"]

DEFAULT_PRELOAD_AT = 0.2
"""Fetch the next segment once 20% of the current one is used (Tinyid's figure):
the remaining 80% is the time the fetch has before a caller would wait."""

DEFAULT_WAIT_TIMEOUT = 30.0
"""Seconds a caller waits for a segment when both are used up, before ``ServiceUnavailable``."""

DEFAULT_RETRY = Backoff(initial=0.05, maximum=2.0)
"""How a buffer spaces its attempts after a failed fetch (until one succeeds)."""

PAUSE_WAIT = 2.0
"""Seconds a pause (``BizTypeMoving``: ``idgen add-db`` moving the biz type, which freezes its
rows for milliseconds) is waited out, counted from the fetch that first met it: until then a
caller waits (never beyond its ``wait_timeout``); from then on it is told at once. Bounded,
for a move stopped halfway lasts until a person runs it again, and a server's threads must
not all wait on it."""


@dataclass(frozen=True)
class BufferState:
    """What a buffer holds at one moment (``state()``), for status and metrics."""

    current: Segment | None
    """The segment IDs come from now; None before the first fetch and once closed."""
    left: int
    """IDs of ``current`` not handed out yet."""
    next: Segment | None
    """The segment fetched ahead, if it has arrived."""
    fetches: int
    waits: int
    issued: int
    """IDs handed out so far (IDs dropped unused, by ``skip_past`` or ``close``, are not)."""

    @property
    def buffered(self) -> int:
        """IDs held in memory, ready to hand out without a fetch."""
        return self.left + (len(self.next) if self.next is not None else 0)


def check_preload_at(preload_at: float) -> float:
    """``preload_at`` if it is a share in ``[0, 1)``, else ``ConfigError``."""
    if not 0.0 <= preload_at < 1.0:  # NaN fails both comparisons: refused too
        raise ConfigError(f"preload_at must be in [0, 1), got {preload_at}")
    return preload_at


def check_wait_timeout(wait_timeout: float) -> float:
    """``wait_timeout`` if it is a positive number of seconds, else ``ConfigError``."""
    if not wait_timeout > 0:
        raise ConfigError(f"wait_timeout must be positive, got {wait_timeout}")
    return wait_timeout


class Patience:
    """How long one caller that found both segments used up waits for a fetch.

    Until ``wait_timeout`` while a fetch is under way. A failed fetch is told at once (the
    caller may have a server or database to fail over to), but for a pause
    (``BizTypeMoving``), which is waited out until ``PAUSE_WAIT`` after it began: every
    server sees the same pause, and it ends in moments, so failing over or failing would
    only turn it into errors. The buffer's fetch meanwhile asks again at the first step of
    its backoff (``idgen_core.fetcher.FailureLog``).
    """

    __slots__ = ("deadline", "pause_end", "waited")

    def __init__(self, wait_timeout: float) -> None:
        self.deadline = time.monotonic() + wait_timeout
        self.pause_end: float | None = None
        self.waited = False
        """Whether the caller has waited yet (each caller counts once in ``waits``)."""

    def tells(self, error: IdGenError, paused_since: float | None) -> bool:
        """Whether the caller is told of the failed fetch ``error`` now, rather than waiting on;
        ``paused_since``: when the fetches began failing with a pause (monotonic)."""
        if not isinstance(error, BizTypeMoving):
            return True
        now = time.monotonic()
        began = now if paused_since is None else paused_since
        self.pause_end = min(began + PAUSE_WAIT, self.deadline)
        return now >= self.pause_end

    def remaining(self, error: IdGenError | None) -> float:
        """Seconds left to wait, ``error`` being the fetch's failure as last seen (if any).
        At zero or below, the wait is over: a time-out without an error; with one (a pause),
        ``tells`` now says to tell it."""
        end = self.pause_end if self.pause_end is not None and error is not None else self.deadline
        return end - time.monotonic()


class SegmentPair:
    """The current segment, the next one, and the floor every later segment lies above.

    Not safe by itself: the thread-backed buffer calls every method but the hot path's
    ``next()`` under its lock, the asyncio one from its event loop only. A subclass says how
    a fetch starts (``_start_fetch``).
    """

    def __init__(self, *, name: str, preload_at: float, floor: int) -> None:
        check_preload_at(preload_at)
        if floor < 0:
            raise ConfigError(f"floor must be at least 0, got {floor}")
        self._name = name
        self._preload_at = preload_at
        # _ids is what the hot path reads, without a lock.
        self._ids: Iterator[int] = iter(())
        self._rest: range | None = None  # the part of the current segment after the threshold
        self._next: Segment | None = None
        self._current: Segment | None = None
        self._issued_before = 0  # IDs handed out from the segments before the current one
        self._floor = floor
        self._closed = False
        self.fetches = 0
        """Segments fetched so far."""
        self.waits = 0
        """Times a caller found both segments used up and had to wait for a fetch."""

    def _start_fetch(self) -> None:
        """Ask for the next segment unless it is here or asked for already."""
        raise NotImplementedError

    def _move_on(self, exhausted: Iterator[int]) -> int | None:
        """One ID from past the exhausted iterator, or None when both segments are used up
        (the caller waits for a fetch); ``ServiceUnavailable`` once closed."""
        while True:
            if self._ids is not exhausted:  # another caller moved on already
                ids = self._ids
                try:
                    return next(ids)
                except StopIteration:
                    exhausted = ids
                    continue
            if self._closed:
                raise self._closed_error()
            if self._rest is not None:  # threshold crossed: serve the rest, preload
                self._ids, self._rest = iter(self._rest), None
                self._start_fetch()
                continue
            if self._next is not None:
                self._install(self._next)
                continue
            return None

    def _has_ids(self) -> bool:
        """Whether an ID can be had without waiting for a fetch."""
        return (operator.length_hint(self._ids) > 0 or self._rest is not None
                or self._next is not None)

    def _install(self, segment: Segment) -> None:
        """Make ``segment`` current."""
        self._retire()
        self._current = segment
        self._next = None
        self._floor = segment.end
        ids = segment.ids()
        cut = int(len(ids) * self._preload_at)
        if cut == 0:
            self._ids, self._rest = iter(ids), None
            self._start_fetch()
        else:
            self._ids, self._rest = iter(ids[:cut]), ids[cut:]

    def _take(self, segment: Segment) -> bool:
        """Keep a fetched segment as the next one; False if it is no longer above the
        floor (``skip_past`` moved it during the fetch): fetch again."""
        if segment.start <= self._floor and not self._closed:
            return False
        self.fetches += 1
        if not self._closed:
            self._next = segment
        return True

    def _skipped_to(self, segment: Segment) -> bool:
        """Make a segment ``skip_past`` fetched current; False if the buffer moved on above
        it during the fetch (fetch again, above where it is now)."""
        if self._closed:
            raise self._closed_error()
        if segment.start <= self._floor:
            return False
        self.fetches += 1
        self._install(segment)
        return True

    def _left(self) -> int:
        """IDs of the current segment not handed out yet."""
        # A range iterator knows its length: nothing is counted on the hot path for this.
        return operator.length_hint(self._ids) + (len(self._rest) if self._rest is not None else 0)

    def _retire(self) -> None:
        """Count what was handed out of the current segment, before it goes."""
        if self._current is not None:
            self._issued_before += len(self._current) - self._left()
            self._current = None

    def _snapshot(self) -> BufferState:
        left = self._left() if self._current is not None else 0
        issued = self._issued_before + (len(self._current) - left if self._current else 0)
        return BufferState(current=self._current, left=left, next=self._next,
                           fetches=self.fetches, waits=self.waits, issued=issued)

    def _shut(self) -> None:
        """Hand out nothing more: what is buffered is dropped (wasted, never reissued)."""
        self._closed = True
        self._retire()
        self._ids, self._rest = iter(()), None

    def _closed_error(self) -> ServiceUnavailable:
        return ServiceUnavailable(f"the ID generator for {self._name!r} is closed")

    def _timed_out(self, wait_timeout: float) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"no segment for {self._name!r} arrived within {wait_timeout:g}s; "
            "the ID service or its database is slow or unreachable: retry later")
