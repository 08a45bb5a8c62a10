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
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql import func

from idgen_client.errors import (
    BizTypeConflict,
    IdSpaceExhausted,
    InvalidRequest,
    StorageUnavailable,
    UnknownBizType,
)
from idgen_client.segment import INT64_MAX, Segment, validate_biz_type
from idgen_server.schema import metadata, segment_table

__all__ = ["BizRow", "SegmentStore", "normalize_url"]

log = logging.getLogger(__name__)

MAX_STEP = 10**12
_T = segment_table.c


@dataclass(frozen=True, slots=True)
class BizRow:
    """A biz type's row in one database."""

    biz_type: str
    max_id: int
    step: int
    delta: int
    remainder: int
    version: int


def normalize_url(url: str) -> str:
    """Accept the common spellings: ``mysql://`` and ``mariadb://`` use pymysql,
    ``postgres://`` and ``postgresql://`` use psycopg 3 (``pip install idgen[postgres]``)."""
    url = url.strip()
    for prefix, driver in (("mysql://", "mysql+pymysql://"), ("mariadb://", "mariadb+pymysql://"),
                           ("postgres://", "postgresql+psycopg://"),
                           ("postgresql://", "postgresql+psycopg://")):
        if url.startswith(prefix):
            return driver + url[len(prefix):]
    return url


def _engine(url: str, timeout: float) -> Engine:
    from sqlalchemy import create_engine

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": max(timeout, 10.0)})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
            cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
            if parsed.database and parsed.database != ":memory:":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    seconds = max(1, int(round(timeout)))
    # An allocation's transaction lasts milliseconds (UPDATE, then COMMIT). Should this
    # process's host vanish between the two, the database would keep the transaction and
    # its row lock until its own wait_timeout (8 hours by default on MariaDB) and no server
    # could allocate from that database meanwhile. Sessions idle inside a transaction for
    # this long are orphans: the database ends them and rolls back.
    orphan_after = max(5, 3 * seconds)
    if backend in ("mysql", "mariadb"):
        connect_args: dict[str, object] = {
            "connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds,
        }
    elif backend == "postgresql":
        connect_args = {"connect_timeout": seconds,
                        "options": f"-c statement_timeout={seconds * 1000} "
                                   f"-c idle_in_transaction_session_timeout={orphan_after * 1000}"}
    else:
        connect_args = {}
    engine = create_engine(
        url, connect_args=connect_args, pool_pre_ping=True, pool_recycle=3600, pool_size=4,
        max_overflow=8, pool_timeout=timeout,
    )
    if backend in ("mysql", "mariadb"):

        @event.listens_for(engine, "connect")
        def _end_orphans(dbapi_conn: object, _record: object) -> None:
            if "MariaDB" in dbapi_conn.get_server_info():  # type: ignore[attr-defined]
                cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
                cursor.execute(f"SET SESSION idle_transaction_timeout = {orphan_after}")
                cursor.close()

    return engine


def _read_row(conn: Connection, biz_type: str) -> BizRow | None:
    row = conn.execute(
        select(_T.max_id, _T.step, _T.delta, _T.remainder, _T.version)
        .where(_T.biz_type == biz_type)
    ).first()
    if row is None:
        return None
    return BizRow(biz_type, int(row.max_id), int(row.step), int(row.delta),
                  int(row.remainder), int(row.version))


class SegmentStore:
    """The segment table in one database. Thread-safe; close it to free connections.

    Storage failures of any kind come out as ``StorageUnavailable`` naming the
    database (password hidden), never with SQL in the message.
    """

    def __init__(self, url: str, *, timeout: float = 3.0, max_attempts: int = 100) -> None:
        url = normalize_url(url)
        try:
            self.name = make_url(url).render_as_string(hide_password=True)
            self.engine = _engine(url, timeout)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise InvalidRequest(f"database URL {url.split('@')[-1]!r} is not usable: {exc}") from None
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self.segments = 0
        """Segments this store allocated."""
        self.conflicts = 0
        """Allocation attempts that lost the optimistic-lock race and retried."""

    def __repr__(self) -> str:
        return f"SegmentStore({self.name!r})"

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        log.warning("database %s failed: %s", self.name, exc)
        return StorageUnavailable(
            f"database {self.name} is unreachable or failing ({type(exc).__name__}); "
            "check that it is up and that its idgen_segment table exists (idgen init-db)"
        )

    # -- schema and registration ----------------------------------------------

    def create_schema(self) -> None:
        """Create the segment table if it is missing; harmless to repeat."""
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def has_schema(self) -> bool:
        """Whether the segment table exists (``StorageUnavailable`` if unreachable)."""
        from sqlalchemy import inspect

        try:
            return inspect(self.engine).has_table(segment_table.name)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def ping(self) -> bool:
        """Whether the database answers a trivial query now (never raises)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except SQLAlchemyError:
            return False

    def read(self, biz_type: str) -> BizRow | None:
        """The biz type's row, or None if it is not registered here."""
        try:
            with self.engine.connect() as conn:
                return _read_row(conn, biz_type)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def register(self, biz_type: str, *, step: int, delta: int = 1, remainder: int = 0) -> bool:
        """Register a biz type; True if created, False if already there alike.

        Raises ``BizTypeConflict`` when it is registered with other settings.
        """
        validate_biz_type(biz_type)
        if not 1 <= step <= MAX_STEP:
            raise InvalidRequest(f"step must be in 1..{MAX_STEP}, got {step}")
        if step < delta:
            raise InvalidRequest(f"step {step} is smaller than delta {delta}: segments would be empty")
        if not 0 <= remainder < delta:
            raise InvalidRequest(f"remainder must be in [0, {delta}), got {remainder}")
        wanted = {"step": step, "delta": delta, "remainder": remainder}
        for _ in range(2):
            existing = self.read(biz_type)
            if existing is not None:
                differs = [f"{k} is {getattr(existing, k)}, not {v}"
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
                        biz_type=biz_type, max_id=0, version=0, **wanted))
                return True
            except IntegrityError:
                continue  # registered concurrently: compare with what won
            except SQLAlchemyError as exc:
                raise self._unavailable(exc) from None
        raise StorageUnavailable(f"could not register {biz_type!r} in {self.name}: retry")

    # -- allocation ---------------------------------------------------------------

    def allocate(self, biz_type: str, floor: int = 0, steps: int = 1) -> Segment:
        """Claim the next segment of ``steps`` times the biz type's step; all its IDs
        are above ``floor`` and above every segment this table handed out before.
        Bounded retries on conflicts.
        """
        for attempt in range(self._max_attempts):
            try:
                with self.engine.connect() as conn:
                    row = _read_row(conn, biz_type)
                    conn.commit()
                    if row is None:
                        raise UnknownBizType(
                            f"biz type {biz_type!r} is not registered in {self.name}: "
                            f"add it with `idgen add-biz {biz_type} --db URL`"
                        )
                    base = max(row.max_id, floor)
                    if base >= INT64_MAX:
                        raise IdSpaceExhausted(
                            f"biz type {biz_type!r} has used up the int64 range in {self.name}"
                        )
                    new_max = min(base + row.step * steps, INT64_MAX)
                    segment = Segment.claimed(base, new_max, row.delta, row.remainder)
                    won = conn.execute(
                        update(segment_table)
                        .where(_T.biz_type == biz_type, _T.version == row.version)
                        .values(max_id=new_max, version=_T.version + 1,
                                updated_at=func.current_timestamp())
                    ).rowcount
                    conn.commit()
            except SQLAlchemyError as exc:
                raise self._unavailable(exc) from None
            if won == 1:
                with self._lock:
                    self.segments += 1
                return segment
            with self._lock:
                self.conflicts += 1
            # Full jitter, so that racing allocators spread out instead of colliding again.
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** min(attempt, 6))))
        raise StorageUnavailable(
            f"gave up allocating for {biz_type!r} in {self.name} after {self._max_attempts} "
            "conflicting attempts: too many allocators race on one row; raise its step"
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()
