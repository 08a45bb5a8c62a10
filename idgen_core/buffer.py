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
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

from idgen_core.errors import (
    ConfigError,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    ServiceUnavailable,
    UnknownBizType,
)
from idgen_core.retry import Backoff
from idgen_core.segment import Segment

__all__ = ["DEFAULT_PRELOAD_AT", "DEFAULT_RETRY", "DoubleBuffer", "FetchSegment"]

log = logging.getLogger(__name__)

FetchSegment = Callable[[int], Segment]
"""``fetch(floor)``: allocate a new segment whose IDs are all above ``floor``."""

DEFAULT_PRELOAD_AT = 0.2
"""Fetch the next segment once 20% of the current one is used (Tinyid's figure):
the remaining 80% is the time the fetch has before a caller would wait."""

DEFAULT_RETRY = Backoff(initial=0.05, maximum=2.0)
"""How the fetcher thread spaces its attempts after a failed fetch (until one succeeds)."""

# Errors that retrying cannot fix: the fetcher stops and hands them to callers.
_PERMANENT = (UnknownBizType, IdSpaceExhausted, InvalidRequest)


def _fetch_above(fetch: FetchSegment, floor: int) -> Segment:
    """``fetch(floor)``, refused unless every ID of the segment is above ``floor``."""
    segment = fetch(floor)
    if segment.start <= floor:
        raise ServiceUnavailable(
            f"the segment source returned IDs from {segment.start}, not above {floor}")
    return segment


def _as_idgen_error(exc: Exception, name: str) -> IdGenError:
    """``exc`` as callers get it: an ``IdGenError`` as it is; anything else (a bug, an
    unforeseen driver error) logged here and reported as ``ServiceUnavailable``."""
    if isinstance(exc, IdGenError):
        return exc
    log.error("fetching a segment for %r failed", name, exc_info=exc)
    return ServiceUnavailable(
        f"fetching a segment for {name!r} failed ({type(exc).__name__}): retry later")


def _clone(error: IdGenError) -> IdGenError:
    """A fresh exception to raise in one caller's thread (tracebacks are per raise)."""
    return type(error)(*error.args)


_FETCHER_IDLE_CHECK = 5.0
"""Seconds between the idle fetcher thread's checks that its buffer still exists."""


def _run_fetcher(buffer_ref: weakref.ref[DoubleBuffer], cond: threading.Condition) -> None:
    """The fetcher thread: one ``_fetch_next()`` each time ``_start_fetch`` asks, until closed.

    While it waits it holds its buffer only weakly, so that a buffer nobody closed
    is still garbage-collected, and its thread then ends within the idle check.
    """
    while True:
        buffer = buffer_ref()
        if buffer is None:
            return
        with cond:
            if buffer._closed:
                return
            asked = buffer._fetching
            if not asked:
                del buffer
                cond.wait(_FETCHER_IDLE_CHECK)
                continue
        buffer._fetch_next()
        del buffer


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
        wait_timeout: float = 30.0,
        retry: Backoff = DEFAULT_RETRY,
    ) -> None:
        if not 0.0 <= preload_at < 1.0:
            raise ConfigError(f"preload_at must be in [0, 1), got {preload_at}")
        if floor < 0:
            raise ConfigError(f"floor must be at least 0, got {floor}")
        if not wait_timeout > 0:
            raise ConfigError(f"wait_timeout must be positive, got {wait_timeout}")
        self._fetch = fetch
        self._name = name
        self._preload_at = preload_at
        self._wait_timeout = wait_timeout
        self._retry = retry
        self._cond = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        # Guarded by _cond, except _ids, which the hot path reads without it.
        self._ids: Iterator[int] = iter(())
        self._rest: range | None = None  # the part of the current segment after the threshold
        self._next: Segment | None = None
        self._floor = floor
        self._fetching = False  # true while a fetch is asked for or runs
        self._fetcher: threading.Thread | None = None  # the fetcher thread, once started
        self._error: IdGenError | None = None  # the last failed fetch
        self._logged: str | None = None  # the last failure logged
        self._exhausted = False
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
                if self._error is not None:
                    error = self._error
                    if not self._fetching and not self._exhausted:
                        self._error = None  # a permanent error is reported once; the next call retries
                    raise _clone(error)
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
            segment = _fetch_above(fetch, low)
            with self._cond:
                if self._closed:
                    raise ServiceUnavailable(f"the ID generator for {self._name!r} is closed")
                if segment.start <= self._floor:
                    continue  # the buffer moved on during the fetch: go above where it is now
                self.fetches += 1
                self._error = None
                self._install(segment)
                self._cond.notify_all()
                return segment

    def _start_fetch(self) -> None:
        """Ask the fetcher thread for a fetch unless one runs. Caller holds the lock.

        The thread is started once and then woken with a notify: it is the caller
        that crosses the preload threshold that runs this, and starting a thread
        per fetch cost that call 40 µs at the median and 1.5 ms at p90 on the
        benchmark machine under load (``Thread.start()`` waits for the new thread
        to run), where a notify costs 9 µs and 25 µs (benchmarks/RESULTS.md). The
        price: while callers keep the GIL busy, the woken thread starts its fetch
        up to one switch interval (5 ms) later, against segments that dynamic
        step sizing makes last a second or more.
        """
        if self._fetching or self._next is not None or self._exhausted or self._closed:
            return
        self._error = None
        thread = self._fetcher
        if thread is not None and thread.is_alive():
            self._fetching = True
            self._cond.notify_all()
            return
        thread = threading.Thread(
            target=_run_fetcher, args=(weakref.ref(self), self._cond),
            name=f"idgen-fetch-{self._name}", daemon=True,
        )
        self._fetcher, self._fetching = thread, True
        thread.start()

    def _fetch_next(self) -> None:
        """Fetch one segment, retrying transient failures (``retry``) until closed."""
        attempt = 0
        while True:
            with self._cond:
                floor = self._floor
            try:
                segment = _fetch_above(self._fetch, floor)
            except Exception as exc:  # noqa: BLE001 - every failure is handed to callers
                with self._cond:
                    if self._failed(_as_idgen_error(exc, self._name)):
                        return
            else:
                with self._cond:
                    if segment.start > self._floor or self._closed:
                        self._fetched(segment)
                        return
                    # skip_past() moved the floor while this fetch ran: installing the
                    # segment would hand out IDs below ones already given. Fetch again.
                    continue
            attempt += 1
            if self._stop.wait(self._retry.delay(attempt)):
                with self._cond:
                    self._fetching = False
                    self._cond.notify_all()
                return

    def _fetched(self, segment: Segment) -> None:
        """Keep ``segment`` as the next one. Caller holds the lock."""
        self.fetches += 1
        self._error = None
        self._logged = None
        if not self._closed:
            self._next = segment
        self._fetching = False
        self._cond.notify_all()

    def _failed(self, error: IdGenError) -> bool:
        """Record a failed fetch for callers; True if the fetcher should stop retrying.
        Caller holds the lock."""
        # Once per kind of failure, not once per retry: a refusal lasts until a
        # person acts, and the retries would bury everything else in the log.
        if str(error) != self._logged:
            log.warning("fetching a segment for %r failed: %s", self._name, error)
            self._logged = str(error)
        self._error = error
        if isinstance(error, IdSpaceExhausted):
            self._exhausted = True
        stop = isinstance(error, _PERMANENT) or self._closed
        if stop:
            self._fetching = False
        self._cond.notify_all()
        return stop

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
            self._ids, self._rest = iter(()), None
            fetcher = self._fetcher
            self._cond.notify_all()
        self._stop.set()
        if fetcher is not None and fetcher is not threading.current_thread():
            fetcher.join(timeout)

    def __enter__(self) -> DoubleBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

