"""One database's segment table: registration and optimistic-lock allocation.

Allocation is Tinyid's compare-and-set, so that any number of servers can share
one table without holding a lock between statements:

    SELECT max_id, step, delta, remainder, version WHERE biz_type = :b
    UPDATE ... SET max_id = :new, version = version + 1
           WHERE biz_type = :b AND version = :v

One row updated means the range ``(max_id, new]`` is ours; zero means another
allocator won, so read again and retry (bounded, with jittered backoff). The new
``max_id`` is computed here, not in SQL, so that it can be clamped to 2^63-1
and exhaustion reported before any database arithmetic could overflow.
A segment is only handed out once its UPDATE has committed: a commit whose
answer is lost wastes the range, it never hands it out twice.

Before a segment is cut, the row is checked (``idgen_server.rows``): a damaged
row, or one that does not fit with the biz type's other databases (the
``check`` an allocator passes), hands out nothing.

High water. A ``max_id`` only grows, unless someone moves it back: a backup
restored, a replica promoted before it received the last allocations, a hand
edit. Its next segments would then repeat IDs already handed out. So the store
remembers, per biz type, the highest ``max_id`` it has seen (read or claimed);
a row that reports less is logged as an error, and segments are cut above that
mark, which moves the database forward past it in the same compare-and-set
(``raise_to`` does it without cutting a segment). This protects every ID this
process saw allocated; it cannot protect IDs that no running process has seen
(README: what the server checks).
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import insert, inspect, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateColumn
from sqlalchemy.sql import func

from idgen_core.errors import (
    BizTypeConflict,
    BizTypeMisconfigured,
    ConfigError,
    IdSpaceExhausted,
    InvalidRequest,
    StorageUnavailable,
    UnknownBizType,
)
from idgen_core.segment import INT64_MAX, MAX_STEP_MULTIPLIER, Segment, validate_biz_type
from idgen_server.database import (
    failure_text,
    make_engine,
    normalize_url,
    permanent_failure,
    redact_url,
    sqlite_path,
)
from idgen_server.rows import MAX_ROW_STEP, BizRow, check_row, damaged_row, new_registration
from idgen_server.schema import metadata, segment_table

__all__ = ["BizRow", "SegmentStore"]

log = logging.getLogger(__name__)


_T = segment_table.c
_COLUMNS = (_T.biz_type, _T.max_id, _T.step, _T.delta, _T.remainder, _T.version, _T.registration)
RowCheck = Callable[[BizRow], int]
"""Run on a freshly read row before a segment is cut from it: raises
``BizTypeMisconfigured`` if none may be, else returns a floor the segment must lie above."""

# Talking to a database can fail in more ways than SQLAlchemy wraps (a driver facing
# something that is not its database, an option it rejects): every try block that
# catches these holds database calls only, so a bug elsewhere is never taken for an outage.
_DB_ERRORS = (Exception,)


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

    def __init__(self, url: str, *, timeout: float = 3.0, max_attempts: int = 100) -> None:
        self._url = normalize_url(url)
        self.name = redact_url(self._url)
        """The database's URL without its password: what messages and logs show."""
        self.engine = make_engine(self._url, timeout)
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        # biz type -> the highest max_id seen (the high water), and the version it had
        self._seen: dict[str, tuple[int, int]] = {}
        self.allocations = 0
        """Segments this store allocated."""
        self.conflicts = 0
        """Allocation attempts that lost the optimistic-lock race and retried."""

    def __repr__(self) -> str:
        return f"SegmentStore({self.name!r})"

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        log.warning("database %s failed: %s", self.name, failure_text(exc, self._url))
        reason = permanent_failure(exc, self._url)
        if reason is not None:  # what a person must fix, not SQL: worth telling the caller
            return StorageUnavailable(f"database {self.name} cannot be used: {reason}")
        return StorageUnavailable(
            f"database {self.name} is unreachable or failing ({type(exc).__name__}); "
            "check that it is up and that its idgen_segment table exists (idgen init-db)"
        )

    # -- schema and readiness ---------------------------------------------------

    def create_schema(self) -> None:
        """Create the segment table if it is missing, or add the columns an older
        idgen did not make; harmless to repeat."""
        try:
            metadata.create_all(self.engine, checkfirst=True)
            with self.engine.begin() as conn:
                for column in self._missing_columns(conn):
                    ddl = CreateColumn(column).compile(dialect=self.engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {segment_table.name} ADD COLUMN {ddl}")
        except _DB_ERRORS as exc:
            raise self._failure(exc) from None

    def _missing_columns(self, conn: Connection) -> list:  # list[Column]
        present = {c["name"] for c in inspect(conn).get_columns(segment_table.name)}
        return [c for c in segment_table.columns if c.name not in present]

    def check_ready(self) -> None:
        """Raise ``ConfigError`` if this database cannot work without a person's help
        (wrong password, unknown database, missing SQLite file or directory, no table
        or a table from an older idgen), ``StorageUnavailable`` if it does not answer now."""
        path = sqlite_path(self._url)
        if path is not None and not os.path.exists(path):
            directory = os.path.dirname(path) or "."
            if not os.path.isdir(directory):
                raise ConfigError(f"SQLite database {path}: its directory {directory} does not exist")
            raise ConfigError(f"SQLite database {path} does not exist (a relative path is taken "
                              "from the directory idgen runs in): give the path of the database "
                              "that holds your IDs, or for a new one run `idgen init-db --db "
                              f"{self.name}` first")
        try:
            with self.engine.connect() as conn:
                table = inspect(conn).has_table(segment_table.name)
                missing = [c.name for c in self._missing_columns(conn)] if table else []
        except Exception as exc:  # noqa: BLE001 - whatever a driver raises talking to
            raise self._failure(exc) from None  # something that is not its database
        if not table:
            raise ConfigError(f"database {self.name} has no idgen_segment table: run "
                              "`idgen init-db --db URL` for it first")
        if missing:
            raise ConfigError(f"database {self.name} has an idgen_segment table from an older "
                              f"idgen (no {', '.join(missing)}): run `idgen init-db --db URL` "
                              "to upgrade it")

    def _failure(self, exc: BaseException) -> ConfigError | StorageUnavailable:
        reason = permanent_failure(exc, self._url)
        if reason is not None:
            return ConfigError(f"database {self.name}: {reason}")
        return self._unavailable(exc)

    def ping(self) -> bool:
        """Whether the database answers a trivial query now (never raises)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except _DB_ERRORS:
            return False

    # -- reading, and the high water ------------------------------------------------

    def read(self, biz_type: str) -> BizRow | None:
        """The biz type's row, or None if it is not registered here."""
        try:
            with self.engine.connect() as conn:
                record = conn.execute(select(*_COLUMNS).where(_T.biz_type == biz_type)).first()
        except _DB_ERRORS as exc:
            raise self._unavailable(exc) from None
        return None if record is None else self._observe(_row(record, self.name))

    def read_all(self) -> tuple[dict[str, BizRow], frozenset[str]]:
        """Every biz type's row, and the names of those too damaged to read."""
        try:
            with self.engine.connect() as conn:
                records = list(conn.execute(select(*_COLUMNS)))
        except _DB_ERRORS as exc:
            raise self._unavailable(exc) from None
        rows, damaged = {}, set()
        for record in records:
            try:
                row = self._observe(_row(record, self.name))
            except BizTypeMisconfigured:
                damaged.add(str(record.biz_type))
                continue
            rows[row.biz_type] = row
        return rows, frozenset(damaged)

    def high_water(self, biz_type: str) -> int:
        """The highest ``max_id`` this store has seen for the biz type (0 if none)."""
        with self._lock:
            return self._seen.get(biz_type, (0, 0))[0]

    def mark(self, row: BizRow) -> int:
        """What every ID cut from ``row`` must lie above: its ``max_id``, or the high water
        if that is higher. When the row went back although its version moved on since
        this store saw the high water (a hand edit, which leaves the version alone),
        the allocations it did not see moved ``max_id`` on by at most ``step *
        MAX_STEP_MULTIPLIER`` each: the mark is that much higher, wasting IDs, never reissuing any."""
        with self._lock:
            seen, version = self._seen.get(row.biz_type, (0, 0))
        if row.max_id >= seen:
            return row.max_id
        unseen = row.version - version
        return min(INT64_MAX, seen + max(0, unseen) * row.step * MAX_STEP_MULTIPLIER)

    def _observe(self, row: BizRow) -> BizRow:
        """Raise the high water to ``row``'s ``max_id``; returns ``row``."""
        with self._lock:
            if row.max_id > self._seen.get(row.biz_type, (0, 0))[0]:
                self._seen[row.biz_type] = (row.max_id, row.version)
        return row

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
        except _DB_ERRORS as exc:
            raise self._unavailable(exc) from None
        if moved:
            log.error("database %s reported max_id %d for %r, below what this server had seen "
                      "(restored from a backup, failed over to a replica that lagged, or edited "
                      "by hand?): moved it back up to %d. Other servers that allocated from it "
                      "meanwhile may have handed out IDs again", self.name, row.max_id,
                      row.biz_type, max_id)
            self._observe(replace(row, max_id=max_id, version=row.version + 1))
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
            except _DB_ERRORS as exc:
                raise self._unavailable(exc) from None
        raise StorageUnavailable(f"could not register {biz_type!r} in {self.name}: retry")

    # -- allocation ---------------------------------------------------------------

    def allocate(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                 check: RowCheck | None = None) -> Segment:
        """Claim the next segment of ``steps`` times the biz type's step; all its IDs
        are above ``floor``, above every segment this table handed out before, above the
        high water and above what ``check`` returns. Nothing is claimed from a row that
        ``check_row`` or ``check`` refuses. Bounded retries on conflicts.
        """
        for attempt in range(self._max_attempts):
            try:
                conn = self.engine.connect()
            except _DB_ERRORS as exc:
                raise self._unavailable(exc) from None
            with conn:
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
            if won:
                if row.max_id < seen:  # proven: the row at this very version was below it
                    log.error("database %s reported max_id %d for %r, below what this server "
                              "had seen (restored from a backup, failed over to a replica that "
                              "lagged, or edited by hand?): allocated above it, from %d. Other "
                              "servers that allocated from it meanwhile may have handed out IDs "
                              "again", self.name, row.max_id, biz_type, base)
                self._observe(replace(row, max_id=new_max, version=row.version + 1))
                with self._lock:
                    self.allocations += 1
                return segment
            with self._lock:
                self.conflicts += 1
            # Full jitter, so that racing allocators spread out instead of colliding again.
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** min(attempt, 6))))
        raise StorageUnavailable(
            f"gave up allocating for {biz_type!r} in {self.name} after {self._max_attempts} "
            "conflicting attempts: too many allocators race on one row; raise its step"
        )

    def _read_for_update(self, conn: Connection, biz_type: str) -> BizRow:
        """The row, read and committed (no lock is held), checked for damage."""
        try:
            record = conn.execute(select(*_COLUMNS).where(_T.biz_type == biz_type)).first()
            conn.commit()
        except _DB_ERRORS as exc:
            raise self._unavailable(exc) from None
        if record is None:
            raise UnknownBizType(f"biz type {biz_type!r} is not registered in {self.name}: "
                                 f"add it with `idgen add-biz {biz_type} --db URL`")
        row = self._observe(_row(record, self.name))
        check_row(self.name, row)
        return row

    def _compare_and_set(self, conn: Connection, row: BizRow, new_max: int) -> bool:
        """Set ``max_id`` if the row is still at ``row.version``; True if this won."""
        try:
            won = conn.execute(
                update(segment_table)
                .where(_T.biz_type == row.biz_type, _T.version == row.version)
                .values(max_id=new_max, version=_T.version + 1,
                        updated_at=func.current_timestamp())
            ).rowcount == 1
            conn.commit()
        except _DB_ERRORS as exc:
            raise self._unavailable(exc) from None
        return bool(won)

    def close(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()
