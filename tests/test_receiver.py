"""The receiver: order restored, every gap found, no gap invented."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idgen_client import Arrival, Gap, InvalidRequest, Receiver, Stamp
from idgen_core.buffer import DoubleBuffer
from tests.support.fakes import Source


def chain(seqs: list[int], start: int = 0) -> list[Stamp]:
    """The stamps a sequencer gives messages with these seqs, after ``start``."""
    prevs = [start, *seqs[:-1]]
    return [Stamp(seq, prev) for seq, prev in zip(seqs, prevs)]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[Stamp], list[Stamp], list[Stamp]]:
    """A sent chain (seqs with random jumps), and what arrived: some dropped, some
    twice, in random order. Returns (start, sent, arrived, dropped)."""
    start = draw(st.integers(0, 1_000))
    jumps = draw(st.lists(st.integers(1, 50), min_size=1, max_size=60))
    seqs, seq = [], start
    for jump in jumps:
        seq += jump
        seqs.append(seq)
    sent = chain(seqs, start)
    fate = draw(st.lists(st.sampled_from(["once", "once", "once", "twice", "lost"]),
                         min_size=len(sent), max_size=len(sent)))
    arrived = [s for s, f in zip(sent, fate) if f != "lost"]
    arrived += [s for s, f in zip(sent, fate) if f == "twice"]
    dropped = [s for s, f in zip(sent, fate) if f == "lost"]
    random.Random(draw(st.integers())).shuffle(arrived)
    return start, sent, arrived, dropped


@settings(max_examples=400, deadline=None)
@given(deliveries(), st.integers(1, 10))
def test_every_gap_is_found_and_no_gap_is_invented(delivery, chunk):
    start, sent, arrived, dropped = delivery
    receiver: Receiver[str] = Receiver(last_shown=lambda group: start)
    shown: list[Stamp] = []
    for i in range(0, len(arrived), chunk):  # the app shows what it can as messages come
        for stamp in arrived[i:i + chunk]:
            receiver.add("g", stamp, f"m{stamp.seq}")
        shown += [stamp for stamp, _ in receiver.ready("g")]

    lost = {s.seq for s in dropped}
    received = {s.seq for s in arrived}
    first_loss = next((i for i, s in enumerate(sent) if s.seq in lost), len(sent))
    assert shown == sent[:first_loss]  # in order, each once, up to the first loss

    gaps = receiver.missing("g")
    for gap in gaps:  # no false gap: its last seq was lost, and nothing in it arrived
        assert gap.through in lost
        assert not any(gap.after < seq <= gap.through for seq in received)
    top = max(received, default=start)
    for seq in lost:  # every loss below the highest arrival lies in a reported gap
        if seq < top:
            assert any(gap.after < seq <= gap.through for gap in gaps), (seq, gaps)
        else:
            assert not any(gap.after < seq <= gap.through for gap in gaps)

    for stamp in dropped:  # fetched from the store: then everything comes out, in order
        receiver.add("g", stamp, f"m{stamp.seq}")
    shown += [stamp for stamp, _ in receiver.ready("g")]
    assert shown == sent
    assert receiver.missing("g") == [] and receiver.held("g") == 0


def test_messages_come_out_in_order_with_their_payloads():
    receiver: Receiver[str] = Receiver()
    a, b, c = chain([10, 25, 31])
    assert receiver.add("g", c, "third") is receiver.add("g", a, "first") is Arrival.HELD
    assert receiver.ready("g") == [(a, "first")]
    assert receiver.missing("g") == [Gap(after=10, through=25)]
    receiver.add("g", b, "second")
    assert receiver.ready("g") == [(b, "second"), (c, "third")]
    assert receiver.shown("g") == 31


def test_duplicates_and_messages_already_shown_are_answered_duplicate():
    receiver: Receiver[str] = Receiver()
    a, b = chain([5, 9])
    assert receiver.add("g", b) is Arrival.HELD and receiver.add("g", b) is Arrival.DUPLICATE
    receiver.add("g", a)
    receiver.ready("g")
    assert receiver.add("g", a) is Arrival.DUPLICATE and receiver.held("g") == 0


def test_a_late_write_below_what_was_shown_is_surfaced_never_swallowed():
    """An old owner still stamping after the new one took over: its message's seq lies
    below what was shown, and it was never shown. It comes back LATE, once."""
    receiver: Receiver[str] = Receiver()
    new_owner = chain([10, 30])
    for stamp in new_owner:
        receiver.add("g", stamp, f"new {stamp.seq}")
    assert len(receiver.ready("g")) == 2
    old_owner = Stamp(20, 10)  # stamped by the old owner from its own chain
    assert receiver.add("g", old_owner, "old 20", message_id="m-old") is Arrival.LATE
    assert receiver.add("g", old_owner, "old 20", message_id="m-old") is Arrival.DUPLICATE
    assert receiver.ready("g") == [] and receiver.shown("g") == 30


def test_a_retry_that_got_a_new_seq_after_a_restart_is_shown_once():
    receiver: Receiver[str] = Receiver()
    first = Stamp(5, 0)
    assert receiver.add("g", first, "hi", message_id="client-1") is Arrival.HELD
    again = Stamp(900, 5)  # the owner restarted and stamped the sender's retry anew
    assert receiver.add("g", again, "hi", message_id="client-1") is Arrival.DUPLICATE
    assert receiver.ready("g") == [(first, "hi")] and receiver.held("g") == 0


def test_a_message_arriving_after_its_gap_was_skipped_is_late_not_dropped():
    receiver: Receiver[str] = Receiver()
    receiver.add("g", Stamp(50, 40))
    receiver.skip("g", 40)
    assert receiver.ready("g") == [(Stamp(50, 40), None)]
    assert receiver.add("g", Stamp(40, 0), "found at last") is Arrival.LATE


def test_beyond_what_it_remembers_an_old_arrival_is_late_rather_than_dropped():
    receiver: Receiver[str] = Receiver(remember=2)
    stamps = chain([1, 2, 3, 4])
    for stamp in stamps:
        receiver.add("g", stamp)
    receiver.ready("g")
    assert receiver.add("g", stamps[3]) is Arrival.DUPLICATE  # remembered
    assert receiver.add("g", stamps[0]) is Arrival.LATE  # forgotten: the store can tell


def test_a_gap_the_store_cannot_fill_is_skipped():
    # A sequencer without a loader starts a group it forgot at its horizon, an
    # upper bound of the group's last seq: the store has nothing in between.
    receiver: Receiver[str] = Receiver(last_shown=lambda group: 40)
    after_restart = Stamp(7_001, 7_000)
    receiver.add("g", after_restart)
    assert receiver.ready("g") == [] and receiver.missing("g") == [Gap(40, 7_000)]
    receiver.skip("g", 7_000)
    assert receiver.ready("g") == [(after_restart, None)] and receiver.missing("g") == []


def test_groups_are_independent():
    receiver: Receiver[str] = Receiver()
    receiver.add("a", Stamp(5, 3))
    receiver.add(42, Stamp(2, 0))
    assert receiver.missing("a") == [Gap(0, 3)] and receiver.missing(42) == []
    assert receiver.ready(42) == [(Stamp(2, 0), None)] and receiver.ready("a") == []


@pytest.mark.parametrize("stamp", [Stamp(5, 5), Stamp(5, 9), Stamp(5, -1)])
def test_a_stamp_whose_prev_seq_is_not_below_its_seq_is_refused(stamp):
    with pytest.raises(InvalidRequest, match="prev_seq"):
        Receiver().add("g", stamp)


def test_a_sequencer_restarted_without_a_loader_costs_the_receiver_one_empty_fetch():
    from idgen_client import Sequencer

    fetch = Source(step=100)  # one database's max_id, in memory
    receiver: Receiver[str] = Receiver()
    with DoubleBuffer(fetch) as before_restart:
        sequencer = Sequencer(before_restart)
        stamps = [sequencer.stamp("g") for _ in range(5)]
    with DoubleBuffer(fetch) as after_restart:  # a new process: it remembers nothing
        stamps += [Sequencer(after_restart).stamp("g") for _ in range(1)]
    for stamp in reversed(stamps):
        receiver.add("g", stamp)
    assert [s for s, _ in receiver.ready("g")] == stamps[:5]
    (gap,) = receiver.missing("g")  # the chain jumps to the new process's horizon
    assert gap == Gap(stamps[4].seq, stamps[5].prev_seq) and stamps[5].prev_seq >= stamps[4].seq
    receiver.skip("g", gap.through)  # the store has nothing in between
    assert [s for s, _ in receiver.ready("g")] == stamps[5:]


def test_a_skipped_gap_is_not_reported_missing_again():
    receiver: Receiver[str] = Receiver(last_shown=lambda group: 40)
    receiver.add("g", Stamp(7_001, 7_000))
    receiver.add("g", Stamp(9_001, 9_000))  # a second gap, after the first
    assert receiver.missing("g") == [Gap(40, 7_000), Gap(7_001, 9_000)]
    receiver.skip("g", 7_000)  # the store had nothing up to 7,000; nothing released yet
    assert receiver.missing("g") == [Gap(7_001, 9_000)]
    receiver.skip("g", 9_000)
    assert receiver.missing("g") == []


def test_it_remembers_as_many_seqs_as_it_is_told():
    receiver: Receiver[str] = Receiver(remember=2)
    stamps = chain([1, 2, 3])
    for stamp in stamps:
        receiver.add("g", stamp)
    receiver.ready("g")
    assert receiver.add("g", stamps[1]) is Arrival.DUPLICATE  # the older of the two kept
    assert receiver.add("g", stamps[0]) is Arrival.LATE


def test_remembering_a_single_seq_is_allowed():
    receiver: Receiver[str] = Receiver(remember=1)
    receiver.add("g", Stamp(1, 0))
    assert receiver.add("g", Stamp(1, 0)) is Arrival.DUPLICATE


def test_remembering_nothing_is_refused():
    with pytest.raises(InvalidRequest, match="remember"):
        Receiver(remember=0)


def test_each_group_starts_at_what_the_application_last_showed_of_it():
    receiver: Receiver[str] = Receiver(last_shown={"a": 10, "b": 20}.__getitem__)
    assert receiver.shown("a") == 10 and receiver.shown("b") == 20


def test_the_message_last_shown_before_a_restart_is_not_held_again():
    receiver: Receiver[str] = Receiver(last_shown=lambda group: 40)
    assert receiver.add("g", Stamp(40, 30), "shown before") is Arrival.DUPLICATE
    assert receiver.held("g") == 0 and receiver.ready("g") == []


def test_after_a_restart_an_older_message_never_shown_is_late_and_the_one_shown_a_duplicate():
    # Seqs are IDs, unique across groups: only the message last shown has its seq.
    receiver: Receiver[str] = Receiver(last_shown=lambda group: 40)
    assert receiver.add("g", Stamp(35, 30), "a fork's, never shown") is Arrival.LATE
    assert receiver.add("g", Stamp(40, 30), "shown before") is Arrival.DUPLICATE


def test_held_counts_the_messages_waiting_behind_a_gap():
    receiver: Receiver[str] = Receiver()
    assert receiver.held("g") == 0  # a group never met holds nothing
    receiver.add("g", Stamp(5, 3))
    receiver.add("g", Stamp(9, 5))
    assert receiver.held("g") == 2 and receiver.held("other") == 0
