"""The double buffer, driven by plain fetch functions (no network, no database)."""
from __future__ import annotations

import gc
import threading
import time
import weakref
from types import SimpleNamespace

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
from idgen_core.buffer import DoubleBuffer
from idgen_core import fetcher as fetcher_module
from idgen_core import pair
from idgen_core.errors import BizTypeMoving, ConfigError, IdGenError, StorageUnavailable
from idgen_core.fetcher import IDLE_CHECK, FailureLog
from idgen_core.retry import Backoff
from tests.support.fakes import Clock, Source, residue_sources, spy
from tests.support.threads import run_threads
from tests.support.waiting import eventually, poll, wait_until


def test_ids_increase_across_many_segments():
    with DoubleBuffer(Source(step=7)) as buffer:
        ids = [buffer.next_id() for _ in range(1000)]
    assert ids == sorted(set(ids)) and ids[0] == 1


def test_batches_are_increasing_and_exact_across_segment_switches():
    with DoubleBuffer(Source(step=10)) as buffer:
        batches = [buffer.next_ids(n) for n in (1, 9, 25, 3, 100)]
    flat = [i for b in batches for i in b]
    assert [len(b) for b in batches] == [1, 9, 25, 3, 100]
    assert flat == sorted(set(flat))


def test_steady_state_never_fetches_on_the_callers_thread():
    # Segments big enough to outlast the GIL's 5 ms switch interval, as real steps do.
    source = Source(step=500_000)
    with DoubleBuffer(source, name="t") as buffer:
        buffer.next_id()  # the first segment: the caller waits for it
        for _ in range(3_000_000):
            buffer.next_id()
        assert buffer.waits == 1
    caller = threading.current_thread().name
    assert len(source.threads) >= 6 and caller not in source.threads
    assert set(source.threads) == {"idgen-fetch-t"}


def test_each_fetch_asks_for_ids_above_the_segment_in_use():
    source = Source(step=10)
    with DoubleBuffer(source) as buffer:
        for _ in range(100):
            buffer.next_id()
    assert source.floors[0] == 0
    assert all(b > a for a, b in zip(source.floors, source.floors[1:]))


def test_a_lagging_source_is_moved_above_the_floor():
    """Two sources alternate, one far behind: the buffer's IDs still only increase."""
    fast, slow = residue_sources(2, step=50)
    fast.max_id = 10_000
    turn = iter(range(10**9))

    def fetch(floor: int) -> Segment:
        return (fast if next(turn) % 2 == 0 else slow)(floor)

    with DoubleBuffer(fetch) as buffer:
        ids = [buffer.next_id() for _ in range(500)]
    assert ids == sorted(set(ids))
    assert {i % 2 for i in ids} == {0, 1}


def test_sixteen_threads_never_share_an_id_and_each_sees_increasing_ids():
    results: list[list[int]] = [[] for _ in range(16)]
    with DoubleBuffer(Source(step=97)) as buffer:
        def work(out: list[int]) -> None:
            for _ in range(5000):
                out.append(buffer.next_id())
            out.extend(buffer.next_ids(333))

        run_threads(work, [(r,) for r in results])
    every = [i for r in results for i in r]
    assert len(every) == len(set(every)) == 16 * 5333
    assert all(r == sorted(r) for r in results)


def test_transient_failure_surfaces_only_when_the_buffer_is_empty_and_heals():
    source = Source(step=100)
    with DoubleBuffer(source, retry=Backoff(0.01, 0.02)) as buffer:
        first = buffer.next_id()
        source.fail = StorageUnavailable("db down")
        served = [buffer.next_id() for _ in range(99)]  # the rest of the first segment
        assert served == list(range(first + 1, first + 100))
        with pytest.raises(ServiceUnavailable, match="db down"):
            buffer.next_id()
        source.fail = None
        # The loader retries on its own: the buffer recovers after the source came back.
        recovered = eventually(buffer.next_id, 5, errors=ServiceUnavailable, interval=0.01)
        assert recovered > served[-1]


@pytest.mark.parametrize("error", [
    UnknownBizType("no such biz"), IdSpaceExhausted("int64 used up"), InvalidRequest("bad"),
    Unauthenticated("no token"), PermissionDenied("not this biz type")])
def test_permanent_errors_reach_the_caller_without_retry_loops(error):
    source = Source()
    source.fail = error
    with DoubleBuffer(source, retry=Backoff(0.001, 0.001)) as buffer:
        with pytest.raises(type(error)):
            buffer.next_id()
        with pytest.raises(type(error)):
            buffer.next_id()
        # A retry loop (1 ms apart here) would keep the fetcher busy and call the source again
        # and again; a permanent error ends the fetch, and each caller asks at most once more.
        wait_until(lambda: not buffer._fetcher.busy, 5, "the fetcher to give up")
        assert len(source.floors) <= 2


def test_a_caller_waits_out_a_pause_asked_about_at_the_first_step_of_the_backoff():
    # A pause (idgen add-db moving the biz type) ends in moments and every server sees it: the
    # caller waits, as for a slow fetch. 30 attempts at a backoff that doubled each time would
    # take minutes here; at its first step they take about 0.15 s, well inside PAUSE_WAIT.
    source = Source(step=100)
    source.fail, source.failing = BizTypeMoving("being moved"), 30
    with DoubleBuffer(source, retry=Backoff(0.01, 60.0)) as buffer:
        assert buffer.next_id() == 1
        assert len(source.floors) == 31 and buffer.waits == 1


def test_a_pause_longer_than_the_caller_waits_is_told_as_itself(monkeypatch):
    source = Source()
    source.fail = BizTypeMoving("being moved")
    with DoubleBuffer(source, wait_timeout=0.2, retry=Backoff(0.01, 0.01)) as buffer:
        started = time.monotonic()
        with pytest.raises(BizTypeMoving, match="being moved"):
            buffer.next_id()
        assert time.monotonic() - started >= 0.2  # waited it out first, for its wait_timeout
    monkeypatch.setattr(pair, "PAUSE_WAIT", 0.2)
    with DoubleBuffer(source, wait_timeout=60, retry=Backoff(0.01, 0.01)) as buffer:
        started = time.monotonic()
        with pytest.raises(BizTypeMoving):  # PAUSE_WAIT bounds the wait, not wait_timeout
            buffer.next_id()
        assert 0.2 <= time.monotonic() - started < 30


def test_a_pause_older_than_pause_wait_is_told_at_once_to_later_callers(monkeypatch):
    # A move stopped halfway: after PAUSE_WAIT, nobody waits on it any more (a server's
    # threads would otherwise all wait on it), and its retries back off again.
    monkeypatch.setattr(pair, "PAUSE_WAIT", 0.2)
    source = Source()
    source.fail = BizTypeMoving("being moved")
    with DoubleBuffer(source, retry=Backoff(0.01, 0.01)) as buffer:
        with pytest.raises(BizTypeMoving):
            buffer.next_id()
        with pytest.raises(BizTypeMoving):
            buffer.next_id()
        assert buffer.waits == 1  # the second caller was told without waiting


def test_a_young_pause_is_retried_at_the_first_step_and_logged_once_whatever_database_refused(
        monkeypatch, caplog):
    failures = FailureLog("order")
    assert failures.next_attempt(5) == 6  # no pause: the backoff doubles on
    for k in range(6):
        failures.failed(BizTypeMoving(f"biz type 'order' is being moved: db{k % 2} cuts no segment"))
    assert failures.next_attempt(5) == 1  # young: the first step again
    monkeypatch.setattr(pair, "PAUSE_WAIT", 0.0)
    assert failures.next_attempt(5) == 6  # older than PAUSE_WAIT: a move stopped halfway
    assert len([r for r in caplog.records if "being moved" in r.getMessage()]) == 1
    failures.failed(StorageUnavailable("db down"))
    assert failures.paused_since is None  # another failure ends the pause
    monkeypatch.setattr(pair, "PAUSE_WAIT", 60.0)
    assert failures.next_attempt(5) == 6


def test_a_source_that_breaks_the_floor_contract_is_not_trusted():
    def backwards(floor: int) -> Segment:
        return Segment(1, 10)

    with DoubleBuffer(backwards, floor=100, retry=Backoff(0.01, 0.01)) as buffer:
        with pytest.raises(ServiceUnavailable, match="not above 100"):
            buffer.next_id()


def test_waiting_callers_give_up_after_the_wait_timeout():
    source = Source()
    source.gate = threading.Event()
    buffer = DoubleBuffer(source, wait_timeout=0.2)
    with pytest.raises(ServiceUnavailable, match=(
            r"^no segment for 'idgen' arrived within 0\.2s; "
            r"the ID service or its database is slow or unreachable: retry later$")):
        buffer.next_id()
    source.gate.set()
    buffer.close()


def test_closed_buffer_refuses_and_stops_its_thread():
    buffer = DoubleBuffer(Source())
    buffer.next_id()
    buffer.close()
    with pytest.raises(ServiceUnavailable, match="closed"):
        buffer.next_id()


@settings(max_examples=50, deadline=None)
@given(step=st.integers(1, 40), preload_at=st.floats(0, 0.95),
       counts=st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_any_mix_of_calls_yields_unique_increasing_ids(step, preload_at, counts):
    with DoubleBuffer(Source(step=step), preload_at=preload_at) as buffer:
        ids: list[int] = []
        for n in counts:
            ids += [buffer.next_id()] if n % 2 else buffer.next_ids(n)
    assert ids == sorted(set(ids))


class _Owner:
    """An object whose buffer fetches through one of its own methods: a reference cycle
    through the fetch, which must not keep an unclosed buffer alive. While ``down`` is
    set its fetch fails (a new exception each time, as a driver raises them)."""

    def __init__(self, name: str, source: Source, down: threading.Event) -> None:
        self.source, self.down = source, down
        self.buffer = DoubleBuffer(self.fetch, name=name, wait_timeout=0.2,
                                   retry=Backoff(0.01, 0.02))

    def fetch(self, floor: int) -> Segment:
        self.source.floors.append(floor)
        if self.down.is_set():
            raise ServiceUnavailable("down")
        return self.source(floor)


def _fetch_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"idgen-fetch-{name}"]


def test_a_buffer_nobody_closed_is_collected_and_its_thread_ends():
    owner = _Owner("orphan", Source(step=10), threading.Event())
    assert owner.buffer.next_ids(15)  # a fetch ran and the fetcher thread is idle now
    buffer = weakref.ref(owner.buffer)
    del owner
    gc.collect()
    assert buffer() is None
    wait_until(lambda: not _fetch_threads("orphan"), timeout=IDLE_CHECK + 10,
               message="the orphaned fetcher thread to end")


def test_a_buffer_dropped_during_an_outage_stops_fetching():
    source, down = Source(step=10), threading.Event()
    down.set()
    owner = _Owner("dropped", source, down)
    try:
        owner.buffer.next_id()  # the fetcher keeps retrying in the background
    except ServiceUnavailable:
        pass  # (pytest.raises would keep the traceback, and with it the buffer)
    else:
        raise AssertionError("the outage did not reach the caller")
    del owner
    wait_until(lambda: gc.collect() is not None and not _fetch_threads("dropped"),
               timeout=10, message="the fetcher of a collected buffer to stop retrying")
    calls = len(source.floors)
    down.clear()  # were it still retrying, it would now fetch a segment nobody takes
    assert len(source.floors) == calls and set(source.floors) == {0}


def test_an_unexpected_error_in_a_fetch_is_logged_once_with_its_traceback(caplog):
    source = Source(step=10)
    source.fail = ZeroDivisionError("a bug in the fetch")
    with DoubleBuffer(source, name="buggy", wait_timeout=0.3,
                      retry=Backoff(0.005, 0.01)) as buffer:
        with pytest.raises(ServiceUnavailable, match="ZeroDivisionError"):
            buffer.next_id()
        wait_until(lambda: len(source.floors) >= 5, message="several retries")
    tracebacks = [r for r in caplog.records if r.exc_info and "buggy" in r.getMessage()]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[0] is ZeroDivisionError


def test_nowait_takes_only_what_is_buffered_and_the_rest_comes_above_it():
    source = Source(step=10)
    with DoubleBuffer(source, preload_at=0.5) as buffer:
        first = buffer.next_ids(6)  # past the threshold: the next segment is fetched
        wait_until(lambda: buffer.state().next is not None, 5, "the preloaded segment")
        source.gate = threading.Event()  # from now on a fetch waits
        taken = buffer.next_ids_nowait(100)  # never waits: the 14 IDs buffered
        assert taken == list(range(first[-1] + 1, first[-1] + 15))
        assert buffer.next_ids_nowait(3) == []
        source.gate.set()
        rest = buffer.next_ids(3)
    assert rest[0] > taken[-1]


def test_the_state_says_what_is_held_and_what_was_handed_out():
    source = Source(step=10)
    with DoubleBuffer(source, preload_at=0.5) as buffer:
        empty = buffer.state()
        assert (empty.current, empty.next, empty.left, empty.issued, empty.buffered) == \
            (None, None, 0, 0, 0)
        drawn = buffer.next_ids(6)  # past the threshold: the next segment is fetched
        wait_until(lambda: buffer.state().next is not None, 5, "the preloaded segment")
        state = buffer.state()
        assert (state.current.start, state.current.end) == (drawn[0], 10)
        assert state.left == 4 and state.issued == 6 and state.fetches == 2 and state.waits == 1
        assert state.buffered == 4 + len(state.next)
        buffer.next_ids(7)  # the rest of the first segment, and 3 of the next
        later = buffer.state()
        assert later.issued == 13 and later.current == state.next and later.left == 7
    closed = buffer.state()
    assert closed.current is None and closed.left == 0 and closed.issued == 13


def test_asking_for_no_ids_or_for_ids_above_a_negative_floor_is_refused():
    with DoubleBuffer(Source(step=10)) as buffer:
        for ask in (buffer.next_ids, buffer.next_ids_nowait):
            with pytest.raises(InvalidRequest, match="count must be at least 1, got 0"):
                ask(0)
        with pytest.raises(InvalidRequest, match="floor must be at least 0, got -1"):
            buffer.skip_past(-1)


def test_nowait_hands_out_exactly_the_count_asked_even_across_segments():
    with DoubleBuffer(Source(step=5)) as buffer:
        assert buffer.next_ids(2) == [1, 2]  # past the preload threshold: the next is fetched
        wait_until(lambda: buffer.state().next is not None, 10, "the next segment to arrive")
        assert buffer.next_ids_nowait(1) == [3]
        assert buffer.next_ids_nowait(6) == [4, 5, 6, 7, 8, 9]


def test_skip_past_never_installs_a_segment_at_or_below_where_the_buffer_moved_meanwhile():
    with DoubleBuffer(Source(step=1000)) as buffer:
        buffer.next_id()
        asked: list[int] = []

        def racing_fetch(low: int) -> Segment:
            asked.append(low)
            if len(asked) == 1:  # meanwhile another caller moves the buffer on, to ``moved``
                buffer.skip_past(low + 5000)
                moved = buffer.floor
                return Segment.claimed(moved - 1, moved + 9)  # from exactly where it is
            return Segment.claimed(low, low + 10)

        fetches = buffer.state().fetches
        segment = buffer.skip_past(0, fetch=racing_fetch)
        assert len(asked) == 2 and segment.start == asked[1] + 1
        assert buffer.next_id() == asked[1] + 1
        assert buffer.state().fetches == fetches + 2  # the other caller's and this one's


def test_a_source_that_returns_the_floor_itself_is_not_trusted():
    def at_the_floor(floor: int) -> Segment:
        return Segment(floor, floor + 10)  # its first ID is the last one handed out

    with DoubleBuffer(at_the_floor, floor=100, wait_timeout=5,
                      retry=Backoff(0.01, 0.01)) as buffer:
        with pytest.raises(ServiceUnavailable, match="IDs from 100, not above 100"):
            buffer.next_id()


def test_once_the_id_space_is_used_up_later_callers_are_told_without_another_fetch():
    source = Source()
    source.fail = IdSpaceExhausted("int64 used up")
    with DoubleBuffer(source, retry=Backoff(0.001, 0.001)) as buffer:
        for _ in range(3):
            with pytest.raises(IdSpaceExhausted, match="int64 used up"):
                buffer.next_id()
    assert source.floors == [0]  # no fetch can help: it is not tried again


def _clock_for(monkeypatch: pytest.MonkeyPatch, module: object, now: float) -> Clock:
    """A clock for ``module``'s ``time.monotonic``, moved by the test only."""
    clock = Clock(now)
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=clock))
    return clock


def test_a_pause_is_waited_out_until_pause_wait_after_it_began_and_told_from_that_instant(
        monkeypatch):
    clock = _clock_for(monkeypatch, pair, 100.0)
    patience = pair.Patience(wait_timeout=30)
    moving = BizTypeMoving("being moved")
    clock.now = 100.0 + pair.PAUSE_WAIT - 0.001
    assert not patience.tells(moving, paused_since=100.0)
    clock.now = 100.0 + pair.PAUSE_WAIT
    assert patience.tells(moving, paused_since=100.0)


def test_a_pause_of_unknown_start_is_waited_out_from_when_the_caller_met_it(monkeypatch):
    # The fetcher's next attempt may have ended the pause record just before the caller
    # looked, while the pause is still the failure the caller sees.
    clock = _clock_for(monkeypatch, pair, 100.0)
    patience = pair.Patience(wait_timeout=30)
    moving = BizTypeMoving("being moved")
    assert not patience.tells(moving, paused_since=None)
    assert patience.remaining(moving) == pair.PAUSE_WAIT


def _fetch_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == fetcher_module.__name__]


@pytest.mark.parametrize("error,told,logged", [
    (StorageUnavailable("db down"), "db down", "fetching a segment for 'order' failed: db down"),
    (ZeroDivisionError("a bug"),
     "fetching a segment for 'order' failed (ZeroDivisionError): retry later",
     "fetching a segment for 'order' failed (ZeroDivisionError): retry later"),  # said once
])
def test_a_failed_fetch_is_logged_naming_the_generator_and_what_callers_are_told(
        caplog, error, told, logged):
    told_callers = FailureLog("order").failed(error)
    assert str(told_callers) == told
    assert _fetch_log(caplog) == [logged]


def test_a_failed_fetch_is_logged_again_only_when_the_failure_changes(caplog):
    failures = FailureLog("order")
    for error in (StorageUnavailable("db down"), StorageUnavailable("db down"),
                  UnknownBizType("no such biz"), UnknownBizType("no such biz"),
                  StorageUnavailable("db down")):
        failures.failed(error)
    assert _fetch_log(caplog) == [
        "fetching a segment for 'order' failed: db down",
        "fetching a segment for 'order' failed: no such biz",
        "fetching a segment for 'order' failed: db down",
    ]


def test_a_failure_after_a_recovery_is_logged_again_even_one_without_a_message(caplog):
    failures = FailureLog("order")
    failures.failed(StorageUnavailable())
    failures.clear()  # a fetch succeeded in between
    failures.failed(StorageUnavailable())
    assert len(_fetch_log(caplog)) == 2


def test_a_pause_is_retried_at_the_first_step_for_pause_wait_seconds_and_no_longer(monkeypatch):
    clock = _clock_for(monkeypatch, fetcher_module, 100.0)
    failures = FailureLog("order")
    failures.failed(BizTypeMoving("being moved"))
    clock.now = 100.0 + pair.PAUSE_WAIT - 0.001
    assert failures.next_attempt(5) == 1
    clock.now = 100.0 + pair.PAUSE_WAIT
    assert failures.next_attempt(5) == 6


def test_a_pause_after_a_recovery_is_counted_from_its_own_start(monkeypatch):
    clock = _clock_for(monkeypatch, fetcher_module, 100.0)
    failures = FailureLog("order")
    failures.failed(BizTypeMoving("being moved"))
    clock.now = 200.0
    failures.clear()  # a fetch succeeded: that pause is over
    failures.failed(BizTypeMoving("being moved"))
    assert failures.paused_since == 200.0
    assert failures.next_attempt(5) == 1  # young again


def test_the_retry_bound_starts_at_initial_and_doubles_with_each_retry_up_to_maximum():
    backoff = Backoff(initial=1.0, maximum=100.0)
    assert [backoff.bound(attempt) for attempt in range(0, 9)] == \
        [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0]


def test_retry_delays_are_drawn_from_zero_up_to_the_bound():
    delays = [Backoff(initial=1.0, maximum=100.0).delay(3) for _ in range(1000)]
    assert all(0.0 <= delay <= 4.0 for delay in delays)
    # Full jitter: the whole range is used (each bound missed by chance at 0.9^1000).
    assert min(delays) < 0.4 and max(delays) > 3.6


@pytest.mark.parametrize("settings", [
    dict(initial=0.5, maximum=0.5), dict(initial=0.5, maximum=1.0, attempts=1)])
def test_a_backoff_may_start_at_its_maximum_and_may_make_a_single_attempt(settings):
    backoff = Backoff(**settings)
    assert backoff.bound(1) == 0.5


@pytest.mark.parametrize("settings,why", [
    (dict(initial=0.0, maximum=1.0), "backoff must satisfy 0 < initial <= maximum, got 0.0 and 1.0"),
    (dict(initial=2.0, maximum=1.0), "backoff must satisfy 0 < initial <= maximum, got 2.0 and 1.0"),
    (dict(initial=0.5, maximum=1.0, attempts=0), "attempts must be at least 1, got 0"),
])
def test_a_backoff_that_would_not_wait_or_not_attempt_is_refused_with_the_reason(settings, why):
    with pytest.raises(ConfigError) as refused:
        Backoff(**settings)
    assert str(refused.value) == why


def test_closing_waits_for_the_fetcher_thread_to_end():
    with DoubleBuffer(Source(step=10), name="closing") as buffer:
        buffer.next_id()  # the fetcher thread started, and now idles
        assert _fetch_threads("closing")
    assert not _fetch_threads("closing")


def test_closing_waits_for_a_hanging_fetch_no_longer_than_its_timeout():
    source = Source()
    source.gate = threading.Event()  # the fetch hangs until set
    buffer = DoubleBuffer(source, name="hanging", wait_timeout=0.05)
    with pytest.raises(ServiceUnavailable):
        buffer.next_id()
    started = time.monotonic()
    buffer.close(timeout=0.1)
    assert time.monotonic() - started < 5  # the fetch itself would hang for 10 s
    source.gate.set()


def test_each_caller_that_finds_the_buffer_empty_counts_once_in_waits():
    source = Source(step=10)
    source.gate = threading.Event()  # the first fetch hangs until set
    with DoubleBuffer(source) as buffer:
        got: list[int] = []
        callers = [threading.Thread(target=lambda: got.append(buffer.next_id()), daemon=True)
                   for _ in range(2)]
        for caller in callers:
            caller.start()
        wait_until(lambda: buffer.state().waits == 2, 5, "both callers to be counted as waiting")
        source.gate.set()
        for caller in callers:
            caller.join(10)
        assert sorted(got) == [1, 2] and buffer.state().waits == 2


def test_the_fetcher_thread_is_a_daemon_that_never_holds_up_the_process_exit():
    with DoubleBuffer(Source(step=10), name="daemonic") as buffer:
        buffer.next_id()
        assert [thread.daemon for thread in _fetch_threads("daemonic")] == [True]


def test_a_pause_is_told_once_pause_wait_is_up_though_the_next_attempt_hangs(monkeypatch):
    # No failed retry wakes the caller here: its own wait must end at the pause's end.
    monkeypatch.setattr(pair, "PAUSE_WAIT", 0.2)
    hang, floors = threading.Event(), []

    def fetch(floor: int) -> Segment:
        floors.append(floor)
        if len(floors) == 1:
            raise BizTypeMoving("being moved")
        hang.wait(10)
        return Segment.claimed(floor, floor + 10)

    with DoubleBuffer(fetch, wait_timeout=20, retry=Backoff(0.01, 0.01)) as buffer:
        started = time.monotonic()
        with pytest.raises(BizTypeMoving, match="being moved"):
            buffer.next_id()
        assert time.monotonic() - started < 10  # not the wait_timeout, nor the hung attempt
        hang.set()


def test_once_the_id_space_is_used_up_a_skip_past_segment_brings_no_fetch_after_it():
    source = Source()
    source.fail = IdSpaceExhausted("int64 used up")
    with DoubleBuffer(source, wait_timeout=1, retry=Backoff(0.001, 0.001)) as buffer:
        with pytest.raises(IdSpaceExhausted):
            buffer.next_id()
        buffer.skip_past(0, fetch=lambda low: Segment.claimed(low, low + 2))
        assert buffer.next_ids(2) == [1, 2]
        with pytest.raises(IdSpaceExhausted, match="int64 used up"):  # nothing comes after it
            buffer.next_id()
    assert source.floors == [0]  # no fetch can help: it is not tried again


def test_an_idle_fetcher_whose_buffer_was_collected_ends_at_its_next_idle_check(monkeypatch):
    monkeypatch.setattr(fetcher_module, "IDLE_CHECK", 0.1)
    buffer = DoubleBuffer(Source(step=10), name="idle")
    waits = spy(buffer._cond, "wait")
    buffer.next_id()
    wait_until(lambda: "idgen-fetch-idle" in waits, 5, "the fetcher thread to idle")
    del buffer  # nobody closed it: nothing will wake the idle thread
    gc.collect()
    wait_until(lambda: not _fetch_threads("idle"), 5, "the idle fetcher thread to end")


def test_crossing_the_threshold_with_the_next_segment_already_here_asks_for_no_fetch():
    source = Source(step=10)
    with DoubleBuffer(source, preload_at=0.5) as buffer:
        buffer.next_id()
        source.gate = threading.Event()
        assert buffer.next_ids(5) == [2, 3, 4, 5, 6]  # past the threshold: a fetch hangs
        wait_until(lambda: len(source.floors) == 2, 5, "the preload fetch to start")

        def above(low: int) -> Segment:  # claims 11..20 from the source, below the hung fetch
            with source.lock:
                source.max_id = low + 10
            return Segment.claimed(low, low + 10)

        buffer.skip_past(0, fetch=above)
        source.gate.set()  # the hung fetch returns 21..30, above the skip: the next segment
        wait_until(lambda: buffer.state().next is not None, 5, "the next segment to arrive")
        assert buffer.next_ids(6) == [11, 12, 13, 14, 15, 16]  # past the skip's threshold
        assert not poll(lambda: len(source.floors) > 2, 0.5)
        assert buffer.next_ids(5) == [17, 18, 19, 20, 21]


def test_a_waiting_caller_is_told_of_the_time_out_at_its_deadline_itself(monkeypatch):
    clock = _clock_for(monkeypatch, pair, 100.0)  # moves only when set: no later instant comes
    source = Source()
    source.gate = threading.Event()  # the fetch hangs until set
    with DoubleBuffer(source, wait_timeout=0.05) as buffer:
        told: list[ServiceUnavailable] = []

        def call() -> None:
            try:
                buffer.next_id()
            except ServiceUnavailable as exc:
                told.append(exc)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        wait_until(lambda: buffer.state().waits == 1, 5, "the caller to wait")
        clock.now = 100.0 + 0.05  # exactly the caller's deadline
        caller.join(5)
        source.gate.set()
        assert [str(exc) for exc in told] == [
            "no segment for 'idgen' arrived within 0.05s; "
            "the ID service or its database is slow or unreachable: retry later"]


@pytest.mark.parametrize("preload_at", [1.0, -0.1, float("nan")])
def test_a_preload_threshold_outside_zero_to_just_below_one_is_refused(preload_at):
    with pytest.raises(ConfigError, match=r"^preload_at must be in \[0, 1\), got "):
        DoubleBuffer(Source(), preload_at=preload_at)


def test_a_caller_that_met_no_pause_waits_until_its_deadline_whatever_failed(monkeypatch):
    clock = _clock_for(monkeypatch, pair, 100.0)
    patience = pair.Patience(wait_timeout=30)
    clock.now = 110.0
    assert patience.remaining(None) == 20.0
    assert patience.remaining(StorageUnavailable("db down")) == 20.0


def test_once_a_fetch_is_under_way_again_a_caller_waits_until_its_deadline_not_the_pause_end(
        monkeypatch):
    clock = _clock_for(monkeypatch, pair, 100.0)
    patience = pair.Patience(wait_timeout=30)
    assert not patience.tells(BizTypeMoving("being moved"), paused_since=100.0)
    assert patience.remaining(None) == 30.0  # the pause's failure is gone: no pause to end


@pytest.mark.parametrize("wait_timeout", [0, -1.0, float("nan")])
def test_a_wait_timeout_that_is_not_a_positive_number_of_seconds_is_refused(wait_timeout):
    with pytest.raises(ConfigError, match=f"^wait_timeout must be positive, got {wait_timeout}$"):
        DoubleBuffer(Source(), wait_timeout=wait_timeout)


def test_a_negative_floor_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="^floor must be at least 0, got -1$"):
        DoubleBuffer(Source(), floor=-1)
