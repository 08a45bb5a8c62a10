"""The sequencer under a lease: it stamps only while the lease is held, every stamp
carries the epoch, and a new epoch starts above everything stamped before it.

The lease here is a stand-in whose term the test sets; ``Lease`` against real
servers, and owners handing groups over, are in test_handover.py.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict

import pytest

from idgen_client import ConfigError, NotOwner, Sequencer
from idgen_core.buffer import DoubleBuffer
from tests.support.fakes import Clock, Source, spy
from tests.support.threads import run_threads

START = 1000.0


class FakeLease:
    """A lease whose ``term`` the test sets, on a clock the test moves."""

    name = "chat-7"

    def __init__(self, epoch: int = 1, until: float = START + 10) -> None:
        self.clock = Clock(START)
        self.term = (epoch, until)


class Generator(DoubleBuffer):
    """A double buffer over one source that, as ``LocalGenerator`` does, can move above
    everything the source ever allocated (``skip_past_all``)."""

    def __init__(self, source: Source) -> None:
        super().__init__(source, name="test")
        self.source = source

    def skip_past_all(self):
        return self.skip_past(self.source.max_id)


@pytest.fixture
def source():
    return Source(step=50)


@pytest.fixture
def buffer(source):
    with Generator(source) as buffer:
        yield buffer


def test_a_lease_needs_a_generator_that_can_move_above_every_database(source):
    with DoubleBuffer(source, name="plain") as plain:
        with pytest.raises(ConfigError, match="skip_past_all"):
            Sequencer(plain, lease=FakeLease())


class NotALease:
    """Half a lease: ``term`` or ``clock``, as the test gives."""

    def __init__(self, **attributes: object) -> None:
        self.__dict__.update(attributes)


@pytest.mark.parametrize("lease", [NotALease(), NotALease(term=(1, START + 10)),
                                   NotALease(term=[1, START + 10], clock=Clock(START))])
def test_a_lease_without_a_term_and_a_clock_is_refused_at_construction(buffer, lease):
    with pytest.raises(ConfigError, match="lease must be .* not NotALease"):
        Sequencer(buffer, lease=lease)


def test_without_the_lease_nothing_is_stamped(buffer):
    lease = FakeLease(0, float("-inf"))
    sequencer = Sequencer(buffer, lease=lease)
    with pytest.raises(NotOwner, match="does not hold the lease .chat-7. that group .g. is stamped under"):
        sequencer.stamp("g")
    lease.term = (1, START + 10)
    assert sequencer.stamp("g").epoch == 1


def test_not_owner_names_the_lease_and_its_biz_type(buffer):
    lease = FakeLease(0, float("-inf"))
    lease.biz_type = "orders"
    with pytest.raises(NotOwner, match=r"lease 'chat-7' \(biz type 'orders'\)"):
        Sequencer(buffer, lease=lease).stamp("g")


def test_not_owner_names_no_lease_when_it_has_no_name(buffer):
    lease = NotALease(term=(0, float("-inf")), clock=Clock(START))
    with pytest.raises(NotOwner, match="does not hold the lease that group 'g'"):
        Sequencer(buffer, lease=lease).stamp("g")


@pytest.mark.parametrize(("failure", "why"), [
    (None, "not renewed in time"),
    ("UNAVAILABLE: no server answered", "failed: UNAVAILABLE: no server answered"),
])
def test_not_owner_says_why_the_lease_is_not_held(buffer, failure, why):
    lease = FakeLease(0, float("-inf"))
    lease.failure = failure
    with pytest.raises(NotOwner) as raised:
        Sequencer(buffer, lease=lease).stamp("g")
    message = str(raised.value)
    assert why in message and ("failed" in message) == (failure is not None)


def test_once_the_term_ends_stamps_stop_until_it_is_renewed(buffer):
    lease = FakeLease(4, START + 10)
    sequencer = Sequencer(buffer, lease=lease)
    first = sequencer.stamp("g")
    lease.clock.now = START + 10
    with pytest.raises(NotOwner):
        sequencer.stamp("g")
    lease.term = (4, START + 20)  # renewed: the same epoch, the chain goes on
    assert sequencer.stamp("g")[1:] == (first.seq, 4)


def test_a_term_that_ends_while_the_seq_is_drawn_stamps_nothing(source):
    lease = FakeLease(2, START + 10)

    class SlowGenerator(Generator):
        slow = False

        def next_id(self) -> int:
            seq = super().next_id()
            if self.slow:
                lease.clock.now = START + 11  # a pause between the draw and the check
            return seq

    with SlowGenerator(source) as generator:
        sequencer = Sequencer(generator, lease=lease)
        first = sequencer.stamp("g")
        generator.slow = True
        with pytest.raises(NotOwner):
            sequencer.stamp("g")
        generator.slow = False
        lease.term = (2, START + 30)
        assert sequencer.stamp("g").prev_seq == first.seq  # the drawn seq was never handed out


def test_a_term_that_ends_while_a_new_groups_first_seq_is_drawn_stamps_nothing(source):
    lease = FakeLease(2, START + 10)

    class EndingGenerator(Generator):
        ending = True

        def next_id(self) -> int:
            seq = super().next_id()
            if self.ending:
                lease.clock.now = START + 10  # the term's end comes during the draw
            return seq

    with EndingGenerator(source) as generator:  # nothing was ever stamped from it
        sequencer = Sequencer(generator, lease=lease)
        with pytest.raises(NotOwner):
            sequencer.stamp("g")
        generator.ending = False
        lease.term = (2, START + 30)
        stamp = sequencer.stamp("g")
    assert stamp.prev_seq == 0 and stamp.epoch == 2  # the group's first message


def test_a_take_over_is_logged_with_its_epoch_and_horizon(buffer, caplog):
    caplog.set_level(logging.INFO, logger="idgen_client.sequencer")
    sequencer = Sequencer(buffer, lease=FakeLease(5))
    sequencer.stamp("g")
    assert any("epoch 5" in message and f"above {sequencer.horizon}" in message
               for message in (record.getMessage() for record in caplog.records))


def test_an_epoch_replaced_before_its_take_over_is_passed_over_for_the_new_one(source):
    lease = FakeLease(1)

    def clock() -> float:  # the lease is granted anew right after the stamp read epoch 1
        if lease.term[0] == 1:
            lease.term = (2, START + 10)
        return START

    lease.clock = clock
    with Generator(source) as generator:
        moves = spy(generator, "skip_past_all")
        stamp = Sequencer(generator, lease=lease).stamp("g")
    assert stamp.epoch == 2 and len(moves) == 1


def test_threads_meeting_a_new_epoch_together_take_it_over_once(source):
    """A thread sees epoch 2 and is paused just before it would take it over; another
    takes it over meanwhile. The first, let go, finds it done: the generator is moved
    above all once, and the group stamped meanwhile is not forgotten."""
    lease = FakeLease(1)
    waiting, taking, waited = threading.Event(), threading.Event(), threading.Event()

    class PausingClock(Clock):
        def __call__(self) -> float:
            if threading.current_thread().name == "waiter" and not waited.is_set():
                waiting.set()
                assert taking.wait(10), "no take-over started"
                waited.set()
            return super().__call__()

    lease.clock = PausingClock(START)

    class Held(Generator):
        def skip_past_all(self):
            if threading.current_thread().name == "taker":
                taking.set()
                assert waited.wait(10), "the waiter never went on"
            return super().skip_past_all()

    got = []
    with Held(source) as generator:
        sequencer = Sequencer(generator, lease=lease)
        sequencer.stamp("g")
        lease.term = (2, START + 10)
        moves = spy(generator, "skip_past_all")
        waiter = threading.Thread(target=lambda: got.append(sequencer.stamp("g")), name="waiter")
        taker = threading.Thread(target=lambda: got.append(sequencer.stamp("g")), name="taker")
        waiter.start()
        assert waiting.wait(10)
        taker.start()
        taker.join()
        waiter.join()
    assert len(moves) == 1
    got.sort()
    assert [stamp.epoch for stamp in got] == [2, 2] and got[1].prev_seq == got[0].seq


def test_a_group_stamped_on_the_fast_and_the_slow_path_at_once_gets_one_chain(source):
    """One thread stamps a group on the slow path (a retry past its window) and is
    paused drawing its seq; another stamps it on the fast path meanwhile. Both paths
    take the group's one lock: the two stamps chain."""
    drawing = threading.Event()

    class Tattling(str):
        """A group id that tells when the thread named "second" looks for its lock."""

        hashed = threading.Event()

        def __hash__(self) -> int:
            if threading.current_thread().name == "second":
                self.hashed.set()
            return 1  # an odd stripe

    group = Tattling("g")

    class Paused(Generator):
        def next_id(self) -> int:
            seq = super().next_id()
            if threading.current_thread().name == "first":
                drawing.set()
                assert group.hashed.wait(10), "the second stamp never started"
            return seq

    clock = Clock(START)
    got = []
    with Paused(source) as generator:
        sequencer = Sequencer(generator, retry_window=30, clock=clock)
        got.append(sequencer.stamp(group, "m1"))
        clock.now += 30  # m1's window is over: stamping it again takes the slow path
        first = threading.Thread(target=lambda: got.append(sequencer.stamp(group, "m1")),
                                 name="first")
        second = threading.Thread(target=lambda: got.append(sequencer.stamp(group)),
                                  name="second")
        first.start()
        assert drawing.wait(10)
        second.start()
        first.join()
        second.join()
    got.sort()
    assert len(got) == 3
    assert [stamp.prev_seq for stamp in got[1:]] == [stamp.seq for stamp in got[:2]]


def test_a_new_epoch_starts_above_what_anyone_stamped_and_forgets_groups_and_retries(
        buffer, source):
    lease = FakeLease(1)
    sequencer = Sequencer(buffer, lease=lease)
    old = sequencer.stamp("g", "m1")
    source.max_id += 10_000  # another owner stamped meanwhile, from the same biz type
    lease.term = (2, START + 10)
    new = sequencer.stamp("g")
    assert new.epoch == 2 and new.seq > source.max_id - 50 > old.seq
    assert new.prev_seq == sequencer.horizon  # not old.seq: the group was forgotten
    retried = sequencer.stamp("g", "m1")
    assert retried.epoch == 2 and retried.seq > new.seq  # a new message under the new owner


def test_epochs_handed_over_under_sixteen_threads_never_interleave_seqs(buffer):
    lease = FakeLease(1)
    sequencer = Sequencer(buffer, lease=lease)
    stamps: dict[int, list[int]] = defaultdict(list)
    lock = threading.Lock()
    stop = threading.Event()

    def work(seed: int) -> None:
        got = []
        for i in range(3000):
            try:
                got.append(sequencer.stamp(f"g{(seed + i) % 5}"))
            except NotOwner:
                pass
        with lock:
            for stamp in got:
                stamps[stamp.epoch].append(stamp.seq)

    def hand_over() -> None:
        for epoch in range(2, 40):
            if stop.wait(0.002):
                return
            lease.term = (epoch, START + 10)

    changer = threading.Thread(target=hand_over)
    changer.start()
    try:
        run_threads(work, [(n,) for n in range(16)])
    finally:
        stop.set()
        changer.join()
    epochs = sorted(stamps)
    assert len(epochs) >= 3
    for before, after in zip(epochs, epochs[1:]):
        assert max(stamps[before]) < min(stamps[after]), (before, after)
    seqs = [seq for epoch in epochs for seq in stamps[epoch]]
    assert len(seqs) == len(set(seqs))


def test_a_group_loaded_before_a_take_over_is_loaded_again_after_it(source, buffer):
    """The lease is lost and granted again while a group loads; meanwhile another owner
    stamped the group. The first stamp after the take-over chains to that owner's seq."""
    lease = FakeLease(epoch=1)
    stored = {"H": 0}
    loads = []

    def loader(group_id):
        loads.append(lease.term[0])
        if len(loads) == 1:  # during the load: another owner's epoch 2, then ours, 3
            stored["H"] = source(source.max_id).end  # the other owner's last seq of H
            lease.term = (3, START + 10)
            return 0  # what the store held when the load read it
        return stored["H"]

    sequencer = Sequencer(buffer, loader=loader, lease=lease)
    stamp = sequencer.stamp("H")
    assert loads == [1, 3]
    assert stamp.epoch == 3 and stamp.prev_seq == stored["H"] < stamp.seq
