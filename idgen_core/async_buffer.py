"""The double buffer for asyncio: IDs from memory, the next segment fetched by a task.

The same buffer as ``DoubleBuffer`` (what is handed out, and when the next segment is asked
for, is ``SegmentPair``'s, in ``idgen_core.pair``), for code that runs on an event loop: its
``fetch(floor)`` is a coroutine function, each fetch is a task on the running loop, and a
caller that finds both segments used up awaits the fetch instead of blocking the loop.

In the steady state ``await buffer.next_id()`` suspends nothing: the coroutine returns
``next()`` of a range iterator without awaiting, so it costs about what any coroutine call
costs (benchmarks/RESULTS.md). Failed fetches are retried with the shared backoff until one
succeeds, the error is one retrying cannot fix (``idgen_core.fetcher.is_permanent``), or the
buffer closes; callers see the last failure only once the buffered IDs are gone.

Not thread-safe: one event loop uses it. Close it (``aclose()``, or ``async with``): a fetch
in flight is cancelled and awaited, so no task outlives the buffer.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator

from idgen_core.errors import IdGenError, IdSpaceExhausted, InvalidRequest, fresh
from idgen_core.fetcher import FailureLog, check_above, is_permanent
from idgen_core.pair import (
    DEFAULT_PRELOAD_AT,
    DEFAULT_RETRY,
    DEFAULT_WAIT_TIMEOUT,
    BufferState,
    Patience,
    SegmentPair,
    check_wait_timeout,
)
from idgen_core.retry import Backoff
from idgen_core.segment import Segment

__all__ = ["AsyncDoubleBuffer", "AsyncFetchSegment", "WouldWait"]

AsyncFetchSegment = Callable[[int], Awaitable[Segment]]
"""``await fetch(floor)``: allocate a new segment whose IDs are all above ``floor``."""


class WouldWait(Exception):
    """``next_id_nowait()`` found nothing buffered: ``await ready()``, then call it again."""


class AsyncDoubleBuffer(SegmentPair):
    """Hands out unique, increasing IDs from segments, preloading the next one; for asyncio.

    ``next_id()`` awaits nothing while IDs are buffered; when both segments are used up it
    waits for the fetch, for at most ``wait_timeout`` seconds, then raises
    ``ServiceUnavailable``. Errors are ``IdGenError`` subclasses, as ``DoubleBuffer``'s.
    Use it from one event loop, inside coroutines (a fetch is a task on the running loop).
    """

    def __init__(
        self,
        fetch: AsyncFetchSegment,
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
        self._retry = retry
        self._task: asyncio.Task[None] | None = None  # the fetch asked for or running
        self._error: IdGenError | None = None  # the last failed fetch, for callers
        self._exhausted = False  # the ID space is used up: no more fetches
        self._failures = FailureLog(name)
        self._changed: asyncio.Event | None = None  # set when a fetch ends or fails

    # -- hot path -------------------------------------------------------------

    async def next_id(self) -> int:
        """The next ID: unique, and greater than every ID this buffer gave before."""
        ids = self._ids
        try:
            return next(ids)
        except StopIteration:
            return await self._advance(ids)

    async def next_ids(self, count: int) -> list[int]:
        """``count`` IDs in increasing order (they may span segments)."""
        if count < 1:
            raise InvalidRequest(f"count must be at least 1, got {count}")
        result: list[int] = []
        while True:
            ids = self._ids
            result += itertools.islice(ids, count - len(result))
            if len(result) == count:
                return result
            result.append(await self._advance(ids))
            if len(result) == count:
                return result

    def next_id_nowait(self) -> int:
        """The next ID if one is buffered, else ``WouldWait`` (then ``await ready()``).
        For callers that must not suspend between reading their state and drawing an ID."""
        ids = self._ids
        try:
            return next(ids)
        except StopIteration:
            got = self._move_on(ids)
            if got is None:
                raise WouldWait(self._name) from None
            return got

    async def ready(self) -> None:
        """Return once an ID can be had without waiting; raises what ``next_id`` would."""
        patience: Patience | None = None
        while not self._has_ids():
            if self._closed:
                raise self._closed_error()
            patience = await self._wait(patience)

    # -- slow path ------------------------------------------------------------

    async def _advance(self, exhausted: Iterator[int]) -> int:
        patience: Patience | None = None
        while True:
            got = self._move_on(exhausted)
            if got is not None:
                return got
            exhausted = self._ids
            patience = await self._wait(patience)

    async def _wait(self, patience: Patience | None) -> Patience:
        """Wait once for the fetch to end or fail, within ``patience`` (None: from now), which
        is returned for the next wait. Raises the fetch's failure (a pause once waited out),
        or ``ServiceUnavailable`` once ``wait_timeout`` is over."""
        patience = patience or Patience(self._wait_timeout)
        error = self._error
        if error is not None and patience.tells(error, self._failures.paused_since):
            if not self._fetching() and not self._exhausted:
                self._error = None  # a permanent error is reported once; the next call retries
            raise fresh(error)
        if not patience.waited:
            patience.waited = True
            self.waits += 1
        self._start_fetch()
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        remaining = patience.remaining(error)
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                await changed.wait()
        except TimeoutError:
            if error is None:
                raise self._timed_out(self._wait_timeout) from None
        return patience

    def _notify(self) -> None:
        """Wake every caller waiting for a fetch."""
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def _fetching(self) -> bool:
        """Whether a fetch is asked for or runs."""
        return self._task is not None and not self._task.done()

    def _start_fetch(self) -> None:
        if self._next is not None or self._closed or self._exhausted or self._fetching():
            return
        self._error = None
        task = asyncio.get_running_loop().create_task(
            self._fetch_one(), name=f"idgen-fetch-{self._name}")
        # A callback, not a finally in the task: a task cancelled before its first step
        # runs no code of its own, and the buffer would wait for it for ever.
        task.add_done_callback(self._fetch_ended)
        self._task = task

    def _fetch_ended(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        self._notify()

    async def _fetch_one(self) -> None:
        """Fetch one segment, retrying transient failures until one succeeds or closed."""
        attempt = 0
        while not self._closed:
            floor = self._floor
            try:
                segment = check_above(await self._fetch(floor), floor)
            except Exception as exc:  # noqa: BLE001 - every failure is handed to callers
                self._error = failure = self._failures.failed(exc)
                if isinstance(failure, IdSpaceExhausted):
                    self._exhausted = True
                if is_permanent(failure):
                    return
                self._notify()
                attempt = self._failures.next_attempt(attempt)
                await asyncio.sleep(self._retry.delay(attempt))
                continue
            if self._take(segment):
                self._error = None
                self._failures.clear()
                return
            # skip_past() moved the floor while this fetch ran: installing the
            # segment would hand out IDs below ones already given. Fetch again.

    async def skip_past(self, floor: int, *, fetch: AsyncFetchSegment | None = None) -> Segment:
        """Hand out only IDs above ``floor`` from now on; awaits one fetch.

        As ``DoubleBuffer.skip_past``: a segment above ``max(floor, self.floor)``, fetched
        with ``fetch`` (default: the buffer's own), becomes current; the IDs still buffered
        are dropped (wasted, never reissued). A failed fetch raises and changes nothing.
        """
        if floor < 0:
            raise InvalidRequest(f"floor must be at least 0, got {floor}")
        fetch = fetch or self._fetch
        while True:
            if self._closed:
                raise self._closed_error()
            low = max(floor, self._floor)
            segment = check_above(await fetch(low), low)
            if self._skipped_to(segment):
                if not self._exhausted:  # used up stays the answer after this segment
                    self._error = None
                self._notify()
                return segment
            # the buffer moved on during the fetch: go above where it is now

    # -- status and lifecycle -------------------------------------------------

    def state(self) -> BufferState:
        """A snapshot of what the buffer holds."""
        return self._snapshot()

    @property
    def floor(self) -> int:
        """Every ID this buffer hands out from now on is above this value."""
        return self._floor

    async def aclose(self) -> None:
        """Hand out nothing more and cancel the fetch in flight, awaiting its end; callers
        waiting for it, and later calls, raise ``ServiceUnavailable``."""
        self._shut()
        self._notify()
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            self._task = None

    async def __aenter__(self) -> AsyncDoubleBuffer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
