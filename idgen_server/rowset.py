"""What a server knows of its databases' rows, and the checks it makes with it.

The server checks the rows at every allocation (``idgen_server.rows``): the row
the segment is cut from, fresh, against the other databases' rows as last read
(``check``). A set that does not hold is read again from every other database
that answers before the biz type is refused, so a repair is seen at once; a
database that does not answer keeps its last row, so a clash found once stays
in force until that database says otherwise.

The allocator's watch thread reads every healthy database's whole table every
watch interval (``watch``). That keeps the rows fresh; gives each store's high
water every ``max_id`` committed by any server more than an interval before a
database went back, and moves a row found below it back up at once; and tells
which names are registered at all, so that a name no one registered costs no
query (``surely_unknown``).

A database whose residue class changes while the server runs (someone moved the
biz type to more databases by hand, or swapped two rows), or whose row appears
while it runs (registered again, or added by hand), has its next segment cut
above the highest ``max_id`` the server has seen in any database, since IDs of
its new class may already have been handed out, under the old classes, by the
others.

Everything here is keyed by biz types some database holds a row of: bounded by
the tables, never by what clients send.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from idgen_core.errors import BizTypeMisconfigured, BizTypeMoving, StorageUnavailable
from idgen_server.health import Health
from idgen_server.rows import BizRow, check_residue_set, check_row
from idgen_server.store import SegmentStore

__all__ = ["RowSet"]

log = logging.getLogger(__name__)

LOUD_EVERY = 60.0
"""Seconds before the same refusal of a biz type is logged again."""

_Class = tuple[int, int, str]  # delta, remainder, registration
_APPEARED: _Class = (0, 0, "")  # the class of a row that appeared while the server ran


def _class_of(row: BizRow) -> _Class:
    return row.delta, row.remainder, row.registration


class RowSet:
    """The rows of every biz type in a server's databases, as last read. Thread-safe."""

    def __init__(self, stores: Sequence[SegmentStore], health: Health, *,
                 watch_interval: float) -> None:
        self._stores = tuple(stores)
        self._health = health
        self._watch_interval = watch_interval
        self._lock = threading.Lock()
        self._rows: dict[str, dict[int, BizRow | None]] = {}  # None: read, no row there
        self._tables: dict[int, tuple[float, frozenset[str]]] = {}  # when read; names held
        self._classes: dict[tuple[str, int], _Class] = {}  # class last cut from, or first seen
        self._refused: dict[str, tuple[str, float]] = {}  # refusal last logged, and when

    # -- what is known --------------------------------------------------------------

    def surely_unknown(self, biz_type: str) -> bool:
        """True if every database's whole table, read within the last two watch intervals,
        lacks the biz type. One registered meanwhile is found by the next read."""
        oldest = time.monotonic() - 2 * self._watch_interval
        with self._lock:
            return all((table := self._tables.get(i)) is not None and table[0] >= oldest
                       and biz_type not in table[1] for i in range(len(self._stores)))

    def remember(self, biz_type: str, rows: Mapping[int, BizRow | None]) -> None:
        """Keep rows just read (None: that database has no row for the biz type). A name no
        database has a row of is not kept. A row that appears where there was none counts
        as a class change (see the module notes). A step changed since the last read (by
        ``idgen set-step``, or by hand) is logged, once."""
        steps: list[tuple[int, int, int]] = []  # database, step before, step now
        with self._lock:
            if biz_type not in self._rows and all(row is None for row in rows.values()):
                return
            known = self._rows.setdefault(biz_type, {})
            for index, row in rows.items():
                if row is not None and index in known and known[index] is None:
                    self._classes[(biz_type, index)] = _APPEARED
                elif row is not None:
                    self._classes.setdefault((biz_type, index), _class_of(row))
                    before = known.get(index)
                    if before is not None and before.step != row.step \
                            and row.version >= before.version:  # not a slower, older read
                        steps.append((index, before.step, row.step))
                known[index] = row
        for index, before_step, step in steps:  # once per change: only the first reader sees it
            log.info("database %s: the step of %r changed from %d to %d", self._stores[index].name,
                     biz_type, before_step, step, extra={"db": self._stores[index].name,
                                                         "biz_type": biz_type, "step": step,
                                                         "previous": before_step})

    def last_read(self, index: int) -> dict[str, BizRow]:
        """Database ``index``'s rows as last read, by biz type (none read yet: empty)."""
        with self._lock:
            return {biz_type: row for biz_type, known in sorted(self._rows.items())
                    if (row := known.get(index)) is not None}

    def named(self, rows: Mapping[int, BizRow | None]) -> dict[str, BizRow]:
        """``rows`` keyed by database name, without the databases that have none."""
        return {self._stores[i].name: row for i, row in sorted(rows.items()) if row is not None}

    def read_every(self, biz_type: str, indexes: Sequence[int] | None = None
                   ) -> tuple[dict[int, BizRow | None], list[StorageUnavailable]]:
        """Read the biz type in every database (or those of ``indexes``) now: what each
        that answered holds (None for no row), and the failures."""
        rows: dict[int, BizRow | None] = {}
        failed: list[StorageUnavailable] = []
        for index in range(len(self._stores)) if indexes is None else indexes:
            try:
                rows[index] = self._stores[index].read(biz_type)
            except StorageUnavailable as exc:
                self._health.record(index, ok=False, error=exc)
                failed.append(exc)
                continue
            self._health.record(index, ok=True)
        self.remember(biz_type, rows)
        return rows, failed

    # -- the check at every allocation ----------------------------------------------------

    def check(self, biz_type: str, index: int, row: BizRow) -> int:
        """Run by the store on the fresh row of database ``index`` before it cuts a segment:
        raises ``BizTypeMisconfigured`` if the set does not hold, else returns the floor
        the segment must lie above (0 unless the database's class changed)."""
        with self._lock:
            known = dict(self._rows.get(biz_type, {}))
        # Databases never read yet are read now, unless benched: one that hangs must not
        # hold up every allocation (it is checked as soon as it answers).
        benched = set(self._health.benched())
        unread = [i for i in range(len(self._stores))
                  if i != index and i not in known and i not in benched]
        if unread:
            known.update(self.read_every(biz_type, unread)[0])
        known[index] = row
        try:
            check_residue_set(biz_type, self.named(known), len(self._stores))
        except BizTypeMisconfigured:
            # What it was compared with may be stale: read the others again. One that does
            # not answer keeps its last row. This store's own row is the fresh one.
            others = [i for i in range(len(self._stores)) if i != index]
            known.update(self.read_every(biz_type, others)[0])
            known[index] = row
            check_residue_set(biz_type, self.named(known), len(self._stores))
        self.remember(biz_type, {index: row})
        return self._class_floor(biz_type, index, row)

    def _class_floor(self, biz_type: str, index: int, row: BizRow) -> int:
        with self._lock:
            before = self._classes.get((biz_type, index), _class_of(row))
        if before == _class_of(row):
            return 0
        floor = max(store.high_water(biz_type) for store in self._stores)
        if before == _APPEARED:
            change = "appeared"
        elif before[:2] != (row.delta, row.remainder):
            change = (f"changed its residue class from {before[1]} mod {before[0]} to "
                      f"{row.remainder} mod {row.delta}")
        else:
            change = "changed its registration"
        log.warning("database %s: the row of %r %s while this server ran: its next segment is "
                    "cut above %d, the highest max_id this server has seen in any database",
                    self._stores[index].name, biz_type, change, floor)
        return floor

    def cut(self, biz_type: str, index: int, delta: int, remainder: int) -> None:
        """A segment of class ``remainder`` mod ``delta`` was cut from database ``index``."""
        with self._lock:
            row = self._rows.get(biz_type, {}).get(index)
            registration = row.registration if row is not None else ""
            self._classes[(biz_type, index)] = (delta, remainder, registration)
            refused = self._refused.pop(biz_type, None)
        if refused is not None:
            log.warning("biz type %r passes the checks again and is served", biz_type)

    def refuse(self, biz_type: str, error: BizTypeMisconfigured) -> BizTypeMisconfigured:
        """Log a refusal loudly (the same one at most once a minute); returns it to raise."""
        message, now = str(error), time.monotonic()
        moving = isinstance(error, BizTypeMoving)
        # A pause names the database that refused, and allocations take the frozen ones in
        # turn: each message would look new. It is one refusal.
        kind = BizTypeMoving.__name__ if moving else message
        with self._lock:
            last = self._refused.get(biz_type)
            loud = last is None or last[0] != kind or now - last[1] >= LOUD_EVERY
            if loud:
                self._refused[biz_type] = (kind, now)
        if loud:
            # A move is an operator's, and brief: a warning. Anything else wants a person.
            log.log(logging.WARNING if moving else logging.ERROR, "%s", message)
        return error

    # -- the watch ------------------------------------------------------------------------

    def watch(self, index: int) -> None:
        """Read one database's whole table; move any row found below its high water back up."""
        store = self._stores[index]
        started = time.monotonic()
        try:
            rows, damaged = store.read_all()
        except StorageUnavailable as exc:
            self._health.record(index, ok=False, error=exc)
            return
        self._health.record(index, ok=True)
        with self._lock:
            self._tables[index] = (started, frozenset(rows) | damaged)
            for biz_type, known in self._rows.items():
                if biz_type not in rows and biz_type not in damaged:
                    known[index] = None
        for biz_type, row in rows.items():
            self.remember(biz_type, {index: row})
        for row in rows.values():
            high = store.mark(row)
            if row.max_id < high and _intact(store, row):
                try:
                    store.raise_to(row, high)
                except StorageUnavailable as exc:
                    self._health.record(index, ok=False, error=exc)
                    return


def _intact(store: SegmentStore, row: BizRow) -> bool:
    """Whether ``row`` is undamaged (a damaged one is left for a person to repair)."""
    try:
        check_row(store.name, row)
    except BizTypeMisconfigured:
        return False
    return True
