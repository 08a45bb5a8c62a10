"""The sequencer under a lease: it stamps only while the lease is held, every stamp
carries the epoch, and a new epoch starts above everything stamped before it.

The lease here is a stand-in whose term the test sets; ``Lease`` against real
servers, and owners handing groups over, are in test_handover.py.
"""
from __future__ import annotations

import threading
from collections import defaultdict

import pytest

from idgen_client import ConfigError, NotOwner, Sequencer
from idgen_core.buffer import DoubleBuffer
from tests.support.fakes import Clock, Source
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


def test_without_the_lease_nothing_is_stamped(buffer):
    lease = FakeLease(0, float("-inf"))
    sequencer = Sequencer(buffer, lease=lease)
    with pytest.raises(NotOwner, match="does not hold the lease .chat-7. that group .g. is stamped under"):
        sequencer.stamp("g")
    lease.term = (1, START + 10)
    assert sequencer.stamp("g").epoch == 1


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
