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
"""
from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from idgen_client.sequencer import GroupId, Stamp
from idgen_core.errors import InvalidRequest

__all__ = ["Gap", "Receiver"]

M = TypeVar("M")


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


class Receiver(Generic[M]):
    """Puts stamped messages of many groups back in order. Thread-safe.

    ``last_shown(group_id)`` is called the first time a group is met: the seq
    the application last displayed for it (default: 0, nothing yet); it runs
    under the receiver's lock, so it must not call the receiver. Messages
    are held until ``ready()`` releases them; memory grows with what is held
    while a gap stays open.
    """

    def __init__(self, last_shown: Callable[[GroupId], int] | None = None) -> None:
        self._last_shown = last_shown
        self._groups: dict[GroupId, _Group[M]] = {}
        self._lock = threading.Lock()

    def _group(self, group_id: GroupId) -> _Group[M]:
        group = self._groups.get(group_id)
        if group is None:
            shown = self._last_shown(group_id) if self._last_shown is not None else 0
            group = self._groups[group_id] = _Group(shown)
        return group

    def add(self, group_id: GroupId, stamp: Stamp, message: M | None = None) -> bool:
        """Hold a received message; False if it is a duplicate or was shown already."""
        seq, prev_seq = stamp
        if not 0 <= prev_seq < seq:
            raise InvalidRequest(f"a stamp needs 0 <= prev_seq < seq, got {stamp}")
        with self._lock:
            group = self._group(group_id)
            if seq <= group.shown or seq in group.held:
                return False
            group.held[seq] = (Stamp(seq, prev_seq), message)
            heapq.heappush(group.order, seq)
            return True

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
