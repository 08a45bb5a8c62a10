"""The asyncio double buffer, driven by plain coroutine fetch functions (no network)."""
from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idgen_client import (
    IdSpaceExhausted,
    InvalidRequest,
    PermissionDenied,
    Segment,
    ServiceUnavailable,
    Unauthenticated,
    UnknownBizType,
)
from idgen_core.async_buffer import AsyncDoubleBuffer, WouldWait
from idgen_core import pair
from idgen_core.errors import BizTypeMoving, StorageUnavailable
from idgen_core.retry import Backoff
from tests.support.fakes import AsyncSource
from tests.support.tasks import no_task_outlives_its_test  # noqa: F401 (autouse)


async def test_ids_increase_across_many_segments_and_batches():
    async with AsyncDoubleBuffer(AsyncSource(step=7)) as buffer:
        ids = [await buffer.next_id() for _ in range(500)]
        for n in (1, 9, 25, 3, 100):
            batch = await buffer.next_ids(n)
            assert len(batch) == n
            ids += batch
    assert ids == sorted(set(ids)) and ids[0] == 1


async def test_fetches_run_as_tasks_and_the_steady_state_never_waits():
    source = AsyncSource(step=1000)
    async with AsyncDoubleBuffer(source, name="t") as buffer:
        await buffer.next_id()  # the first segment: the caller waits for it
        for _ in range(20_000):
            await buffer.next_id()
            if buffer._task is not None:
                await asyncio.sleep(0)  # other work on the loop: the fetch task runs
        assert buffer.waits == 1
    assert len(source.tasks) >= 20 and set(source.tasks) == {"idgen-fetch-t"}


async def test_each_fetch_asks_for_ids_above_the_segment_in_use():
    source = AsyncSource(step=10)
    async with AsyncDoubleBuffer(source) as buffer:
        for _ in range(100):
            await buffer.next_id()
    assert source.floors[0] == 0
    assert all(b > a for a, b in zip(source.floors, source.floors[1:]))


async def test_many_tasks_never_share_an_id_and_each_sees_increasing_ids():
    source = AsyncSource(step=97)
    source.delay = 0.001

    async def work(buffer: AsyncDoubleBuffer) -> list[int]:
        out = []
        for i in range(500):
            out.append(await buffer.next_id())
            if i % 50 == 0:
                await asyncio.sleep(0)
        return out + await buffer.next_ids(333)

    async with AsyncDoubleBuffer(source) as buffer:
        results = await asyncio.gather(*(work(buffer) for _ in range(16)))
    every = [i for r in results for i in r]
    assert len(every) == len(set(every)) == 16 * 833
    assert all(r == sorted(r) for r in results)


async def test_transient_failure_surfaces_only_when_the_buffer_is_empty_and_heals():
    source = AsyncSource(step=100)
    async with AsyncDoubleBuffer(source, retry=Backoff(0.01, 0.02)) as buffer:
        first = await buffer.next_id()
        source.fail = StorageUnavailable("db down")
        served = [await buffer.next_id() for _ in range(99)]
        assert served == list(range(first + 1, first + 100))
        with pytest.raises(ServiceUnavailable, match="db down"):
            await buffer.next_id()
        source.fail = None
        async with asyncio.timeout(5):
            while True:  # the fetch task retries on its own
                try:
                    recovered = await buffer.next_id()
                    break
                except ServiceUnavailable:
                    await asyncio.sleep(0.01)
        assert recovered > served[-1]


@pytest.mark.parametrize("error", [
    UnknownBizType("no such biz"), IdSpaceExhausted("int64 used up"), InvalidRequest("bad"),
    Unauthenticated("no token"), PermissionDenied("not this biz type")])
async def test_permanent_errors_end_the_fetch_without_retrying(error):
    source = AsyncSource()
    source.fail = error
    async with AsyncDoubleBuffer(source, retry=Backoff(0.001, 0.001)) as buffer:
        with pytest.raises(type(error)):
            await buffer.next_id()
        await asyncio.sleep(0.05)  # 50 retries' time, were it retrying
        assert buffer._task is None and len(source.floors) == 1
        with pytest.raises(type(error)):
            await buffer.next_id()
        await asyncio.sleep(0.05)
        # Each caller asks at most once more (none at all once the ID space is used up).
        assert len(source.floors) == (1 if isinstance(error, IdSpaceExhausted) else 2)


async def test_once_the_id_space_is_used_up_a_skip_past_segment_is_followed_by_the_same_answer():
    source = AsyncSource()
    source.fail = IdSpaceExhausted("int64 used up")

    async def skipped(low: int) -> Segment:
        return Segment.claimed(low, low + 2)

    async with AsyncDoubleBuffer(source, wait_timeout=1, retry=Backoff(0.001, 0.001)) as buffer:
        with pytest.raises(IdSpaceExhausted):
            await buffer.next_id()
        await buffer.skip_past(0, fetch=skipped)
        assert await buffer.next_ids(2) == [1, 2]
        with pytest.raises(IdSpaceExhausted, match="int64 used up"):  # not "no segment came"
            await buffer.next_id()
    assert source.floors == [0]  # no fetch can help: it is not tried again


async def test_a_caller_waits_out_a_pause_asked_about_at_the_first_step_of_the_backoff():
    # As the thread-backed buffer (tests/test_buffer.py): 30 attempts at the first step.
    source = AsyncSource(step=100)
    source.fail, source.failing = BizTypeMoving("being moved"), 30
    async with AsyncDoubleBuffer(source, retry=Backoff(0.01, 60.0)) as buffer:
        assert await buffer.next_id() == 1
        assert len(source.floors) == 31 and buffer.waits == 1


async def test_a_pause_longer_than_the_caller_waits_is_told_as_itself(monkeypatch):
    source = AsyncSource()
    source.fail = BizTypeMoving("being moved")
    async with AsyncDoubleBuffer(source, wait_timeout=0.2, retry=Backoff(0.01, 0.01)) as buffer:
        started = time.monotonic()
        with pytest.raises(BizTypeMoving, match="being moved"):
            await buffer.next_id()
        assert time.monotonic() - started >= 0.2
    monkeypatch.setattr(pair, "PAUSE_WAIT", 0.2)
    async with AsyncDoubleBuffer(source, wait_timeout=60, retry=Backoff(0.01, 0.01)) as buffer:
        started = time.monotonic()
        with pytest.raises(BizTypeMoving):
            await buffer.ready()
        assert 0.2 <= time.monotonic() - started < 30


async def test_a_pause_older_than_pause_wait_is_told_at_once_to_later_callers(monkeypatch):
    monkeypatch.setattr(pair, "PAUSE_WAIT", 0.2)
    source = AsyncSource()
    source.fail = BizTypeMoving("being moved")
    async with AsyncDoubleBuffer(source, retry=Backoff(0.01, 0.01)) as buffer:
        with pytest.raises(BizTypeMoving):
            await buffer.next_id()
        with pytest.raises(BizTypeMoving):
            await buffer.next_id()
        assert buffer.waits == 1


async def test_a_source_that_breaks_the_floor_contract_is_not_trusted():
    async def backwards(floor: int) -> Segment:
        return Segment(1, 10)

    async with AsyncDoubleBuffer(backwards, floor=100, retry=Backoff(0.01, 0.01)) as buffer:
        with pytest.raises(ServiceUnavailable, match="not above 100"):
            await buffer.next_id()


async def test_waiting_callers_give_up_after_the_wait_timeout_and_the_loop_runs_on():
    source = AsyncSource()
    source.gate = asyncio.Event()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    async with AsyncDoubleBuffer(source, wait_timeout=0.2) as buffer:
        with pytest.raises(ServiceUnavailable, match="within 0.2s"):
            await buffer.next_id()
    ticker.cancel()
    assert ticks >= 10  # the loop kept running while the caller waited


async def test_nowait_draws_what_is_buffered_and_says_when_it_would_wait():
    source = AsyncSource(step=5)
    source.gate = asyncio.Event()
    async with AsyncDoubleBuffer(source, name="orders", preload_at=0.0) as buffer:
        with pytest.raises(WouldWait, match="orders"):
            buffer.next_id_nowait()
        source.gate.set()
        await buffer.ready()
        assert [buffer.next_id_nowait() for _ in range(5)] == [1, 2, 3, 4, 5]


async def test_skip_past_moves_above_the_floor_and_ids_keep_increasing():
    async with AsyncDoubleBuffer(AsyncSource(step=10)) as buffer:
        before = await buffer.next_ids(3)
        segment = await buffer.skip_past(1000)
        after = await buffer.next_ids(3)
    assert segment.start > 1000 and after[0] == segment.start and before[-1] < after[0]


async def test_closing_cancels_the_fetch_in_flight_and_wakes_its_waiters():
    source = AsyncSource()
    source.gate = asyncio.Event()  # the fetch hangs
    buffer = AsyncDoubleBuffer(source)
    waiter = asyncio.create_task(buffer.next_id())
    await asyncio.sleep(0.01)
    task = buffer._task
    assert task is not None and not task.done()
    await buffer.aclose()
    assert task.cancelled()
    with pytest.raises(ServiceUnavailable, match="closed"):
        await waiter
    with pytest.raises(ServiceUnavailable, match="closed"):
        await buffer.next_id()


async def test_a_cancelled_caller_leaves_the_buffer_working():
    source = AsyncSource(step=10)
    source.gate = asyncio.Event()
    async with AsyncDoubleBuffer(source) as buffer:
        waiter = asyncio.create_task(buffer.next_id())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        source.gate.set()
        assert await buffer.next_id() == 1


@settings(max_examples=40, deadline=None)
@given(step=st.integers(1, 40), preload_at=st.floats(0, 0.95),
       counts=st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_any_mix_of_calls_yields_unique_increasing_ids(step, preload_at, counts):
    async def run() -> list[int]:
        ids: list[int] = []
        async with AsyncDoubleBuffer(AsyncSource(step=step), preload_at=preload_at) as buffer:
            for n in counts:
                ids += [await buffer.next_id()] if n % 2 else await buffer.next_ids(n)
        return ids

    ids = asyncio.run(run())
    assert ids == sorted(set(ids))


async def test_a_fetch_cancelled_before_it_ran_does_not_stop_later_fetches():
    source = AsyncSource(step=10)
    async with AsyncDoubleBuffer(source, wait_timeout=2) as buffer:
        buffer._start_fetch()
        buffer._task.cancel()  # as a shutdown helper cancelling every task would
        await asyncio.sleep(0)
        assert await buffer.next_id() == 1


async def test_asking_for_no_ids_is_refused():
    async with AsyncDoubleBuffer(AsyncSource()) as buffer:
        with pytest.raises(InvalidRequest, match="count"):
            await buffer.next_ids(0)


async def test_skipping_past_a_negative_floor_is_refused():
    async with AsyncDoubleBuffer(AsyncSource()) as buffer:
        with pytest.raises(InvalidRequest, match="floor"):
            await buffer.skip_past(-1)


async def test_a_fetch_that_fails_with_a_bug_is_told_naming_the_biz_type():
    source = AsyncSource()
    source.fail = RuntimeError("driver bug")
    async with AsyncDoubleBuffer(source, name="orders", retry=Backoff(0.01, 0.01)) as buffer:
        with pytest.raises(ServiceUnavailable, match="'orders'"):
            await buffer.next_id()


async def test_each_caller_that_finds_the_buffer_empty_counts_one_wait():
    source = AsyncSource(step=10)
    async with AsyncDoubleBuffer(source, preload_at=0.5) as buffer:
        await buffer.next_ids(10)  # waits for the first segment; the preload is asked for, not run
        await buffer.next_id()  # nothing buffered: waits for the preload
        assert buffer.waits == 2


async def test_a_caller_of_ready_waiting_out_a_pause_counts_one_wait():
    source = AsyncSource(step=100)
    source.fail, source.failing = BizTypeMoving("being moved"), 5
    async with AsyncDoubleBuffer(source, retry=Backoff(0.01, 60.0)) as buffer:
        await buffer.ready()  # woken by each of the 5 failed attempts, waiting on
        assert len(source.floors) == 6 and buffer.waits == 1


async def test_a_pause_is_told_once_waited_out_even_while_the_next_attempt_hangs(monkeypatch):
    monkeypatch.setattr(pair, "PAUSE_WAIT", 0.1)
    attempts = 0
    never = asyncio.Event()

    async def fetch(floor: int) -> Segment:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise BizTypeMoving("being moved")
        await never.wait()  # the retry gets no answer: no news wakes the caller
        raise AssertionError("unreachable")

    async with AsyncDoubleBuffer(fetch, wait_timeout=300, retry=Backoff(0.01, 0.01)) as buffer:
        async with asyncio.timeout(20):  # not the whole wait_timeout
            with pytest.raises(BizTypeMoving):
                await buffer.next_id()


async def test_after_a_transient_failure_the_fetch_retries_on_its_own():
    source = AsyncSource(step=10)
    source.fail, source.failing = StorageUnavailable("db down"), 1
    async with AsyncDoubleBuffer(source, retry=Backoff(0.01, 0.01)) as buffer:
        with pytest.raises(ServiceUnavailable, match="db down"):
            await buffer.next_id()
        retrying = buffer._task
        assert retrying is not None
        await asyncio.wait([retrying])  # nobody asks for an ID meanwhile
        assert buffer.next_id_nowait() == 1


async def test_crossing_the_threshold_with_the_next_segment_here_fetches_no_other():
    source = AsyncSource(step=10)
    async with AsyncDoubleBuffer(source, preload_at=0.5) as buffer:
        await buffer.next_ids(6)  # past the threshold: the preload is asked for, not run yet
        await buffer.skip_past(100)  # a new current segment, the preload still to run
        await asyncio.wait([buffer._task])  # it runs, above the new segment
        preloaded = buffer.state().next
        assert preloaded is not None
        await buffer.next_ids(6)  # past the new segment's threshold
        assert buffer._task is None and buffer.state().next == preloaded


async def test_after_skip_past_a_caller_that_runs_dry_awaits_the_fetch_under_way():
    source = AsyncSource(step=10)
    async with AsyncDoubleBuffer(source, preload_at=0.5) as buffer:
        await buffer.next_ids(6)  # past the threshold: the preload is asked for, not run yet
        segment = await buffer.skip_past(100)
        assert await buffer.next_ids(len(segment)) == list(segment.ids())
        assert await buffer.next_id() > segment.end  # from the preload, awaited


async def test_closing_twice_is_harmless_after_a_fetch_was_cancelled():
    async with AsyncDoubleBuffer(AsyncSource(step=10), preload_at=0.0) as buffer:
        await buffer.next_id()  # preload_at=0: the next segment is asked for at once
        assert buffer._task is not None
        await buffer.aclose()  # closed early; leaving the block closes it again
    with pytest.raises(ServiceUnavailable, match="closed"):
        await buffer.next_id()


@pytest.mark.parametrize("left", [1, 3])
async def test_ready_returns_at_once_while_the_current_segment_has_ids_and_a_fetch_is_held(left):
    source = AsyncSource(step=10)
    async with AsyncDoubleBuffer(source) as buffer:
        await buffer.next_id()
        source.gate = asyncio.Event()  # the preload fetch started below hangs until set
        for _ in range(9 - left):
            await buffer.next_id()
        ready = asyncio.create_task(buffer.ready())
        for _ in range(3):
            await asyncio.sleep(0)
        assert ready.done(), f"ready() waits on a fetch although {left} IDs are buffered"
        source.gate.set()


@pytest.mark.parametrize("preload_at,before", [(0.5, 5), (0.1, 1)])
async def test_the_next_segment_is_asked_for_once_the_preload_threshold_is_crossed_not_before(
        preload_at, before):
    async with AsyncDoubleBuffer(AsyncSource(step=10), preload_at=preload_at) as buffer:
        assert await buffer.next_ids(before) == list(range(1, before + 1))  # up to the threshold
        assert buffer._task is None  # no fetch asked for yet
        await buffer.next_id()  # the first ID past it
        assert buffer._task is not None


async def test_a_preload_answered_at_the_floor_skip_past_moved_to_is_fetched_again_above_it():
    floors: list[int] = []
    asked, answer = asyncio.Event(), asyncio.Event()

    async def fetch(floor: int) -> Segment:
        floors.append(floor)
        if len(floors) == 2:  # the preload, answered only once skip_past moved the buffer on
            asked.set()
            await answer.wait()
            return Segment(20, 29)  # above the floor it was asked for, but not above 20
        return Segment.claimed(floor, floor + 10)

    async def skipped(floor: int) -> Segment:
        return Segment(16, 20)

    async with AsyncDoubleBuffer(fetch, preload_at=0.5) as buffer:
        assert await buffer.next_ids(6) == [1, 2, 3, 4, 5, 6]  # past the threshold: the preload
        await asked.wait()
        await buffer.skip_past(15, fetch=skipped)  # the floor is now 20
        answer.set()
        await asyncio.wait([buffer._task])  # nobody asks for an ID meanwhile
        assert floors == [0, 10, 20] and buffer.state().next == Segment(21, 30)
        assert await buffer.next_ids(6) == [16, 17, 18, 19, 20, 21]
