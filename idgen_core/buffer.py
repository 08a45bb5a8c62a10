"""The double buffer: IDs from memory, the next segment fetched in the background.

Shared by the server (one buffer per biz type, fetching from the databases) and
the local generator (fetching with the ``NextSegment`` RPC); it knows neither:
it is given a ``fetch(floor) -> Segment`` callable that must return a segment
whose IDs are all above ``floor``.

How it stays cheap. The current segment is split in two plain ``range``
iterators: the first ``preload_at`` share of it, then the rest. The hot path is
``next()`` on the current iterator, which is a single C call under the GIL, so
no lock is taken per ID. Only when an iterator runs dry does a caller enter the
locked slow path, which either moves on to the rest of the segment (and starts
the background fetch of the next one: that is the preload threshold, crossed
without counting anything per call) or installs the preloaded segment. A caller
waits on I/O only when both segments are used up.

Why IDs always increase. Each fetch passes the end of the segment in use as the
floor, so every segment lies above the one before it, and an iterator is only
ever replaced once it is exhausted. So the IDs one buffer hands out increase
across segments too, not just within one; in multi-DB mode that is what moves a
lagging database forward.

Thread-safety relies on the GIL making ``next()`` on a range iterator atomic;
on a free-threaded build the hot path would need a lock.
"""
from __future__ import annotations

import itertools
import operator
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from idgen_core.errors import ConfigError, InvalidRequest, ServiceUnavailable, fresh
from idgen_core.fetcher import Fetcher, fetch_above
from idgen_core.retry import Backoff
from idgen_core.segment import Segment

__all__ = ["DEFAULT_PRELOAD_AT", "DEFAULT_RETRY", "DEFAULT_WAIT_TIMEOUT", "BufferState",
           "DoubleBuffer", "FetchSegment", "check_preload_at"]

FetchSegment = Callable[[int], Segment]
"""``fetch(floor)``: allocate a new segment whose IDs are all above ``floor``."""

DEFAULT_PRELOAD_AT = 0.2
"""Fetch the next segment once 20% of the current one is used (Tinyid's figure):
the remaining 80% is the time the fetch has before a caller would wait."""

DEFAULT_WAIT_TIMEOUT = 30.0
"""Seconds a caller waits for a segment when both are used up, before ``ServiceUnavailable``."""

DEFAULT_RETRY = Backoff(initial=0.05, maximum=2.0)
"""How the fetcher thread spaces its attempts after a failed fetch (until one succeeds)."""

@dataclass(frozen=True)
class BufferState:
    """What a buffer holds at one moment (``DoubleBuffer.state``), for status and metrics."""

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


class DoubleBuffer:
    """Hands out unique, increasing IDs from segments, preloading the next one.

    Thread-safe. ``next_id()`` takes no lock unless the current iterator runs
    dry; it blocks only when nothing is buffered, and then for at most
    ``wait_timeout`` seconds. Errors are ``IdGenError`` subclasses: transient
    fetch failures surface as ``ServiceUnavailable`` only once the buffered IDs
    are gone, and the fetcher thread keeps retrying (``retry``) until a
    fetch succeeds, so the buffer recovers by itself.

    Use it as a context manager or call ``close()``: that stops the fetcher thread.
    """

    def __init__(
        self,
        fetch: FetchSegment,
        *,
        name: str = "idgen",
        preload_at: float = DEFAULT_PRELOAD_AT,
        floor: int = 0,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        retry: Backoff = DEFAULT_RETRY,
    ) -> None:
        check_preload_at(preload_at)
        if floor < 0:
            raise ConfigError(f"floor must be at least 0, got {floor}")
        if not wait_timeout > 0:
            raise ConfigError(f"wait_timeout must be positive, got {wait_timeout}")
        self._fetch = fetch
        self._name = name
        self._preload_at = preload_at
        self._wait_timeout = wait_timeout
        self._cond = threading.Condition(threading.Lock())
        self._fetcher = Fetcher(self, self._cond, name=name, retry=retry)
        # Guarded by _cond, except _ids, which the hot path reads without it.
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

    # -- hot path -------------------------------------------------------------

    def next_id(self) -> int:
        """The next ID: unique, and greater than every ID this buffer gave before."""
        ids = self._ids
        try:
            return next(ids)
        except StopIteration:
            return self._advance(ids)

    def next_ids(self, count: int) -> list[int]:
        """``count`` IDs in increasing order (they may span segments)."""
        if count < 1:
            raise InvalidRequest(f"count must be at least 1, got {count}")
        result: list[int] = []
        while True:
            ids = self._ids
            # list(islice(...)) over a range iterator runs in C: atomic under the GIL.
            result += itertools.islice(ids, count - len(result))
            if len(result) == count:
                return result
            result.append(self._advance(ids))
            if len(result) == count:
                return result

    # -- slow path ------------------------------------------------------------

    def _advance(self, exhausted: Iterator[int]) -> int:
        """Move past the exhausted iterator and return one ID; waits if need be."""
        deadline: float | None = None
        with self._cond:
            while True:
                if self._ids is not exhausted:  # another thread moved on already
                    ids = self._ids
                    try:
                        return next(ids)
                    except StopIteration:
                        exhausted = ids
                        continue
                if self._closed:
                    raise ServiceUnavailable(f"the ID generator for {self._name!r} is closed")
                if self._rest is not None:  # threshold crossed: serve the rest, preload
                    self._ids, self._rest = iter(self._rest), None
                    self._start_fetch()
                    continue
                if self._next is not None:
                    self._install(self._next)
                    continue
                # Both segments are used up: wait for the fetcher.
                fetcher = self._fetcher
                if fetcher.error is not None:
                    error = fetcher.error
                    if not fetcher.busy and not fetcher.exhausted:
                        fetcher.error = None  # a permanent error is reported once; the next call retries
                    raise fresh(error)
                if deadline is None:
                    self.waits += 1
                    deadline = time.monotonic() + self._wait_timeout
                self._start_fetch()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    raise ServiceUnavailable(
                        f"no segment for {self._name!r} arrived within {self._wait_timeout:g}s; "
                        "the ID service or its database is slow or unreachable: retry later"
                    )

    def _install(self, segment: Segment) -> None:
        """Make ``segment`` current. Caller holds the lock."""
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

    def skip_past(self, floor: int, *, fetch: FetchSegment | None = None) -> Segment:
        """Hand out only IDs above ``floor`` from now on; blocks on one fetch.

        Fetches a segment above ``max(floor, self.floor)`` now, with ``fetch``
        (default: the buffer's own), and makes it current: the IDs still buffered
        are dropped (wasted, never reissued) and IDs keep increasing. Returns that
        segment. A failed fetch raises its ``IdGenError`` and leaves the buffer
        as it was. A ``next_id()`` already running in another thread may still
        return one ID from before: a caller that needs the bound for every ID
        serializes its calls (the sequencer does, under its lock).
        """
        if floor < 0:
            raise InvalidRequest(f"floor must be at least 0, got {floor}")
        fetch = fetch or self._fetch
        while True:
            with self._cond:
                if self._closed:
                    raise ServiceUnavailable(f"the ID generator for {self._name!r} is closed")
                low = max(floor, self._floor)
            segment = fetch_above(fetch, low)
            with self._cond:
                if self._closed:
                    raise ServiceUnavailable(f"the ID generator for {self._name!r} is closed")
                if segment.start <= self._floor:
                    continue  # the buffer moved on during the fetch: go above where it is now
                self.fetches += 1
                self._fetcher.error = None
                self._install(segment)
                self._cond.notify_all()
                return segment

    def _start_fetch(self) -> None:
        """Ask the fetcher for the next segment unless it is here. Caller holds the lock."""
        if self._next is None and not self._closed:
            self._fetcher.request()

    def _take(self, segment: Segment) -> bool:
        """Keep the fetcher's segment as the next one; False if it is no longer above
        the floor (``skip_past`` moved it during the fetch). Caller holds the lock."""
        if segment.start <= self._floor and not self._closed:
            return False
        self.fetches += 1
        self._fetcher.error = None
        if not self._closed:
            self._next = segment
        return True

    # -- status ---------------------------------------------------------------

    def _left(self) -> int:
        """IDs of the current segment not handed out yet. Caller holds the lock."""
        # A range iterator knows its length: nothing is counted on the hot path for this.
        return operator.length_hint(self._ids) + (len(self._rest) if self._rest is not None else 0)

    def _retire(self) -> None:
        """Count what was handed out of the current segment, before it goes. Caller holds the lock."""
        if self._current is not None:
            self._issued_before += len(self._current) - self._left()
            self._current = None

    def state(self) -> BufferState:
        """A snapshot of what the buffer holds. Takes the lock, never waits on I/O; a
        ``next_id()`` running meanwhile may make ``left`` and ``issued`` one call stale."""
        with self._cond:
            left = self._left() if self._current is not None else 0
            issued = self._issued_before + (len(self._current) - left if self._current else 0)
            return BufferState(current=self._current, left=left, next=self._next,
                               fetches=self.fetches, waits=self.waits, issued=issued)

    # -- lifecycle ------------------------------------------------------------

    @property
    def floor(self) -> int:
        """Every ID this buffer hands out from now on is above this value."""
        with self._cond:
            return self._floor

    def close(self, timeout: float = 5.0) -> None:
        """Stop the fetcher thread; later calls raise ``ServiceUnavailable``."""
        with self._cond:
            self._closed = True
            self._retire()
            self._ids, self._rest = iter(()), None
            self._cond.notify_all()
        self._fetcher.stop(timeout)

    def __enter__(self) -> DoubleBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

