"""One database's segment table: registration and optimistic-lock allocation.

Allocation is Tinyid's compare-and-set, so that any number of servers can share
one table without holding a lock between statements:

    SELECT max_id, step, delta, remainder, version WHERE biz_type = :b
    UPDATE ... SET max_id = :new, version = version + 1
           WHERE biz_type = :b AND version = :v

One row updated means the range ``(max_id, new]`` is ours; zero means another
allocator won, so read again and retry (bounded, with jittered backoff). A
statement the database rolled back because another writer won (a deadlock, a
lock wait timeout, a Galera certification failure at COMMIT, a serialization
failure: ``database.lost_race``) is the same lost race, retried the same way;
taking it for an outage would bench a healthy database. The new
``max_id`` is computed here, not in SQL, so that it can be clamped to 2^63-1
and exhaustion reported before any database arithmetic could overflow.
A segment is only handed out once its UPDATE has committed: a commit whose
answer is lost wastes the range, it never hands it out twice.

Before a segment is cut, the row is checked (``idgen_server.rows``): a damaged
row, or one that does not fit with the biz type's other databases (the
``check`` an allocator passes), hands out nothing.

Every row read or claimed raises the store's high water (``idgen_server.highwater``),
and segments are cut above it: a ``max_id`` moved back (a backup restored, a
lagging replica promoted, a hand edit) is moved forward again in the same
compare-and-set (``raise_to`` does it without cutting a segment).

Connecting, the schema and what failures mean are ``idgen_server.database``'s.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import func

from idgen_core.errors import (
    BizTypeConflict,
    BizTypeMisconfigured,
    IdSpaceExhausted,
    InvalidRequest,
    StorageUnavailable,
    UnknownBizType,
)
from idgen_core.retry import Backoff
from idgen_core.segment import INT64_MAX, Segment, validate_biz_type
from idgen_server.database import DB_ERRORS, Database, lost_race, node_lost
from idgen_server.defaults import DEFAULT_DB_TIMEOUT
from idgen_server.highwater import HighWater
from idgen_server.leasetable import LeaseTable
from idgen_server.rows import MAX_ROW_STEP, BizRow, check_row, damaged_row, new_registration
from idgen_server.schema import segment_table
from idgen_server.stats import Timings
from idgen_server.tokens import TokenTable

__all__ = ["EXHAUSTION_WARNINGS", "BizRow", "RowCheck", "SegmentStore"]

log = logging.getLogger(__name__)

EXHAUSTION_WARNINGS = (0.5, 0.9, 0.99)
"""Shares of the int64 range a biz type's ``max_id`` passes with a warning (once each per
store object, so once per server process, not per allocation)."""
_WARN_AT = tuple(int(INT64_MAX * share) for share in EXHAUSTION_WARNINGS)

_CONFLICT_RETRY = Backoff(initial=0.001, maximum=0.05)
"""How long an allocator that lost the compare-and-set waits before it reads again."""

_T = segment_table.c
_COLUMNS = (_T.biz_type, _T.max_id, _T.step, _T.delta, _T.remainder, _T.version, _T.registration)
RowCheck = Callable[[BizRow], int]
"""Run on a freshly read row before a segment is cut from it: raises
``BizTypeMisconfigured`` if none may be, else returns a floor the segment must lie above."""


class _LostRace(Exception):
    """The database rolled a statement back because another writer won: retry."""


class _NodeLost(Exception):
    """The connection's node can no longer take writes; ``error`` is what to raise if
    no other node of the database is left to try."""

    def __init__(self, error: StorageUnavailable) -> None:
        super().__init__(str(error))
        self.error = error


def _rollback(conn: Connection) -> None:
    """End the failed transaction so that the connection can be used again."""
    try:
        conn.rollback()
    except DB_ERRORS:
        conn.invalidate()  # the pool opens a new connection rather than reuse this one


def _row(record: Row, database: str) -> BizRow:
    """The row as read; ``BizTypeMisconfigured`` if a field is not a whole number (SQLite
    stores whatever a hand edit puts in)."""
    biz_type = str(record.biz_type)
    numbers = {}
    for field in ("max_id", "step", "delta", "remainder", "version"):
        value = getattr(record, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise damaged_row(database, biz_type, f"{field} is {repr(value)[:40]}, not a whole number")
        numbers[field] = value
    return BizRow(biz_type, registration=str(record.registration or ""), **numbers)


class SegmentStore:
    """The segment table in one database. Thread-safe; close it to free connections.

    Storage failures of any kind come out as ``StorageUnavailable`` naming the
    database (password hidden), never with SQL in the message.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_DB_TIMEOUT, max_attempts: int = 100,
                 label: str | None = None) -> None:
        self._db = Database(url, timeout=timeout)
        self.name = self._db.name
        """The database's URL without its password: what the log and the operator see."""
        self.label = label
        """What callers and metrics see of the database: the operator's label, or None
        (then ``Allocator.labels`` calls it ``db<k>``)."""
        self.tokens = TokenTable(self._db)
        """The database's token table (``idgen_server.tokens``)."""
        self.leases = LeaseTable(self._db)
        """The database's lease table (``idgen_server.leasetable``)."""
        self.engine = self._db.engine
        self.create_schema = self._db.create_schema
        self.check_ready = self._db.check_ready
        self.ping = self._db.ping
        self.unavailable = self._db.unavailable
        """``unavailable(exc)``: the ``StorageUnavailable`` for a driver failure, logged, no SQL."""
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._lock = threading.Lock()
        self._high_water = HighWater(self.name)
        self.allocations = 0
        """Segments this store allocated."""
        self.conflicts = 0
        """Allocation attempts that lost the optimistic-lock race and retried."""
        self.allocation_seconds = Timings()
        """Seconds each segment took to allocate, retries after conflicts included (metrics)."""
        self._warned: dict[str, int] = {}  # biz type -> exhaustion warnings passed (bounded by the table)

    def __repr__(self) -> str:
        return f"SegmentStore({self.name!r})"

    @property
    def node(self) -> str | None:
        """For a database listed with several nodes, the node its newest connection went to
        (``idgen_server.nodes``); None for a single host, or before any connection."""
        return self._db.nodes.current if len(self._db.nodes) > 1 else None

    # -- reading, and the high water ------------------------------------------------

    def read(self, biz_type: str) -> BizRow | None:
        """The biz type's row, or None if it is not registered here."""
        try:
            with self.engine.connect() as conn:
                record = conn.execute(select(*_COLUMNS).where(_T.biz_type == biz_type)).first()
        except DB_ERRORS as exc:
            raise self._db.unavailable(exc) from None
        return None if record is None else self._high_water.observe(_row(record, self.name))

    def read_all(self) -> tuple[dict[str, BizRow], frozenset[str]]:
        """Every biz type's row, and the names of those too damaged to read."""
        try:
            with self.engine.connect() as conn:
                records = list(conn.execute(select(*_COLUMNS)))
        except DB_ERRORS as exc:
            raise self._db.unavailable(exc) from None
        rows, damaged = {}, set()
        for record in records:
            try:
                row = self._high_water.observe(_row(record, self.name))
            except BizTypeMisconfigured:
                damaged.add(str(record.biz_type))
                continue
            rows[row.biz_type] = row
        return rows, frozenset(damaged)

    def high_water(self, biz_type: str) -> int:
        """The highest ``max_id`` this store has seen for the biz type (0 if none)."""
        return self._high_water.level(biz_type)

    def mark(self, row: BizRow) -> int:
        """What every ID cut from ``row`` must lie above (``HighWater.mark``)."""
        return self._high_water.mark(row)

    def raise_to(self, row: BizRow, max_id: int) -> bool:
        """Move ``row``'s ``max_id`` up to ``max_id`` (compare-and-set on its version,
        no segment cut); True if it moved. ``StorageUnavailable`` if unreachable."""
        try:
            with self.engine.begin() as conn:
                moved = conn.execute(
                    update(segment_table)
                    .where(_T.biz_type == row.biz_type, _T.version == row.version,
                           _T.max_id < max_id)
                    .values(max_id=max_id, version=_T.version + 1,
                            updated_at=func.current_timestamp())
                ).rowcount == 1
        except DB_ERRORS as exc:
            if lost_race(exc):
                return False  # another writer moved the row: the caller reads it again
            raise self._db.unavailable(exc) from None
        if moved:
            self._high_water.report_rollback(row, max_id)
            self._high_water.observe(replace(row, max_id=max_id, version=row.version + 1))
        return moved

    # -- registration -------------------------------------------------------------

    def register(self, biz_type: str, *, step: int, delta: int = 1, remainder: int = 0,
                 registration: str | None = None) -> bool:
        """Register a biz type; True if created, False if already there alike.

        ``registration`` is shared by the rows of one registration across databases
        (``idgen_server.registry`` picks it); None takes a new one when creating and
        accepts any when comparing. ``BizTypeConflict`` when registered otherwise.
        """
        validate_biz_type(biz_type)
        if not 1 <= step <= MAX_ROW_STEP:
            raise InvalidRequest(f"step must be in 1..{MAX_ROW_STEP}, got {step}")
        if step < delta:
            raise InvalidRequest(f"step {step} is smaller than delta {delta}: segments would be empty")
        if not 0 <= remainder < delta:
            raise InvalidRequest(f"remainder must be in [0, {delta}), got {remainder}")
        wanted: dict[str, object] = {"step": step, "delta": delta, "remainder": remainder}
        if registration is not None:
            wanted["registration"] = registration
        for _ in range(2):
            existing = self.read(biz_type)
            if existing is not None:
                differs = [f"{k} is {getattr(existing, k)!r}, not {v!r}"
                           for k, v in wanted.items() if getattr(existing, k) != v]
                if differs:
                    raise BizTypeConflict(
                        f"biz type {biz_type!r} is already registered in {self.name} with other "
                        f"settings: {'; '.join(differs)}. Use another name, or the same "
                        "--step and the same list of databases in the same order"
                    )
                return False
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(segment_table).values(
                        biz_type=biz_type, max_id=0, version=0,
                        **{"registration": new_registration(), **wanted}))
                return True
            except IntegrityError:
                continue  # registered concurrently: compare with what won
            except DB_ERRORS as exc:
                if lost_race(exc):
                    continue  # likewise, on a database that reports it as a deadlock
                raise self._db.unavailable(exc) from None
        raise StorageUnavailable(f"could not register {biz_type!r} in {self.name}: retry")

    # -- allocation ---------------------------------------------------------------

    def allocate(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                 check: RowCheck | None = None) -> Segment:
        """Claim the next segment of ``steps`` times the biz type's step; all its IDs
        are above ``floor``, above every segment this table handed out before, above the
        high water and above what ``check`` returns. Nothing is claimed from a row that
        ``check_row`` or ``check`` refuses. Bounded retries on conflicts.
        """
        started = time.perf_counter()
        # Lost races normally take milliseconds each; a row locked for longer (lock waits
        # that time out, over and over) is an outage of this database, not a race.
        patience = max(5.0, 3 * self._timeout)
        give_up_at = time.monotonic() + patience
        nodes_tried = 1
        attempt = 0
        while attempt < self._max_attempts:
            attempt += 1
            if attempt > 1 and time.monotonic() > give_up_at:
                raise StorageUnavailable(
                    f"gave up allocating for {biz_type!r} in {self.name} after {patience:.0f} s "
                    "of lost races and lock waits: is a transaction holding its row?")
            try:
                conn = self.engine.connect()
            except DB_ERRORS as exc:  # every node was tried for this connection
                raise self._db.unavailable(exc) from None
            with conn:
                try:
                    row = self._read_for_update(conn, biz_type)
                    above = check(row) if check is not None else 0
                    seen = self.mark(row)
                    base = max(floor, seen, above)
                    if base >= INT64_MAX:
                        raise IdSpaceExhausted(
                            f"biz type {biz_type!r} has used up the int64 range in {self.name}")
                    new_max = min(base + row.step * steps, INT64_MAX)
                    segment = Segment.claimed(base, new_max, row.delta, row.remainder)
                    won = self._compare_and_set(conn, row, new_max)
                except _LostRace:
                    _rollback(conn)
                    won = False
                except _NodeLost as lost:
                    # Safe to start over on another node: nothing was handed out, and a
                    # commit whose answer was lost only wasted its range (the version moved).
                    conn.invalidate()
                    # The pool's other connections may be on the same node: start afresh,
                    # every new connection trying the nodes in order.
                    self.engine.dispose()
                    if nodes_tried >= len(self._db.nodes):
                        raise lost.error from None
                    nodes_tried += 1
                    attempt -= 1  # not a conflict
                    continue
            if won:
                if row.max_id < seen:  # proven: the row at this very version was below it
                    self._high_water.report_rollback(row, new_max)
                self._high_water.observe(replace(row, max_id=new_max, version=row.version + 1))
                with self._lock:
                    self.allocations += 1
                self.allocation_seconds.observe(time.perf_counter() - started)
                self._warn_if_running_out(biz_type, new_max)
                return segment
            with self._lock:
                self.conflicts += 1
            time.sleep(_CONFLICT_RETRY.delay(attempt))  # racing allocators spread out
        raise StorageUnavailable(
            f"gave up allocating for {biz_type!r} in {self.name} after {self._max_attempts} "
            "conflicting attempts: too many allocators race on one row; raise its step"
        )

    def _warn_if_running_out(self, biz_type: str, max_id: int) -> None:
        """One WARNING when ``max_id`` passes a share of ``EXHAUSTION_WARNINGS`` (only the
        highest passed, when several are passed at once)."""
        passed = sum(max_id >= limit for limit in _WARN_AT)
        if not passed:
            return
        with self._lock:
            if passed <= self._warned.get(biz_type, 0):
                return
            self._warned[biz_type] = passed
        share = EXHAUSTION_WARNINGS[passed - 1]
        log.warning("biz type %r has used %.0f%% of the int64 range in %s (max_id %d): move it to a "
                    "new biz type before it runs out", biz_type, share * 100, self.name, max_id,
                    extra={"biz_type": biz_type, "db": self.name, "threshold": share,
                           "max_id": max_id, "range_used": round(max_id / INT64_MAX, 6)})

    def _read_for_update(self, conn: Connection, biz_type: str) -> BizRow:
        """The row, read and committed (no lock is held), checked for damage."""
        try:
            record = conn.execute(select(*_COLUMNS).where(_T.biz_type == biz_type)).first()
            conn.commit()
        except DB_ERRORS as exc:
            raise self._failed(exc) from None
        if record is None:
            raise UnknownBizType(f"biz type {biz_type!r} is not registered in {self.name}: "
                                 f"add it with `idgen add-biz {biz_type} --db URL`")
        row = self._high_water.observe(_row(record, self.name))
        check_row(self.name, row)
        return row

    def _compare_and_set(self, conn: Connection, row: BizRow, new_max: int) -> bool:
        """Set ``max_id`` if the row is still at ``row.version``; True if this won,
        ``_LostRace`` if the database rolled it back for another writer."""
        try:
            won = conn.execute(
                update(segment_table)
                .where(_T.biz_type == row.biz_type, _T.version == row.version)
                .values(max_id=new_max, version=_T.version + 1,
                        updated_at=func.current_timestamp())
            ).rowcount == 1
            conn.commit()
        except DB_ERRORS as exc:
            raise self._failed(exc) from None
        return bool(won)

    def _failed(self, exc: BaseException) -> Exception:
        """What an allocation raises for a database error: ``_LostRace`` (retry),
        ``_NodeLost`` (try another node of the database) or ``StorageUnavailable``."""
        if lost_race(exc):
            return _LostRace()
        if len(self._db.nodes) > 1 and node_lost(exc):
            return _NodeLost(self._db.unavailable(exc))
        return self._db.unavailable(exc)

    def close(self) -> None:
        """Close the connection pool."""
        self._db.close()
