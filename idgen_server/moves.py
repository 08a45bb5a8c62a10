"""Adding a database to a biz type that is being served: n databases become n + 1.

Before, database k hands out ``id ≡ k (mod n)``; after, ``id ≡ k (mod n + 1)``, the
new database being the n-th. The IDs of the old classes and of the new ones must never
meet, while servers keep allocating, whatever step this stops at. The move is
therefore made in two steps, each a compare-and-set on each row's version (an
allocator that read a row before loses its own and reads the row again):

1. **Freeze.** Every old row's registration becomes ``pending-X`` (``X`` the new
   registration), and the new database gets a row of the new class, pending too.
   ``check_row`` refuses a pending row by itself, without looking at any other row,
   so no server cuts a segment from a frozen row, and allocation stops one database
   at a time. Until every row is frozen, the old classes keep being served as they were.
2. **Move.** Once every row is frozen, nothing is allocated from any of them, so
   ``H``, the highest ``max_id`` of them all, lies above every ID handed out under
   the old classes. Each row then gets its new class, ``max_id`` ``H`` and the
   registration ``X``: every segment cut from now on lies above ``H``, in one of
   n + 1 distinct classes.

Stopped anywhere (a crash, a database lost halfway), the rows are old, pending or
moved, and running the same command again goes on from there: frozen rows are not
served meanwhile; a moved row may be served beside frozen ones (by a server that
has not read them), which is safe, since it is already above ``H`` in a class of its own.
Servers given the old list keep working afterwards (delta n + 1 leaves room for
their n databases); servers given the new list serve once every row is moved.

Every database must answer, and the rows must be what the lists say (old rows the
classes 0..n-1 of one registration, in the order given; the new database without
the biz type), before anything is written.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.sql import func

from idgen_core.errors import BizTypeConflict, InvalidRequest, StorageUnavailable
from idgen_core.retry import Backoff
from idgen_core.segment import validate_biz_type
from idgen_server.database import DB_ERRORS
from idgen_server.rows import PENDING, BizRow, new_registration
from idgen_server.schema import segment_table
from idgen_server.store import SegmentStore
from idgen_server.urls import check_distinct

__all__ = ["Moved", "add_database"]

log = logging.getLogger(__name__)

_T = segment_table.c
_ATTEMPTS = 100
_RETRY = Backoff(initial=0.001, maximum=0.05)


@dataclass(frozen=True)
class Moved:
    """One database's row after the move."""

    label: str
    name: str
    before: tuple[int, int] | None  # (delta, remainder) before; None: the new database
    after: tuple[int, int]
    max_id: int


def _state(row: BizRow | None) -> str:
    if row is None:
        return "absent"
    return "pending" if row.registration.startswith(PENDING) else "plain"


def _target(rows: Sequence[BizRow | None], names: Sequence[str], biz_type: str) -> str:
    """The registration ``X`` the move goes to: new if nothing moved yet, else the one the
    moved or frozen rows carry. ``BizTypeConflict`` (nothing written) if the rows are not
    what the lists say."""
    n = len(rows) - 1
    old, new = rows[:-1], rows[-1]
    wrong = []
    for k, (row, name) in enumerate(zip(old, names, strict=False)):
        if row is None:
            wrong.append(f"{name} does not hold {biz_type!r}")
        elif row.remainder != k or row.delta not in (n, n + 1):
            wrong.append(f"{name} holds the class {row.remainder} (mod {row.delta}), not "
                         f"{k} (mod {n}) as the {k}-th of {n} databases")
    if new is not None and (new.remainder != n or new.delta != n + 1):
        wrong.append(f"the new database {names[-1]} already holds {biz_type!r} as the class "
                     f"{new.remainder} (mod {new.delta})")
    if wrong:
        raise BizTypeConflict(
            f"cannot add a database to {biz_type!r}: the databases do not hold what the lists "
            f"say ({'; '.join(wrong)}). Give --db the databases servers use now, in their "
            "order, and --new-db a database without the biz type. Nothing was changed")
    started = {row.registration.removeprefix(PENDING) for row in rows
               if row is not None and (row.delta == n + 1 or _state(row) == "pending")}
    plain = {row.registration for row in old
             if row is not None and row.delta == n and _state(row) == "plain"}
    if len(started) > 1 or len(plain) > 1:
        raise BizTypeConflict(
            f"cannot add a database to {biz_type!r}: its rows are of several registrations or "
            "moves, which this command cannot tell apart; repair them by hand first (idgen "
            "describe shows them). Nothing was changed")
    return started.pop() if started else new_registration()[:24]


def _write(store: SegmentStore, biz_type: str, change: dict[str, object],
           ready: Callable[[BizRow], bool]) -> BizRow:
    """Compare-and-set ``change`` on the row unless ``ready(row)`` says it is done; the
    row as written (or found done)."""
    for attempt in range(_ATTEMPTS):
        row = store.read(biz_type)
        if row is None:
            raise StorageUnavailable(f"the row of {biz_type!r} in {store.name} disappeared")
        if ready(row):
            return row
        values = {key: (value(row) if callable(value) else value) for key, value in change.items()}
        try:
            with store.engine.begin() as conn:
                won = conn.execute(update(segment_table).where(
                    _T.biz_type == biz_type, _T.version == row.version).values(
                    **values, version=_T.version + 1,
                    updated_at=func.current_timestamp())).rowcount == 1
        except DB_ERRORS as exc:
            raise store.unavailable(exc) from None
        if won:
            return store.read(biz_type) or row
        time.sleep(_RETRY.delay(attempt + 1))  # an allocator won: read again
    raise StorageUnavailable(f"gave up changing {biz_type!r} in {store.name} after {_ATTEMPTS} "
                             "attempts lost to allocators: run the command again")


def add_database(stores: Sequence[SegmentStore], new: SegmentStore, biz_type: str) -> list[Moved]:
    """Move ``biz_type`` from ``stores`` (in the order servers list them) to those and
    ``new``, as the module docstring says. Running it again after it stopped halfway
    finishes the move; after it finished, changes nothing."""
    validate_biz_type(biz_type)
    everything = [*stores, new]
    check_distinct([store.name for store in everything])
    n = len(stores)
    if n < 1:
        raise InvalidRequest("give the databases the biz type is in now (--db)")
    names = [store.name for store in everything]
    rows = _read_all(everything, biz_type)
    registration = _target(rows, names, biz_type)
    pending = PENDING + registration
    before = [None if row is None or row.delta != n else (row.delta, row.remainder)
              for row in rows[:-1]] + [None]

    # 1. Freeze: no row of an old class is served once it is pending.
    for store, row in zip(stores, rows, strict=False):
        _write(store, biz_type, {"registration": pending},
               lambda r: r.delta == n + 1 or _state(r) == "pending")
    if rows[-1] is None:
        step = next(row.step for row in rows[:-1] if row is not None)
        new.register(biz_type, step=step, delta=n + 1, remainder=n, registration=pending)

    # 2. Move: every row frozen or moved, H is above every ID of the old classes.
    frozen = _read_all(everything, biz_type)
    high = max(row.max_id for row in frozen if row is not None)
    moved = []
    for k, store in enumerate(everything):
        row = _write(store, biz_type,
                     {"registration": registration, "delta": n + 1, "remainder": k,
                      "max_id": lambda r: max(r.max_id, high)},
                     lambda r: r.registration == registration and r.delta == n + 1)
        moved.append(Moved(store.label or f"db{k}", store.name, before[k], (n + 1, k), row.max_id))
    log.warning("biz type %r moved to %d databases: every segment from now on lies above %d",
                biz_type, n + 1, high, extra={"biz_type": biz_type, "databases": n + 1, "above": high})
    return moved


def _read_all(stores: Sequence[SegmentStore], biz_type: str) -> list[BizRow | None]:
    rows: list[BizRow | None] = []
    failed = []
    for store in stores:
        try:
            rows.append(store.read(biz_type))
        except StorageUnavailable as exc:
            failed.append(str(exc))
    if failed:
        raise StorageUnavailable(f"cannot add a database to {biz_type!r}: every database must "
                                 f"answer, and {'; '.join(failed)}. Run the command again once "
                                 "they do (what was done so far is kept and finished then)")
    return rows
