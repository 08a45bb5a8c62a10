"""The sequencer: message seqs per chat group, from the ID stream.

A group's messages are ordered by the seq one process (the group's owner)
stamps on each. Seqs are IDs of the local generator, so they are unique and
cost a function call; they are not consecutive, so each stamp also carries the
group's previous seq (``Stamp(seq, prev_seq)``) and a receiver that misses a
message sees the chain break (``idgen_client.receiver``). Nothing is written
per message. What keeps a group's seqs increasing (docs/design.md, section 9,
has the whole argument):

1. A group's stamps are serialized by one of 64 locks, picked by its hash:
   its last seq is read, an ID drawn, checked to lie above, stored. One lock
   for all made 0.33 M stamps/s with 8 threads, 64 made 1.6 M/s
   (benchmarks/bench_sequencer.py): a thread preempted holding the one lock
   made every other thread queue.
2. A generator below a group's floor is moved past it with
   ``generator.skip_past(floor)`` (one ``NextSegment``), not drained.
3. Restart, ``kill -9`` included: construction calls
   ``generator.skip_past_all()`` (``NextSegment`` with ``above_all``); every
   seq stamped before, by any process, is at or below that segment's start
   minus one, the *horizon*.
4. A group the sequencer does not remember starts above ``max(horizon,
   loaded)``, ``loaded`` being what ``loader(group_id)`` returns (e.g. the
   highest seq in the message store); its first ``prev_seq`` is ``loaded``, or
   without a loader the horizon, so a receiver checks for a gap.
5. ``stamp(group_id, client_msg_id)`` again within ``retry_window`` seconds
   returns the same ``Stamp`` (``idgen_client.retries``).
6. At most ``max_groups`` groups are remembered (an LRU); forgetting one
   raises the horizon to its last seq, which is what 4 needs.

7. Ownership (``lease=``, ``idgen_client.lease``): only the holder of a
   group's lease stamps it. A stamp draws its seq first and then checks the
   lease (one monotonic read against the term's end), so every seq it hands
   out was drawn while the lease was held, from a segment allocated before any
   later owner's ``skip_past_all``. The first stamp under a new epoch takes
   over: with every stripe held it moves the generator above all
   (``skip_past_all``) and forgets every group and retry, since another owner
   may have stamped them meanwhile. Every ``Stamp`` carries the epoch, for the
   message store's check (docs/design.md, section 11). Without the lease, or
   once it may be lost, ``stamp`` raises ``NotOwner``.

Thread-safety also relies on the GIL making each single ``OrderedDict`` call
atomic; another stripe's thread may evict a group while its stamp runs, which
is why a stamp writes its seq back whether or not the group is still there.
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol, Union

from idgen_client.retries import RetryLog
from idgen_core.errors import ConfigError, InvalidRequest, NotOwner, ServiceUnavailable
from idgen_core.segment import Segment

__all__ = [
    "DEFAULT_MAX_GROUPS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_WINDOW",
    "GroupId",
    "IdSource",
    "LeaseTerm",
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
# IDs drawn to pass a floor, from a generator without skip_past(): a second or so at most. A
# floor further up would keep the stamp (and its group's stripe) drawing for minutes or more.
_DRAIN_LIMIT = 1_000_000
_STRIPES = 64  # locks; a power of two (module note 1)


class Stamp(NamedTuple):
    """A message's place in its group: ``prev_seq < seq``; immutable.

    ``prev_seq`` is the seq of the group's previous message (0 for none).
    ``epoch`` is the lease's epoch it was stamped under (0 without a lease): a
    message store refuses a message whose epoch is below the highest it saved
    for the group. A ``NamedTuple`` rather than a frozen dataclass: building
    one costs ~100 ns instead of ~270 ns, a third of a stamp's budget.
    """

    seq: int
    prev_seq: int
    epoch: int = 0


_new_stamp = tuple.__new__  # Stamp(...) without the Python-level __new__: ~half the cost


class IdSource(Protocol):
    """What the sequencer needs of a generator (``LocalGenerator``, ``DoubleBuffer``).

    It should also have ``skip_past(floor)``, and for restarts in multi-DB mode
    ``skip_past_all()`` (``LocalGenerator`` has both); see the module notes. One
    without ``skip_past`` is drawn up to a group's floor, at most 1,000,000 IDs; a floor
    further up raises ``ConfigError``.
    """

    def next_id(self) -> int: ...

    @property
    def floor(self) -> int: ...


class LeaseTerm(Protocol):
    """What the sequencer needs of a lease (``idgen_client.Lease``)."""

    term: tuple[int, float]
    """``(epoch, until)``: stamps under ``epoch`` while ``clock() < until``; epoch 0: none."""

    clock: Callable[[], float]


def _check_group(group_id: object) -> None:
    if isinstance(group_id, bool) or not isinstance(group_id, (str, int)):
        raise InvalidRequest(f"group id must be a str or an int, not {type(group_id).__name__}")


class Sequencer:
    """Stamps messages of chat groups with increasing seqs. Thread-safe.

    ``generator`` supplies the seqs: give each biz type of messages its own
    ``LocalGenerator``; the sequencer does not close it. Construction calls
    ``generator.skip_past_all()`` when it has one (one ``NextSegment``;
    ``ServiceUnavailable`` while a database of the server cannot be read),
    else ``generator.skip_past(floor)`` (enough with one database); with a
    ``lease``, the first stamp under each of its epochs does instead.
    ``loader(group_id) -> int`` is called, outside any lock, for each group
    the sequencer does not remember. Group ids are dict keys: ``1`` and
    ``True`` are one group, ``"1"`` another. The guarantees, and what they
    stand on, are in the module notes.
    """

    def __init__(
        self,
        generator: IdSource,
        *,
        loader: Loader | None = None,
        lease: LeaseTerm | None = None,
        max_groups: int = DEFAULT_MAX_GROUPS,
        retry_window: float = DEFAULT_RETRY_WINDOW,
        max_retries: int = DEFAULT_MAX_RETRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if inspect.iscoroutinefunction(getattr(generator, "next_id", None)):
            raise ConfigError("this generator is for asyncio (its next_id is a coroutine): "
                              "stamp with idgen_client.aio.AsyncSequencer")
        self._check_settings(loader=loader, lease=lease, max_groups=max_groups,
                             retry_window=retry_window, max_retries=max_retries)
        if lease is not None and not callable(getattr(generator, "skip_past_all", None)):
            raise ConfigError(
                "a sequencer under a lease needs a generator with skip_past_all() (a "
                "LocalGenerator): each new owner must start above every database")
        self._generator = generator
        self._next_id = generator.next_id
        self._loader = loader
        self._lease = lease
        self._lease_clock = lease.clock if lease is not None else clock
        self._epoch = 0  # the lease's epoch taken over (module note 7)
        self._max_groups = max_groups
        self._stripes = tuple(threading.Lock() for _ in range(_STRIPES))
        # group -> its last seq, least recently stamped first. A group's entry is
        # written under its stripe's lock; evicted under _evict_lock.
        self._groups: OrderedDict[GroupId, int] = OrderedDict()
        self._evict_lock = threading.Lock()  # guards _horizon, skips and eviction
        self._retry_log = RetryLog(retry_window, max_retries, clock)
        self._retries = self._retry_log.entries  # read without a lock on the hot path
        self._log_retry = self._retry_log.record
        self._skips = 0
        self._horizon = 0
        if lease is None:
            self._horizon = self._above_all()

    @staticmethod
    def _check_settings(*, loader: Loader | None, lease: LeaseTerm | None, max_groups: int,
                        retry_window: float, max_retries: int) -> None:
        """``ConfigError`` for the first setting that is wrong (the generator aside)."""
        if loader is not None and not callable(loader):
            raise ConfigError(f"loader must be a function of the group id, not {type(loader).__name__}")
        if max_groups < 1:
            raise ConfigError(f"max_groups must be at least 1, got {max_groups}")
        if not retry_window >= 0:
            raise ConfigError(f"retry_window must be at least 0 seconds, got {retry_window}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be at least 0, got {max_retries}")
        if lease is not None and (not isinstance(getattr(lease, "term", None), tuple)
                                  or not callable(getattr(lease, "clock", None))):
            raise ConfigError(f"lease must be an idgen_client.Lease, not {type(lease).__name__}")

    def _above_all(self) -> int:
        """Move the generator above every seq stamped before (module note 3); the horizon."""
        generator = self._generator
        skip_past_all: Callable[[], Segment] | None = getattr(generator, "skip_past_all", None)
        skip_past: Callable[[int], Segment] | None = getattr(generator, "skip_past", None)
        if skip_past_all is not None:
            return skip_past_all().start - 1
        if skip_past is not None:
            # A fresh segment: from one database, above everything it allocated before.
            return skip_past(generator.floor).start - 1
        return generator.floor  # above what this generator gave, nothing more

    # -- hot path ---------------------------------------------------------------

    def stamp(self, group_id: GroupId, client_msg_id: str | None = None) -> Stamp:
        """The next ``Stamp`` of the group: ``seq`` above every seq the group had.

        With a ``client_msg_id``, stamping the same message again within the
        retry window returns the first ``Stamp`` (of the same epoch). May block on
        a segment fetch or the loader; raises what they raise (``ServiceUnavailable``,
        ...), and ``NotOwner`` with a lease not held.
        """
        # The common case: a remembered group, an ID above its last, no retry, the lease
        # held. Locals, and no call but next_id() and the clock under the lock: ~0.5 µs.
        if type(group_id) is not str and type(group_id) is not int:
            # Checked there: True and 1.0 would find group 1 in the dicts below.
            return self._stamp(group_id, client_msg_id)
        lock = self._stripes[hash(group_id) & (_STRIPES - 1)]
        key = None
        if client_msg_id is not None:
            if type(client_msg_id) is not str:
                return self._stamp(group_id, client_msg_id)
            key = (group_id, client_msg_id)
        lease = self._lease
        lock.acquire()
        try:
            # A single OrderedDict.get is atomic under the GIL: no retry lock to read.
            if key is None or key not in self._retries:
                groups = self._groups
                last = groups.get(group_id)
                if last is not None:
                    seq = self._next_id()
                    # Drawn first, checked after (module note 7).
                    epoch = self._epoch
                    if seq > last and (lease is None or (
                            (term := lease.term)[0] == epoch and self._lease_clock() < term[1])):
                        groups[group_id] = seq
                        try:
                            groups.move_to_end(group_id)
                        except KeyError:  # evicted meanwhile: the horizon covers seq
                            pass
                        if key is not None:
                            self._log_retry(key, seq, last)
                        return _new_stamp(Stamp, (seq, last, epoch))
        finally:
            lock.release()
        return self._stamp(group_id, client_msg_id)

    # -- slow path ----------------------------------------------------------------

    def _stamp(self, group_id: GroupId, client_msg_id: str | None) -> Stamp:
        """Everything but the common case: retries, unknown groups, floors to skip,
        a lease to take over or not held."""
        _check_group(group_id)
        key: tuple[GroupId, str] | None = None
        if client_msg_id is not None:
            if not isinstance(client_msg_id, str):
                raise InvalidRequest(
                    f"client_msg_id must be a str, not {type(client_msg_id).__name__}")
            key = (group_id, client_msg_id)
        lock = self._stripes[hash(group_id) & (_STRIPES - 1)]
        loaded: int | None = None
        loaded_under = 0  # the epoch the load was made under
        skips = 0
        while True:
            epoch = self._owned(group_id)
            if epoch != loaded_under:
                # Loaded before a take-over: another owner may have stamped the group since.
                loaded = None
            with lock:
                if epoch != self._epoch:
                    continue  # taken over meanwhile, by another thread: check again
                if key is not None:
                    entry = self._retry_log.get(key)
                    if entry is not None:
                        return _new_stamp(Stamp, (*entry, epoch))
                last = self._groups.get(group_id)
                if last is not None:
                    floor = prev = last
                elif self._loader is None or loaded is not None:
                    with self._evict_lock:
                        horizon = self._horizon
                    prev = horizon if loaded is None else loaded
                    floor = max(prev, horizon)
                else:
                    floor = -1  # load first, outside the lock
                if floor >= 0:
                    seq = self._next_id()
                    if seq > floor and self._still_owned(epoch):
                        self._store(group_id, seq)
                        if key is not None:
                            self._log_retry(key, seq, prev)
                        return _new_stamp(Stamp, (seq, prev, epoch))
            if floor < 0:
                loaded, loaded_under = self._load(group_id), epoch
                continue
            if seq > floor:
                continue  # the lease ran out after the draw: _owned() says so
            skips += 1
            if skips > _SKIP_ATTEMPTS:
                raise ServiceUnavailable(
                    f"the ID generator keeps handing out IDs at or below {floor}, the floor of "
                    f"group {group_id!r}, after {_SKIP_ATTEMPTS} attempts to move it past: retry later"
                )
            self._skip_past(group_id, floor)

    # -- ownership --------------------------------------------------------------------

    def _still_owned(self, epoch: int) -> bool:
        lease = self._lease
        if lease is None:
            return True
        term = lease.term
        return term[0] == epoch and self._lease_clock() < term[1]

    def _owned(self, group_id: GroupId) -> int:
        """The epoch to stamp under (0 without a lease), taken over if new; ``NotOwner``
        if the lease is not held. No lock is held."""
        lease = self._lease
        if lease is None:
            return 0
        epoch, until = lease.term
        if not epoch or self._lease_clock() >= until:
            name, biz_type = getattr(lease, "name", ""), getattr(lease, "biz_type", "")
            what = f" {name!r}" + (f" (biz type {biz_type!r})" if biz_type else "") if name else ""
            failure = getattr(lease, "failure", None)
            why = f"the last request for it failed: {failure}" if failure is not None else \
                "not granted yet, or not renewed in time"
            raise NotOwner(
                f"this process does not hold the lease{what} that group {group_id!r} is stamped "
                f"under ({why}): send the message through the group's owner, or retry once "
                "the lease is held")
        if epoch != self._epoch:
            self._take_over(epoch)
        return epoch

    def _take_over(self, epoch: int) -> None:
        """Start stamping under a new epoch: above every seq stamped before, by anyone,
        and nothing remembered of the groups (module note 7). Every stripe is held, so
        no stamp of the old epoch is under way; taken in order, by one thread at a time.
        Stamps wait meanwhile (one ``NextSegment``), rather than raise ``NotOwner``."""
        for lock in self._stripes:
            lock.acquire()
        try:
            if not epoch > self._epoch or self._lease is None or self._lease.term[0] != epoch:
                return  # another thread took this one over, or a later one: check again
            horizon = self._above_all()  # after the grant: above what the last owner drew
            with self._evict_lock:
                self._groups.clear()
                self._retry_log.clear()
                self._horizon = max(self._horizon, horizon)
            self._epoch = epoch
            log.info("stamping under epoch %d of the lease, above %d", epoch, horizon)
        finally:
            for lock in reversed(self._stripes):
                lock.release()

    def _store(self, group_id: GroupId, seq: int) -> None:
        """Make ``seq`` the group's last, most recently used; evict beyond the bound.

        The group's stripe lock is held. An evicted group's last seq raises the
        horizon in the same critical section as its removal, so whoever meets
        the group next reads a horizon at or above it (module notes 4 and 6).
        """
        groups = self._groups
        groups[group_id] = seq
        try:
            groups.move_to_end(group_id)
        except KeyError:
            pass
        if len(groups) > self._max_groups:
            with self._evict_lock:
                while len(groups) > self._max_groups:
                    try:
                        _, last = groups.popitem(last=False)
                    except KeyError:
                        break
                    if last > self._horizon:
                        self._horizon = last

    def _load(self, group_id: GroupId) -> int:
        assert self._loader is not None
        value = self._loader(group_id)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidRequest(
                f"the loader returned {value!r} for group {group_id!r}: it must return the "
                "group's highest seq as an int, 0 for none")
        return value

    def _skip_past(self, group_id: GroupId, floor: int) -> None:
        """Make the generator hand out IDs above ``group_id``'s ``floor`` (no lock held)."""
        with self._evict_lock:
            self._skips += 1
        skip_past: Callable[[int], object] | None = getattr(self._generator, "skip_past", None)
        if skip_past is not None:
            log.info("moving the ID generator past %d, a group's floor", floor)
            skip_past(floor)
            return
        # A generator that cannot skip has to be drawn until it passes the floor.
        for _ in range(_DRAIN_LIMIT):
            if self._next_id() > floor:
                return
        raise ConfigError(
            f"the ID generator is still at or below {floor}, the floor of group {group_id!r}, "
            f"after {_DRAIN_LIMIT:,} IDs drawn to pass it, and it has no skip_past(): give the "
            "Sequencer a generator that can skip (LocalGenerator or DoubleBuffer)")

    # -- introspection --------------------------------------------------------------

    @property
    def horizon(self) -> int:
        """At or above the last seq of every group this sequencer does not remember:
        seqs stamped before it started, and of groups it forgot."""
        with self._evict_lock:
            return self._horizon

    @property
    def skips(self) -> int:
        """Times the generator was moved past a group's floor instead of drained."""
        with self._evict_lock:
            return self._skips

    def __contains__(self, group_id: object) -> bool:
        """Whether the group is remembered (not new to it, nor forgotten)."""
        return group_id in self._groups

    def __len__(self) -> int:
        """How many groups are remembered (at most ``max_groups``)."""
        return len(self._groups)
