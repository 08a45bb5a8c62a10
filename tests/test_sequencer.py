"""The sequencer over a double buffer fed by a plain function (no network, no database).

The guarantees against real servers and MariaDB (segment switches on lagging
databases, restart with kill -9, handover) are in test_sequencer_server.py.
"""
from __future__ import annotations

import itertools
import logging
import sys
import threading
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idgen_client import ConfigError, InvalidRequest, Segment, Sequencer, ServiceUnavailable, Stamp
from idgen_client import sequencer as sequencer_module
from idgen_core.buffer import DoubleBuffer
from tests.support.chains import assert_chains
from tests.support.fakes import Clock, Source
from tests.support.threads import run_threads
from tests.support.waiting import wait_until

START = 1000.0
"""Where the tests' clocks start."""


@pytest.fixture
def preemptive():
    """Threads switch every microsecond, not every 5 ms: races inside a stamp
    (between a read and a write of a group, or an eviction) actually happen."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.fixture
def buffer():
    with DoubleBuffer(Source(step=50), name="test") as buffer:
        yield buffer


def stamp_together(sequencer: Sequencer, group_of, count: int, message: str | None = None,
                   threads: int = 16) -> list[list[tuple[object, Stamp]]]:
    """``threads`` threads, released at once, each stamping ``count`` times the group
    ``group_of(thread, i)`` (with ``message`` as the client's message id); returns what
    each thread got, in the order it got it."""
    per_thread: list[list[tuple[object, Stamp]]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait()
        for i in range(count):
            group = group_of(n, i)
            per_thread[n].append((group, sequencer.stamp(group, message)))

    run_threads(work, [(n,) for n in range(threads)])
    return per_thread


# -- 1. increasing, one chain per group, under 16 threads --------------------------

def test_sixteen_threads_on_the_same_groups_make_one_chain_per_group(buffer, preemptive):
    sequencer = Sequencer(buffer)
    per_thread = stamp_together(sequencer, lambda seed, i: (seed + i) % 5, 2000)
    by_group: dict[object, list[Stamp]] = defaultdict(list)
    for got in per_thread:
        last: dict[int, int] = {}
        for group, stamp in got:
            assert stamp.seq > last.get(group, 0), "a thread saw a group's seq go down"
            last[group] = stamp.seq
            by_group[group].append(stamp)
    assert sum(map(len, by_group.values())) == 32_000
    assert_chains(by_group)
    assert buffer.fetches > 500  # the chains span hundreds of segment switches


# -- 2. floors: the generator is moved past them, not drained ----------------------

def test_a_loader_value_above_the_generator_moves_it_there_in_one_fetch():
    source = Source(step=100)
    with DoubleBuffer(source) as buffer:
        assert buffer.next_id() == 1
        sequencer = Sequencer(buffer, loader=lambda group: 1_000_000)
        first, second = sequencer.stamp("g"), sequencer.stamp("g")
    assert first == Stamp(1_000_001, 1_000_000) and second == Stamp(1_000_002, 1_000_001)
    assert sequencer.skips == 1
    assert 1_000_000 in source.floors and len(source.floors) <= 4  # draining takes 10,000


def test_skip_past_drops_buffered_ids_and_keeps_ids_increasing():
    source = Source(step=100)
    with DoubleBuffer(source) as buffer:
        before = [buffer.next_id() for _ in range(30)]  # preload of (100, 200] started
        segment = buffer.skip_past(5_000)
        after = [buffer.next_id() for _ in range(300)]
    assert segment.start == 5_001 and after[0] == 5_001
    assert before + after == sorted(set(before + after))


def test_a_fetch_that_skip_past_overtook_is_discarded_not_installed():
    source = Source(step=100)
    with DoubleBuffer(source, preload_at=0.5) as buffer:
        assert buffer.next_id() == 1
        source.gate = threading.Event()
        while buffer.next_id() < 51:  # past the threshold: the loader fetches (100, 200]
            pass
        wait_until(lambda: len(source.floors) >= 2, 10, "the preload to start", interval=0.001)
        buffer.skip_past(5_000, fetch=lambda floor: Segment.claimed(floor, floor + 100))
        source.gate.set()
        ids = [buffer.next_id() for _ in range(250)]
    assert ids == sorted(set(ids)) and ids[0] == 5_001
    assert source.floors[:2] == [0, 100] and source.floors[2] >= 5_100  # refetched above


class Counter:
    """A generator that cannot skip: 1, 2, 3, ..."""

    def __init__(self) -> None:
        self.last = 0
        self.floor = 0

    def next_id(self) -> int:
        self.last += 1
        return self.last


def test_a_generator_without_skip_past_is_drawn_up_to_the_floor():
    sequencer = Sequencer(Counter(), loader=lambda group: 500)
    first = sequencer.stamp("g")
    assert first.prev_seq == 500 and 500 < first.seq <= 502


def test_a_floor_too_far_above_a_generator_without_skip_past_is_refused_not_drawn_forever():
    counter = Counter()
    sequencer = Sequencer(counter, loader={"far": 10**12, "near": 5}.__getitem__)
    with pytest.raises(ConfigError, match=r"(?s)group 'far'.*1,000,000 IDs drawn.*skip_past"):
        sequencer.stamp("far")
    assert counter.last == 1 + sequencer_module._DRAIN_LIMIT  # one draw, then the drain: no further
    assert sequencer.stamp("near").prev_seq == 5  # the generator still serves other groups


def test_moving_the_generator_past_a_floor_is_logged_with_the_floor(buffer, caplog):
    caplog.set_level(logging.INFO, logger="idgen_client.sequencer")
    Sequencer(buffer, loader=lambda group: 1_000_000).stamp("g")
    assert any("past 1000000" in record.getMessage() for record in caplog.records)


class Stuck:
    """A generator that keeps handing out ``at`` however often it is moved past it."""

    floor = 0

    def __init__(self, at: int) -> None:
        self.at = at
        self.draws = 0
        self.skipped: list[int] = []

    def next_id(self) -> int:
        self.draws += 1
        assert self.draws < 100, "the sequencer kept drawing from a stuck generator"
        return self.at

    def skip_past(self, floor: int) -> Segment:
        self.skipped.append(floor)
        return Segment.claimed(floor, floor + 100)


def test_a_generator_that_stays_at_the_floor_is_given_up_on_after_three_skips():
    generator = Stuck(at=1000)
    sequencer = Sequencer(generator, loader=lambda group: 1000)
    generator.skipped.clear()  # construction's own move
    with pytest.raises(ServiceUnavailable, match=r"group 'g'.*retry later"):
        sequencer.stamp("g")
    assert generator.skipped == [1000] * 3 and sequencer.skips == 3


def test_an_id_the_generator_hands_out_twice_is_stamped_once():
    class Repeating:
        floor = 0

        def __init__(self) -> None:
            self.ids = itertools.chain([5], itertools.count(5))  # 5, 5, 6, 7, ...

        def next_id(self) -> int:
            return next(self.ids)

    sequencer = Sequencer(Repeating())
    assert [sequencer.stamp("g"), sequencer.stamp("g")] == [Stamp(5, 0), Stamp(6, 5)]


# -- 3. restart: above everything allocated before -----------------------------------

def test_a_restart_starts_right_above_every_id_allocated_before():
    source = Source(step=100)
    source.max_id = 10_000  # what the processes before allocated, in every database

    class AboveAll(DoubleBuffer):
        def skip_past_all(self) -> Segment:
            return self.skip_past(source.max_id)

    with AboveAll(source) as generator:
        sequencer = Sequencer(generator)
        first = sequencer.stamp("g")
    assert sequencer.horizon == 10_000
    assert first == Stamp(10_001, 10_000) and sequencer.skips == 0


# -- 4. handover: the loader's value is the first prev_seq -------------------------

def test_a_group_met_for_the_first_time_continues_from_the_loader(buffer):
    loaded: list[object] = []

    def loader(group: object) -> int:
        loaded.append(group)
        return 40

    sequencer = Sequencer(buffer, loader=loader)
    stamps = [sequencer.stamp(7) for _ in range(3)]
    assert stamps[0].prev_seq == 40 and stamps[0].seq > 40
    assert_chains({7: stamps}, start=40)
    assert loaded == [7]


def test_without_a_loader_a_new_group_starts_at_the_horizon(buffer):
    before = buffer.next_ids(120)
    sequencer = Sequencer(buffer)  # starts on a fresh segment: above all before it
    assert max(before) <= sequencer.horizon
    first = sequencer.stamp("new")
    assert first.prev_seq == sequencer.horizon < first.seq


# -- 5. retries --------------------------------------------------------------------

def test_a_retry_within_the_window_gets_the_same_stamp(buffer):
    clock = Clock(START)
    sequencer = Sequencer(buffer, retry_window=30, clock=clock)
    first = sequencer.stamp("g", "m1")
    sequencer.stamp("g")
    clock.now += 29.9
    assert sequencer.stamp("g", "m1") == first
    assert sequencer.stamp("other", "m1") != first  # the same id in another group is new


def test_a_retry_after_the_window_is_a_new_message(buffer):
    clock = Clock(START)
    sequencer = Sequencer(buffer, retry_window=30, clock=clock)
    first = sequencer.stamp("g", "m1")
    clock.now += 30
    again = sequencer.stamp("g", "m1")
    assert again.seq > first.seq and again.prev_seq == first.seq


def test_the_retry_log_keeps_at_most_max_retries_entries(buffer):
    sequencer = Sequencer(buffer, max_retries=3, clock=Clock(START))
    first = sequencer.stamp("g", "m0")
    for n in range(1, 3):
        sequencer.stamp("g", f"m{n}")
    assert sequencer.stamp("g", "m0") == first  # 2 since: still known
    for n in range(3, 6):
        sequencer.stamp("g", f"m{n}")
    assert sequencer.stamp("g", "m0") != first  # 3 since: forgotten


def test_concurrent_retries_of_one_message_get_one_stamp(buffer, preemptive):
    sequencer = Sequencer(buffer)
    got = [stamp for mine in stamp_together(sequencer, lambda n, i: "g", 50, "same")
           for _, stamp in mine]
    assert len(got) == 800 and len(set(got)) == 1
    assert sequencer.stamp("g").prev_seq == got[0].seq


def test_a_retry_is_recognised_after_its_group_was_evicted(buffer):
    sequencer = Sequencer(buffer, max_groups=4, clock=Clock(START))
    first = sequencer.stamp("g", "m1")
    for group in range(20):
        sequencer.stamp(group)
    assert "g" not in sequencer
    assert sequencer.stamp("g", "m1") == first


@pytest.mark.parametrize("setting", [{"retry_window": 0}, {"max_retries": 0}])
def test_a_retry_log_of_no_time_or_no_room_remembers_no_message(buffer, setting):
    sequencer = Sequencer(buffer, clock=Clock(START), **setting)
    first = sequencer.stamp("g", "m1")
    assert sequencer.stamp("g", "m1").prev_seq == first.seq


def test_a_retry_window_may_be_a_fraction_of_a_second(buffer):
    clock = Clock(START)
    sequencer = Sequencer(buffer, retry_window=0.5, clock=clock)
    first = sequencer.stamp("g", "m1")
    clock.now += 0.4
    assert sequencer.stamp("g", "m1") == first


def test_stamps_without_a_message_id_take_no_room_in_the_retry_log(buffer):
    sequencer = Sequencer(buffer, max_retries=1, clock=Clock(START))
    first = sequencer.stamp("g", "m1")
    for _ in range(3):
        sequencer.stamp("g")
    assert sequencer.stamp("g", "m1") == first


def test_a_message_stamped_again_after_its_window_is_the_newest_in_the_retry_log(buffer):
    clock = Clock(START)
    sequencer = Sequencer(buffer, retry_window=30, max_retries=2, clock=clock)
    sequencer.stamp("g", "m0")
    clock.now += 1
    sequencer.stamp("g", "m1")
    clock.now += 29  # m0's window is over, m1's is not
    again = sequencer.stamp("g", "m0")
    sequencer.stamp("g", "m2")  # the log is full: the oldest entry, m1's, goes
    assert sequencer.stamp("g", "m0") == again


def test_an_expired_entry_goes_without_the_newer_ones(buffer):
    clock = Clock(START)
    sequencer = Sequencer(buffer, retry_window=30, clock=clock)
    sequencer.stamp("g", "m0")
    clock.now += 31
    first = sequencer.stamp("g", "m1")  # finds m0's entry expired
    assert sequencer.stamp("g", "m1") == first


# -- 6. bounded memory, guarantees intact after eviction ---------------------------

def test_a_full_sequencer_forgets_one_group_for_each_new_one(buffer):
    sequencer = Sequencer(buffer, max_groups=3)
    for group in range(8):
        sequencer.stamp(group)
        assert len(sequencer) == min(group + 1, 3)
    assert all(group in sequencer for group in (5, 6, 7))


def test_one_group_is_enough_memory(buffer):
    sequencer = Sequencer(buffer, max_groups=1)
    last = sequencer.stamp("a")
    assert sequencer.stamp("a").prev_seq == last.seq
    sequencer.stamp("b")
    assert "b" in sequencer and "a" not in sequencer


def test_stamping_a_remembered_group_again_makes_it_the_most_recent(buffer):
    sequencer = Sequencer(buffer, max_groups=3)
    for group in ("a", "b", "c", "a", "d"):
        sequencer.stamp(group)
    assert "a" in sequencer and "b" not in sequencer


def test_a_message_stamped_again_after_its_window_makes_its_group_the_most_recent(buffer):
    clock = Clock(START)
    sequencer = Sequencer(buffer, max_groups=3, retry_window=30, clock=clock)
    sequencer.stamp("a", "m1")
    for group in ("b", "c"):
        sequencer.stamp(group)
    clock.now += 30
    sequencer.stamp("a", "m1")  # a new message: the window is over
    sequencer.stamp("d")
    assert "a" in sequencer and "b" not in sequencer


def test_memory_stays_within_max_groups(buffer):
    sequencer = Sequencer(buffer, max_groups=100)
    for group in range(10_000):
        sequencer.stamp(f"group-{group}")
        assert len(sequencer) <= 100


def test_the_least_recently_stamped_group_is_the_one_forgotten(buffer):
    sequencer = Sequencer(buffer, max_groups=10)
    for warm in range(10):
        sequencer.stamp(f"warm-{warm}")
    last = sequencer.stamp("g")
    for other in range(9):  # 9 others since: "g" is still among the 10 most recent
        sequencer.stamp(other)
    assert "g" in sequencer and "warm-9" not in sequencer
    again = sequencer.stamp("g")
    assert again.prev_seq == last.seq  # remembered: the chain is exact
    for other in range(10, 20):
        sequencer.stamp(other)
    assert "g" not in sequencer and len(sequencer) == 10


def test_a_forgotten_group_returns_above_its_last_seq(buffer):
    sequencer = Sequencer(buffer, max_groups=4)
    last = sequencer.stamp("g")
    for group in range(50):
        sequencer.stamp(group)
    back = sequencer.stamp("g")
    assert back.seq > last.seq
    assert back.prev_seq >= last.seq  # an upper bound of the last seq: a receiver asks


def test_evictions_racing_with_stamps_never_send_a_group_back(buffer, preemptive):
    sequencer = Sequencer(buffer, max_groups=8)  # 40 groups: evictions all the time
    got = stamp_together(sequencer, lambda seed, i: (seed * 7 + i) % 40, 1500)
    by_group: dict[object, list[Stamp]] = defaultdict(list)
    for mine in got:
        for group, stamp in mine:
            by_group[group].append(stamp)
    for group, stamps in by_group.items():
        stamps.sort()
        for before, after in zip(stamps, stamps[1:]):
            # Exact after a hit; after an eviction prev_seq is an upper bound of the
            # last seq, never below it: a receiver then asks, it never misses one.
            assert before.seq <= after.prev_seq < after.seq, (group, before, after)
    assert len(sequencer) <= 8 and sequencer.horizon > 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.none() | st.integers(0, 3)), max_size=300))
def test_with_a_loader_chains_stay_exact_through_evictions_and_retries(ops):
    stored: dict[int, int] = {}  # the application's message store: highest seq per group
    sent: dict[tuple[int, int], Stamp] = {}
    by_group: dict[object, list[Stamp]] = defaultdict(list)
    with DoubleBuffer(Source(step=7)) as buffer:
        sequencer = Sequencer(buffer, loader=lambda g: stored.get(g, 0), max_groups=4,
                              clock=Clock(START))
        for group, msg in ops:
            stamp = sequencer.stamp(group, None if msg is None else str(msg))
            if msg is not None and (group, msg) in sent:
                assert stamp == sent[(group, msg)]
                continue
            if msg is not None:
                sent[(group, msg)] = stamp
            stored[group] = stamp.seq
            by_group[group].append(stamp)
    assert_chains(by_group)


# -- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("group", [1.5, None, True, b"g", ["g"]])
def test_a_group_id_is_a_str_or_an_int(buffer, group):
    with pytest.raises(InvalidRequest, match=f"group id .* not {type(group).__name__}"):
        Sequencer(buffer).stamp(group)


@pytest.mark.parametrize("group", [True, 1.0])
def test_a_group_id_that_equals_a_known_int_group_is_still_refused(buffer, group):
    sequencer = Sequencer(buffer)
    sequencer.stamp(1)
    with pytest.raises(InvalidRequest, match=f"group id .* not {type(group).__name__}"):
        sequencer.stamp(group)
    with pytest.raises(InvalidRequest, match=f"group id .* not {type(group).__name__}"):
        sequencer.stamp(group, "m-1")


def test_a_group_id_of_a_str_subclass_is_a_group_with_its_retried_messages(buffer):
    class Name(str):
        pass

    sequencer = Sequencer(buffer)
    first = sequencer.stamp(Name("g"), "m-1")
    assert sequencer.stamp(Name("g"), "m-1") == first
    assert sequencer.stamp("g").prev_seq == first.seq


def test_a_client_msg_id_is_a_str(buffer):
    sequencer = Sequencer(buffer)
    sequencer.stamp("g")
    with pytest.raises(InvalidRequest, match="client_msg_id .* not int"):
        sequencer.stamp("g", 5)


@pytest.mark.parametrize("value", [-1, "12", None])
def test_a_loader_value_that_is_not_a_seq_is_refused_by_name(buffer, value):
    with pytest.raises(InvalidRequest, match="loader returned"):
        Sequencer(buffer, loader=lambda group: value).stamp("g")


def test_settings_are_validated_at_construction(buffer):
    with pytest.raises(ConfigError, match="max_groups"):
        Sequencer(buffer, max_groups=0)
    with pytest.raises(ConfigError, match="retry_window"):
        Sequencer(buffer, retry_window=-1)
    with pytest.raises(ConfigError, match="max_retries"):
        Sequencer(buffer, max_retries=-1)
    with pytest.raises(ConfigError, match="loader .* not int"):
        Sequencer(buffer, loader=42)
