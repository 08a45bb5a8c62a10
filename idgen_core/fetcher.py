"""The double buffer's fetcher: one background thread that fetches the next segment.

It is started once and then woken with a notify: it is the caller that crosses a
buffer's preload threshold that asks for a fetch, and starting a thread per fetch
cost that call 40 µs at the median and 1.5 ms at p90 on the benchmark machine
under load (``Thread.start()`` waits for the new thread to run), where a notify
costs 9 µs and 25 µs (benchmarks/RESULTS.md). The price: while callers keep the
GIL busy, the woken thread starts its fetch up to one switch interval (5 ms)
later, against segments that dynamic step sizing makes last a second or more.

A failed fetch is retried with the shared backoff until one succeeds, the error
is one retrying cannot fix, or the buffer closes; callers see the last failure
only once the buffered IDs are gone. While it waits the thread holds its buffer
only weakly, so that a buffer nobody closed is still garbage-collected, and the
thread then ends within ``IDLE_CHECK`` seconds.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from idgen_core import pair
from idgen_core.errors import (
    BizTypeMoving,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    PermissionDenied,
    ServiceUnavailable,
    Unauthenticated,
    UnknownBizType,
    fresh,
)
from idgen_core.retry import Backoff
from idgen_core.segment import Segment

__all__ = ["IDLE_CHECK", "Fetcher", "Owner", "FailureLog", "as_idgen_error", "check_above", "fetch_above", "is_permanent"]

log = logging.getLogger(__name__)

IDLE_CHECK = 5.0
"""Seconds between the idle thread's checks that its buffer still exists."""

_PERMANENT = (UnknownBizType, IdSpaceExhausted, InvalidRequest, Unauthenticated, PermissionDenied)


def is_permanent(error: IdGenError) -> bool:
    """Whether retrying a fetch cannot fix ``error``: then a fetcher stops and hands it to
    callers. A token that is refused stays refused until the process is given another one."""
    return isinstance(error, _PERMANENT)


class Owner(Protocol):
    """What the fetcher needs of its buffer (``DoubleBuffer``), always under the shared lock."""

    _floor: int
    """Every segment fetched must lie above this."""

    _fetch: Callable[[int], Segment]
    """``fetch(floor)``: where segments come from."""

    def _take(self, segment: Segment) -> bool:
        """Keep ``segment`` as the next one; False if it is no longer above the floor."""
        ...


def fetch_above(fetch: Callable[[int], Segment], floor: int) -> Segment:
    """``fetch(floor)``, refused unless every ID of the segment is above ``floor``."""
    return check_above(fetch(floor), floor)


def check_above(segment: Segment, floor: int) -> Segment:
    """``segment`` if every ID of it is above ``floor``, else ``ServiceUnavailable``: a
    source that breaks this would make a buffer's IDs go back."""
    if segment.start <= floor:
        raise ServiceUnavailable(
            f"the segment source returned IDs from {segment.start}, not above {floor}")
    return segment


class Fetcher:
    """Fetches segments for one ``DoubleBuffer`` in one background thread.

    Every attribute is guarded by the buffer's condition, which the fetcher
    shares: ``busy`` (a fetch is asked for or runs), ``error`` (the last failed
    fetch, for callers) and ``exhausted`` (the ID space is used up: no more
    fetches). A fetched segment goes to the buffer's ``_take``.
    """

    def __init__(self, buffer: Owner, cond: threading.Condition, *, name: str,
                 retry: Backoff) -> None:
        # Only a weak reference, and the buffer's fetch taken from it per attempt: the
        # thread must hold nothing that leads back to the buffer (a fetch may well do,
        # e.g. a method of the buffer's owner), or an unclosed buffer would live forever.
        self._buffer = weakref.ref(buffer)
        self._cond = cond
        self._name = name
        self._retry = retry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = FailureLog(name)
        self.busy = False
        self.error: IdGenError | None = None
        self.exhausted = False

    def request(self) -> None:
        """Ask for a fetch unless one is asked for or runs. Caller holds the lock."""
        if self.busy or self.exhausted or self._stop.is_set():
            return
        self.error = None
        self.busy = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._cond.notify_all()
            return
        self._thread = threading.Thread(target=self._run, name=f"idgen-fetch-{self._name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """End the thread (a fetch in flight is finished and dropped); waits ``timeout``."""
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        """The thread: one fetch each time ``request`` asks, until stopped or orphaned."""
        while True:
            with self._cond:
                if self._stop.is_set() or self._buffer() is None:
                    return
                if not self.busy:
                    self._cond.wait(IDLE_CHECK)
                    continue
            self._fetch_one()

    def _fetch_one(self) -> None:
        """Fetch one segment, retrying transient failures until one succeeds or stopped."""
        attempt = 0
        while True:
            with self._cond:
                buffer = self._buffer()
                if buffer is None:  # collected: nobody will take a segment
                    self.busy = False
                    return
                floor, fetch = buffer._floor, buffer._fetch
                del buffer
            try:
                segment = fetch_above(fetch, floor)
            except Exception as exc:  # noqa: BLE001 - every failure is handed to callers
                # A copy: the original's traceback holds the fetch's frames, which may
                # lead back to the buffer, and this thread is about to wait with it.
                failure: IdGenError | None = self._failures.failed(exc)
            else:
                failure = None
            del fetch
            with self._cond:
                if failure is not None:
                    if self._failed(failure):
                        return
                else:
                    buffer = self._buffer()
                    if buffer is None or buffer._take(segment):
                        self.error = None
                        self._failures.clear()
                        self.busy = False
                        self._cond.notify_all()
                        return
                    # skip_past() moved the floor while this fetch ran: installing the
                    # segment would hand out IDs below ones already given. Fetch again.
                    continue
            attempt = self._failures.next_attempt(attempt)
            if self._stop.wait(self._retry.delay(attempt)):
                with self._cond:
                    self.busy = False
                    self._cond.notify_all()
                return

    @property
    def paused_since(self) -> float | None:
        """When fetches began failing with a pause (``BizTypeMoving``), if they still do."""
        return self._failures.paused_since

    def _failed(self, error: IdGenError) -> bool:
        """Record a failed fetch for callers; True if no retry should follow.
        Caller holds the lock."""
        self.error = error
        if isinstance(error, IdSpaceExhausted):
            self.exhausted = True
        done = is_permanent(error) or self._stop.is_set()
        if done:
            self.busy = False
        self._cond.notify_all()
        return done


class FailureLog:
    """Turns each failed fetch into the error callers get, logs each kind once, and spaces
    the retries.

    Once per kind of failure, not once per retry: a refusal lasts until a person acts, and
    the retries would bury everything else in the log. A failure that is not one of
    idgen's errors (a bug, an unforeseen driver error) is logged with its traceback.

    A pause (``BizTypeMoving``: ``idgen add-db`` moving the biz type) ends in moments and
    callers wait it out (``idgen_core.pair.Patience``), so for its first ``PAUSE_WAIT``
    seconds it is asked about again at the backoff's first step; a pause older than that is a
    move stopped halfway, retried as any failure, and callers are told of it at once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._logged: str | None = None
        self.paused_since: float | None = None
        """When fetches began failing with a pause, if they still do (monotonic)."""

    def failed(self, exc: Exception) -> IdGenError:
        """The error to hand callers for ``exc``: a copy, without the fetch's frames."""
        failure = fresh(as_idgen_error(exc, self._name))
        paused = isinstance(failure, BizTypeMoving)
        if not paused:
            self.paused_since = None
        elif self.paused_since is None:
            self.paused_since = time.monotonic()
        # A pause names the database that refused, and with several frozen the allocator
        # takes them in turn: each would look new. It is one kind.
        kind = BizTypeMoving.__name__ if paused else str(failure)
        if kind != self._logged:
            self._logged = kind
            if isinstance(exc, IdGenError):
                log.warning("fetching a segment for %r failed: %s", self._name, failure)
            else:  # what callers are told names the generator and the kind already
                log.error("%s", failure, exc_info=exc)
        return failure

    def next_attempt(self, attempt: int) -> int:
        """The number of the retry after the failed ``attempt``, which spaces it
        (``Backoff.delay``): the first step again while a pause is young."""
        young = self.paused_since is not None and time.monotonic() - self.paused_since < pair.PAUSE_WAIT
        return 1 if young else attempt + 1

    def clear(self) -> None:
        """A fetch succeeded: the next failure is news again."""
        self._logged = None
        self.paused_since = None


def as_idgen_error(exc: Exception, name: str) -> IdGenError:
    """``exc`` as callers get it: an ``IdGenError`` as it is; anything else (a bug, an
    unforeseen driver error) as ``ServiceUnavailable``."""
    if isinstance(exc, IdGenError):
        return exc
    return ServiceUnavailable(
        f"fetching a segment for {name!r} failed ({type(exc).__name__}): retry later")
