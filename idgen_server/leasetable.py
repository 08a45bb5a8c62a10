"""One database's lease table: reads, and compare-and-set writes on the version.

A lease's row in one database says who holds it there (``holder``, '' once
released), under which grant (``epoch``) and for how long after the write
(``ttl_ms``). Every write is ``UPDATE ... WHERE version = :read`` (or an
INSERT of a row no one wrote yet), so two servers granting at once cannot both
win a database; ``idgen_server.leases`` makes a lease of several databases.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import func

from idgen_core.errors import BizTypeMisconfigured, IdGenError
from idgen_server.database import DB_ERRORS, Database, lost_race
from idgen_server.schema import lease_table

__all__ = ["LeaseRow", "LeaseTable"]

_T = lease_table.c


@dataclass(frozen=True)
class LeaseRow:
    """A lease's row in one database, as read."""

    holder: str
    epoch: int
    ttl_ms: int
    version: int


class LeaseTable:
    """The ``idgen_lease`` table of one database. Thread-safe (it holds no state)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def read(self, biz_type: str, name: str) -> LeaseRow | None:
        """The lease's row, or None if no one has asked for it in this database.
        ``StorageUnavailable`` if the database does not answer."""
        try:
            with self._db.engine.connect() as conn:
                record = conn.execute(
                    select(_T.holder, _T.epoch, _T.ttl_ms, _T.version)
                    .where(_T.biz_type == biz_type, _T.name == name)).first()
        except DB_ERRORS as exc:
            raise self._failed(exc) from None
        if record is None:
            return None
        numbers = (record.epoch, record.ttl_ms, record.version)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in numbers):
            raise BizTypeMisconfigured(
                f"the lease {name!r} of {biz_type!r} has a damaged row in {self._db.name} "
                f"(epoch, ttl_ms, version: {numbers!r}): delete that row to repair it")
        return LeaseRow(str(record.holder), *numbers)

    def write(self, biz_type: str, name: str, read: LeaseRow | None, *,
              holder: str, epoch: int, ttl_ms: int) -> bool:
        """Replace the row ``read`` (None: there was none) if it is still the row there;
        True if this write won. ``StorageUnavailable`` if the database does not answer
        (the write may or may not have happened)."""
        values = {"holder": holder, "epoch": epoch, "ttl_ms": ttl_ms,
                  "updated_at": func.current_timestamp()}
        try:
            with self._db.engine.begin() as conn:
                if read is None:
                    conn.execute(insert(lease_table).values(
                        biz_type=biz_type, name=name, version=1, **values))
                    return True
                return bool(conn.execute(
                    update(lease_table)
                    .where(_T.biz_type == biz_type, _T.name == name, _T.version == read.version)
                    .values(version=_T.version + 1, **values)).rowcount == 1)
        except IntegrityError:
            return False  # inserted by another server first
        except DB_ERRORS as exc:
            if lost_race(exc):
                return False  # rolled back for another writer: it won
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> IdGenError:
        """``BizTypeMisconfigured`` for a database set up by an idgen without leases (a person
        runs ``idgen init-db``), else ``StorageUnavailable``."""
        try:
            with self._db.engine.connect() as conn:
                missing = not inspect(conn).has_table(lease_table.name)
        except DB_ERRORS:
            missing = False
        if missing:
            return BizTypeMisconfigured(
                f"database {self._db.name} has no {lease_table.name} table, which leases need: "
                "run `idgen init-db --db URL` for it to add the table")
        return self._db.unavailable(exc)
