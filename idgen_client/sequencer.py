"""The sequencer: message seqs per chat group, from the ID stream.

A group's messages are ordered by the seq one process (the group's owner)
stamps on each. Seqs are IDs of the local generator, so they are unique and
cost a function call; they are not consecutive, so each stamp also carries the
group's previous seq (``Stamp(seq, prev_seq)``) and a receiver that misses a
message sees the chain break (``idgen_client.receiver``). Nothing is written
per message: what keeps a group's seqs increasing is this.

1. One lock serializes stamping. Under it the group's last seq is read, an ID
   drawn, checked to lie above it, and stored; so ``prev_seq -> seq`` links
   form one chain per group, in the order ``stamp()`` returns.
2. The generator's IDs increase across segments, also with several databases
   whose ``max_id``s lag each other: each fetch passes its floor. The sequencer
   still checks every seq against the group's floor, and when the generator
   lies below it (a loader's value from another process, see 4) it does not
   draw IDs until it passes: ``generator.skip_past(floor)`` fetches a segment
   above the floor in one ``NextSegment``, moving a lagging database forward.
3. Restart, ``kill -9`` included. On construction the sequencer calls
   ``generator.skip_past_all()``: ``NextSegment`` with ``above_all``, for which
   the server reads every database's ``max_id`` and allocates above the
   highest (UNAVAILABLE if one cannot be read). Every seq stamped before, by
   any process, was an ID of a segment that committed before it was handed
   out, so it is at most that database's ``max_id`` then, and ``max_id`` only
   grows: so every seq stamped before is at or below the new segment's start
   minus one, the *horizon*, and every seq stamped from now on is above it.
   With one database a plain allocation already gives this; with several, a
   restarted process could otherwise get a segment from a lagging database.
4. Handover and return from eviction. A group the sequencer does not remember
   (new to it, moved from another process, forgotten, or from before a
   restart) starts above ``max(horizon, loaded)``, where ``loaded`` is what
   the application's ``loader(group_id)`` returns (e.g. the highest seq in its
   message store), and its first ``prev_seq`` is ``loaded``. Without a loader
   the first ``prev_seq`` is the horizon: an upper bound of the group's last
   seq, so a receiver sees a possible gap and asks the store, which has the
   missing messages or none (``Receiver.skip``). Never a seq at or below one
   handed out before.
5. Retries. ``stamp(group_id, client_msg_id)`` again within ``retry_window``
   seconds returns the same ``Stamp``, as long as fewer than ``max_retries``
   other stamps with a ``client_msg_id`` were made since. The log of those is
   apart from the groups, so eviction does not shorten it. Not kept across
   restarts: receivers still drop duplicates by message ID.
6. Memory. Groups live in two generations of at most ``max_groups // 2`` each
   (an approximate LRU that costs a dict lookup per stamp, not a reordering):
   a group is forgotten only after ``max_groups // 2`` other groups were
   stamped since its last stamp, and the horizon is raised to its last seq
   when it is, which is what 4 needs. About 150 bytes per group (int keys).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol, Union

from idgen_client.errors import InvalidRequest, ServiceUnavailable
from idgen_client.segment import Segment

__all__ = [
    "DEFAULT_MAX_GROUPS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_WINDOW",
    "GroupId",
    "IdSource",
    "Loader",
    "Sequencer",
    "Stamp",
]

log = logging.getLogger(__name__)

GroupId = Union[str, int]
"""A chat group as the application names it. ``"42"`` and ``42`` are two groups."""

Loader = Callable[[GroupId], int]
"""``loader(group_id)``: the highest seq the group is known to have (0 if none)."""

DEFAULT_MAX_GROUPS = 1_000_000
DEFAULT_RETRY_WINDOW = 120.0
DEFAULT_MAX_RETRIES = 1_000_000
_SKIP_ATTEMPTS = 3  # skip_past() calls per stamp before the generator is called broken


class Stamp(NamedTuple):
    """A message's place in its group: ``prev_seq < seq``; immutable.

    ``prev_seq`` is the seq of the group's previous message (0 for none). A
    ``NamedTuple`` rather than a frozen dataclass: building one costs ~100 ns
    instead of ~270 ns, a third of a stamp's budget.
    """

    seq: int
    prev_seq: int


_new_stamp = tuple.__new__  # Stamp(...) without the Python-level __new__: ~half the cost


class IdSource(Protocol):
    """What the sequencer needs of a generator (``LocalGenerator``, ``DoubleBuffer``).

    It should also have ``skip_past(floor)``, and for restarts in multi-DB mode
    ``skip_past_all()`` (``LocalGenerator`` has both); see the module notes.
    """

    def next_id(self) -> int: ...

    @property
    def floor(self) -> int: ...


def _check_group(group_id: object) -> None:
    if isinstance(group_id, bool) or not isinstance(group_id, (str, int)):
        raise InvalidRequest(f"group id must be a str or an int, not {type(group_id).__name__}")


class Sequencer:
    """Stamps messages of chat groups with increasing seqs. Thread-safe.

    ``generator`` supplies the seqs: give each biz type of messages its own
    ``LocalGenerator``; the sequencer does not close it. Construction calls
    ``generator.skip_past_all()`` when it has one (one ``NextSegment``;
    ``ServiceUnavailable`` while a database of the server cannot be read).
    ``loader(group_id) -> int`` is called, outside the lock, for each group the
    sequencer does not remember. The guarantees, and what they stand on, are
    in the module notes.
    """

    def __init__(
        self,
        generator: IdSource,
        *,
        loader: Loader | None = None,
        max_groups: int = DEFAULT_MAX_GROUPS,
        retry_window: float = DEFAULT_RETRY_WINDOW,
        max_retries: int = DEFAULT_MAX_RETRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_groups < 2:
            raise InvalidRequest(f"max_groups must be at least 2, got {max_groups}")
        if not retry_window >= 0:
            raise InvalidRequest(f"retry_window must be at least 0 seconds, got {retry_window}")
        if max_retries < 0:
            raise InvalidRequest(f"max_retries must be at least 0, got {max_retries}")
        self._generator = generator
        self._next_id = generator.next_id
        self._loader = loader
        self._generation = max_groups // 2
        self._retry_window = retry_window
        self._max_retries = max_retries
        self._clock = clock
        self._lock = threading.Lock()
        # Guarded by _lock: group -> its last seq, in two generations (module note 6).
        self._young: dict[GroupId, int] = {}
        self._old: dict[GroupId, int] = {}
        # (group, client_msg_id) -> (expires at, stamp), oldest first.
        self._retries: OrderedDict[tuple[GroupId, str], tuple[float, Stamp]] = OrderedDict()
        skip_past_all: Callable[[], Segment] | None = getattr(generator, "skip_past_all", None)
        if skip_past_all is not None:
            self._horizon = skip_past_all().start - 1  # module note 3
        else:
            self._horizon = generator.floor  # above what this generator gave, nothing more
        self.skips = 0
        """Times the generator was moved past a group's floor instead of drained."""

    # -- hot path ---------------------------------------------------------------

    def stamp(self, group_id: GroupId, client_msg_id: str | None = None) -> Stamp:
        """The next ``Stamp`` of the group: ``seq`` above every seq the group had.

        With a ``client_msg_id``, stamping the same message again within the
        retry window returns the first ``Stamp``. May block on a segment fetch
        or the loader; raises what they raise (``ServiceUnavailable``, ...).
        """
        if client_msg_id is None:
            # The common case: a remembered group, an ID above its last. Locals and
            # no calls beyond next_id(): this path is the benchmark's ~0.4 µs.
            lock = self._lock
            lock.acquire()
            try:
                young = self._young
                last = young.get(group_id)
                if last is not None:
                    seq = self._next_id()
                    if seq > last:
                        young[group_id] = seq
                        return _new_stamp(Stamp, (seq, last))
            finally:
                lock.release()
        return self._stamp(group_id, client_msg_id)

    # -- slow path ----------------------------------------------------------------

    def _stamp(self, group_id: GroupId, client_msg_id: str | None) -> Stamp:
        """Everything but the common case: retries, unknown groups, floors to skip."""
        _check_group(group_id)
        key: tuple[GroupId, str] | None = None
        if client_msg_id is not None:
            if not isinstance(client_msg_id, str):
                raise InvalidRequest(
                    f"client_msg_id must be a str, not {type(client_msg_id).__name__}")
            key = (group_id, client_msg_id)
        loaded: int | None = None
        skips = 0
        while True:
            with self._lock:
                now = self._clock() if key is not None else 0.0
                if key is not None:
                    entry = self._retries.get(key)
                    if entry is not None and entry[0] > now:
                        return entry[1]
                last = self._recall(group_id)
                if last is not None:
                    floor = prev = last
                elif self._loader is None or loaded is not None:
                    prev = self._horizon if loaded is None else loaded
                    floor = max(prev, self._horizon)
                else:
                    floor = -1  # load first, outside the lock
                if floor >= 0:
                    seq = self._next_id()
                    if seq > floor:
                        self._remember(group_id, seq)
                        stamp = _new_stamp(Stamp, (seq, prev))
                        if key is not None:
                            self._log_retry(key, stamp, now)
                        return stamp
            if floor < 0:
                loaded = self._load(group_id)
                continue
            skips += 1
            if skips > _SKIP_ATTEMPTS:
                raise ServiceUnavailable(
                    f"the ID generator keeps handing out IDs at or below {floor}, the floor of "
                    f"group {group_id!r}, after {_SKIP_ATTEMPTS} attempts to move it past: retry later"
                )
            self._skip_past(floor)

    def _recall(self, group_id: GroupId) -> int | None:
        """The group's last seq if remembered, moved to the young generation. Lock held."""
        last = self._young.get(group_id)
        if last is None:
            last = self._old.pop(group_id, None)
            if last is not None:
                self._remember(group_id, last)
        return last

    def _remember(self, group_id: GroupId, seq: int) -> None:
        """Store the group's last seq. Lock held.

        When the young generation is full it becomes the old one and the old
        one is forgotten; the horizon rises to the highest seq forgotten, so a
        forgotten group that returns starts above its last seq (module note 4).
        The max() is O(max_groups / 2), once per max_groups / 2 new groups.
        """
        young = self._young
        if group_id not in young and len(young) >= self._generation:
            old = self._old
            if old:
                self._horizon = max(self._horizon, max(old.values()))
            self._old, self._young = young, {}
            young = self._young
        young[group_id] = seq

    def _log_retry(self, key: tuple[GroupId, str], stamp: Stamp, now: float) -> None:
        """Remember a stamp for retries; drop expired and surplus entries. Lock held."""
        retries = self._retries
        retries[key] = (now + self._retry_window, stamp)
        retries.move_to_end(key)
        while retries:
            oldest = next(iter(retries.values()))
            if oldest[0] > now and len(retries) <= self._max_retries:
                break
            retries.popitem(last=False)

    def _load(self, group_id: GroupId) -> int:
        assert self._loader is not None
        value = self._loader(group_id)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidRequest(
                f"the loader returned {value!r} for group {group_id!r}: it must return the "
                "group's highest seq as an int, 0 for none")
        return value

    def _skip_past(self, floor: int) -> None:
        """Make the generator hand out IDs above ``floor`` (outside the lock)."""
        self.skips += 1
        skip_past: Callable[[int], object] | None = getattr(self._generator, "skip_past", None)
        if skip_past is not None:
            log.info("moving the ID generator past %d, a group's floor", floor)
            skip_past(floor)
            return
        # A generator that cannot skip has to be drawn until it passes the floor.
        with self._lock:
            while self._next_id() <= floor:
                pass

    # -- introspection --------------------------------------------------------------

    @property
    def horizon(self) -> int:
        """At or above the last seq of every group this sequencer does not remember:
        seqs stamped before it started, and of groups it forgot."""
        with self._lock:
            return self._horizon

    def __len__(self) -> int:
        """How many groups are remembered (at most ``max_groups``)."""
        with self._lock:
            return len(self._young) + len(self._old)
