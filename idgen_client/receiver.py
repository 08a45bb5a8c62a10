"""The receiver: a group's messages back in order, and the ones that went missing.

What a chat client does with stamped messages (``idgen_client.sequencer``).
Messages arrive in any order, some twice, some never. Per group the receiver
keeps the seq it last released for display (``shown``) and the messages it
holds back. Seqs are not consecutive, so order alone cannot tell a gap; the
``prev_seq`` of each stamp can:

- The held message with the lowest seq is next in line when its ``prev_seq``
  is at or below ``shown``: nothing can be missing before it. ``ready()``
  releases such messages one after the other, in seq order.
- Otherwise its ``prev_seq`` names a message that is missing for certain: it
  lies above everything shown and held below, or it would have been received.
  More may be missing before it, down to the next known seq. ``missing()``
  reports each such stretch as a ``Gap(after, through)``: ask the server or the
  message store for the group's messages with ``after < seq <= through`` and
  ``add()`` them; if it has none (a sequencer without a loader starts a group
  it does not remember at an upper bound, not at its exact last seq), call
  ``skip(group_id, through)``.

So a gap is reported only when a message that was sent did not arrive, and
every message that did not arrive is inside a reported gap once any later
message of its group has arrived. (One lost after the last arrival cannot be
seen by anyone: that is what a periodic sync is for.)

Nothing that arrives is dropped without saying why. ``add()`` answers with an
``Arrival``:

- ``HELD``: held until ``ready()`` releases it in its place;
- ``DUPLICATE``: this message was shown or is held already, recognised by its
  seq (``last_shown``'s seq included: no other message has it), or by its message
  ID (``message_id=``) when a sender's retry got a new seq after its group's owner
  restarted;
- ``LATE``: its seq is at or below what was shown, yet it was never shown: a write
  that lost a race, an old owner still stamping after a new one took over (a
  fork of the chain). The application must show it anyway (for example in its
  seq's place, marked) and should check the owner's fencing epoch.

Per group the last ``remember`` shown or held seqs and message IDs are kept to
tell a duplicate from a late message; an arrival at or below ``shown`` that is
older than them is answered ``LATE`` (it may be a very old duplicate: the
application's store, which has the message IDs, can tell).
"""
from __future__ import annotations

import enum
import heapq
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from idgen_client.sequencer import GroupId, Stamp
from idgen_core.errors import InvalidRequest

__all__ = ["DEFAULT_REMEMBER", "Arrival", "Gap", "Receiver"]

M = TypeVar("M")

DEFAULT_REMEMBER = 1024
"""Seqs and message IDs remembered per group to tell a duplicate from a late message."""


class Arrival(enum.Enum):
    """What ``Receiver.add`` did with a message (module notes)."""

    HELD = "held"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of a group with ``after < seq <= through`` are missing; the one
    whose seq is ``through`` certainly exists."""

    after: int
    through: int


@dataclass(slots=True)
class _Group(Generic[M]):
    shown: int
    skipped: int = 0  # skip(): nothing unreceived at or below this is coming
    held: dict[int, tuple[Stamp, M | None]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # heap of the held seqs
    # Seqs and message IDs met (held, shown, or answered LATE), oldest first, bounded.
    seqs: OrderedDict[int, None] = field(default_factory=OrderedDict)
    ids: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)

    def remember(self, seq: int, message_id: Hashable | None, bound: int) -> None:
        for seen, key in ((self.seqs, seq), (self.ids, message_id)):
            if key is None:
                continue
            seen[key] = None
            seen.move_to_end(key)
            while len(seen) > bound:
                seen.popitem(last=False)


class Receiver(Generic[M]):
    """Puts stamped messages of many groups back in order. Thread-safe.

    ``last_shown(group_id)`` is called the first time a group is met: the seq
    the application last displayed for it (default: 0, nothing yet); it runs
    under the receiver's lock, so it must not call the receiver. Messages
    are held until ``ready()`` releases them; memory grows with what is held
    while a gap stays open.
    """

    def __init__(self, last_shown: Callable[[GroupId], int] | None = None, *,
                 remember: int = DEFAULT_REMEMBER) -> None:
        if remember < 1:
            raise InvalidRequest(f"remember must be at least 1, got {remember}")
        self._last_shown = last_shown
        self._remember = remember
        self._groups: dict[GroupId, _Group[M]] = {}
        self._lock = threading.Lock()

    def _group(self, group_id: GroupId) -> _Group[M]:
        group = self._groups.get(group_id)
        if group is None:
            shown = self._last_shown(group_id) if self._last_shown is not None else 0
            group = self._groups[group_id] = _Group(shown)
            if shown:  # a seq is one message's: the one arriving with it was shown
                group.remember(shown, None, self._remember)
        return group

    def add(self, group_id: GroupId, stamp: Stamp, message: M | None = None, *,
            message_id: Hashable | None = None) -> Arrival:
        """Take a received message: ``HELD`` for ``ready()`` to release, ``DUPLICATE`` if it
        was met before (by seq, or by ``message_id`` if given), ``LATE`` if it lies at or
        below what was shown without having been shown (show it anyway: module notes)."""
        seq, prev_seq = stamp[0], stamp[1]
        if not 0 <= prev_seq < seq:
            raise InvalidRequest(f"a stamp needs 0 <= prev_seq < seq, got {stamp}")
        with self._lock:
            group = self._group(group_id)
            if seq in group.seqs or (message_id is not None and message_id in group.ids):
                return Arrival.DUPLICATE
            group.remember(seq, message_id, self._remember)
            if seq <= group.shown:
                return Arrival.LATE
            group.held[seq] = (Stamp(seq, prev_seq), message)
            heapq.heappush(group.order, seq)
            return Arrival.HELD

    def ready(self, group_id: GroupId) -> list[tuple[Stamp, M | None]]:
        """Release the messages that can be shown now, in order (each exactly once)."""
        released: list[tuple[Stamp, M | None]] = []
        with self._lock:
            group = self._group(group_id)
            order, held = group.order, group.held
            while order:
                stamp, message = held[order[0]]
                if stamp.prev_seq > max(group.shown, group.skipped):
                    break  # the message at prev_seq has not arrived
                heapq.heappop(order)
                del held[stamp.seq]
                group.shown = stamp.seq
                released.append((stamp, message))
        return released

    def missing(self, group_id: GroupId) -> list[Gap]:
        """The gaps in what was received, lowest first (see the module notes)."""
        gaps: list[Gap] = []
        with self._lock:
            group = self._group(group_id)
            known = max(group.shown, group.skipped)
            for seq in sorted(group.held):
                prev_seq = group.held[seq][0].prev_seq
                if prev_seq > known:
                    gaps.append(Gap(known, prev_seq))
                known = max(known, seq)
        return gaps

    def skip(self, group_id: GroupId, through: int) -> None:
        """Declare that no message of the group at or below ``through`` that has not
        arrived yet will come: ``ready()`` goes past them. Call it when the store
        had nothing (more) for a reported gap. A message that arrives after
        later ones were released in its place is refused as already shown."""
        with self._lock:
            group = self._group(group_id)
            group.skipped = max(group.skipped, through)

    def shown(self, group_id: GroupId) -> int:
        """The seq of the last message released for the group (or ``last_shown``'s)."""
        with self._lock:
            return self._group(group_id).shown

    def held(self, group_id: GroupId) -> int:
        """How many messages of the group are held back."""
        with self._lock:
            group = self._groups.get(group_id)
            return 0 if group is None else len(group.held)
