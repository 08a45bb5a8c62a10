"""The double buffer: IDs from memory, the next segment fetched in the background.

Shared by the server (one buffer per biz type, fetching from the databases) and
the local generator (fetching with the ``NextSegment`` RPC); it knows neither:
it is given a ``fetch(floor) -> Segment`` callable that must return a segment
whose IDs are all above ``floor``.

What is handed out, and when the next segment is asked for, is ``SegmentPair``'s
(``idgen_core.pair``, which says why it is cheap and why IDs always increase); this
module adds the lock, the waiting, and the fetcher thread (``idgen_core.fetcher``).
The IDs in the steady state cost no lock: ``next()`` on a range iterator is a single
C call under the GIL.

Thread-safety relies on the GIL making ``next()`` on a range iterator atomic;
on a free-threaded build the hot path would need a lock.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

from idgen_core.errors import InvalidRequest, fresh
from idgen_core.fetcher import Fetcher, fetch_above
from idgen_core.pair import (
    DEFAULT_PRELOAD_AT,
    DEFAULT_RETRY,
    DEFAULT_WAIT_TIMEOUT,
    BufferState,
    Patience,
    SegmentPair,
    check_preload_at,
    check_wait_timeout,
)
from idgen_core.retry import Backoff
from idgen_core.segment import Segment

__all__ = ["DEFAULT_PRELOAD_AT", "DEFAULT_RETRY", "DEFAULT_WAIT_TIMEOUT", "BufferState",
           "DoubleBuffer", "FetchSegment", "check_preload_at"]

FetchSegment = Callable[[int], Segment]
"""``fetch(floor)``: allocate a new segment whose IDs are all above ``floor``."""

class DoubleBuffer(SegmentPair):
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
        super().__init__(name=name, preload_at=preload_at, floor=floor)
        self._wait_timeout = check_wait_timeout(wait_timeout)
        self._fetch = fetch
        self._cond = threading.Condition(threading.Lock())
        self._fetcher = Fetcher(self, self._cond, name=name, retry=retry)

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

    def next_ids_nowait(self, count: int) -> list[int]:
        """Up to ``count`` IDs, increasing: those buffered, without waiting (maybe none).
        For a caller on an event loop, which asks for the rest with ``next_ids`` in a
        worker thread; the rest then lie above these."""
        if count < 1:
            raise InvalidRequest(f"count must be at least 1, got {count}")
        result: list[int] = []
        while True:
            ids = self._ids
            result += itertools.islice(ids, count - len(result))
            if len(result) == count:
                return result
            with self._cond:
                got = self._move_on(ids)
            if got is None:
                return result
            result.append(got)
            if len(result) == count:
                return result

    # -- slow path ------------------------------------------------------------

    def _advance(self, exhausted: Iterator[int]) -> int:
        """Move past the exhausted iterator and return one ID; waits if need be."""
        patience: Patience | None = None
        with self._cond:
            while True:
                got = self._move_on(exhausted)
                if got is not None:
                    return got
                exhausted = self._ids
                # Both segments are used up: wait for the fetcher.
                patience = patience or Patience(self._wait_timeout)
                fetcher = self._fetcher
                error = fetcher.error
                if error is not None and patience.tells(error, fetcher.paused_since):
                    if not fetcher.busy and not fetcher.exhausted:
                        fetcher.error = None  # a permanent error is reported once; the next call retries
                    raise fresh(error)
                if not patience.waited:
                    patience.waited = True
                    self.waits += 1
                self._start_fetch()
                remaining = patience.remaining(error)
                if remaining > 0:
                    self._cond.wait(remaining)
                elif error is None:
                    raise self._timed_out(self._wait_timeout)

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
                    raise self._closed_error()
                low = max(floor, self._floor)
            segment = fetch_above(fetch, low)
            with self._cond:
                if self._skipped_to(segment):
                    if not self._fetcher.exhausted:  # used up stays the answer after this segment
                        self._fetcher.error = None
                    self._cond.notify_all()
                    return segment
                # the buffer moved on during the fetch: go above where it is now

    def _start_fetch(self) -> None:
        """Ask the fetcher for the next segment unless it is here. Caller holds the lock."""
        if self._next is None and not self._closed:
            self._fetcher.request()

    # -- status ---------------------------------------------------------------

    def state(self) -> BufferState:
        """A snapshot of what the buffer holds. Takes the lock, never waits on I/O; a
        ``next_id()`` running meanwhile may make ``left`` and ``issued`` one call stale."""
        with self._cond:
            return self._snapshot()

    # -- lifecycle ------------------------------------------------------------

    @property
    def floor(self) -> int:
        """Every ID this buffer hands out from now on is above this value."""
        with self._cond:
            return self._floor

    def close(self, timeout: float = 5.0) -> None:
        """Stop the fetcher thread; later calls raise ``ServiceUnavailable``."""
        with self._cond:
            self._shut()
            self._cond.notify_all()
        self._fetcher.stop(timeout)

    def __enter__(self) -> DoubleBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

