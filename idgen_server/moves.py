"""Adding a database to a biz type that is being served: n databases become n + 1.

Before, database k hands out ``id ≡ k (mod n)``; after, ``id ≡ k (mod n + 1)``, the
new database being the n-th. The IDs of the old classes and of the new ones must never
meet, while servers keep allocating, whatever step this stops at. The move is
therefore made in two steps, each a compare-and-set on each row's version (an
allocator that read a row before loses its own and reads the row again):

1. **Freeze.** The new database gets a row of its new class, its registration
   ``pending-X`` (``X`` the new registration); then every old row's registration
   becomes ``pending-X`` and its delta 0. ``check_row`` refuses a pending row by
   itself, without looking at any other row (and an idgen that predates this refuses
   delta 0 as damage), so no server cuts a segment from a frozen row, and allocation
   stops one database at a time. Until every row is frozen, the old classes keep
   being served as they were.
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

Every database must answer, and the rows must be what the lists say, before anything
is written: the old rows the classes 0..n-1 of one registration, in the order given,
and the new database without the biz type; or, to finish a move, the new database's
row naming the move (``X``) and every old row as before, frozen for ``X`` or moved to
``X``. Rows of another move, or a list that leaves a database out, are refused.
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
from idgen_server.database import DB_ERRORS, lost_race
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
    changed: bool  # False: this run found it moved already


FROZEN_DELTA = 0
"""The delta of a frozen old row: a server of any version refuses it (an idgen older than
``PENDING`` takes it for a damaged row), and the move knows the delta it goes to."""


def _refuse(biz_type: str, why: str, *, frozen: bool = False) -> BizTypeConflict:
    advice = ("finish the idgen add-db that froze them first (the same command as it was "
              "started with)" if frozen else
              "give --db the databases servers use now, in their order, and --new-db the "
              "database to add")
    return BizTypeConflict(
        f"cannot add a database to {biz_type!r}: {why}; {advice}. Nothing was changed by this run")


def _target(rows: Sequence[BizRow | None], names: Sequence[str], biz_type: str) -> str:
    """The registration ``X`` this move goes to: a new one if the new database does not
    hold the biz type yet (then every old row must be as servers use it now), else the one
    of its row (then every old row must be as servers use it now, frozen for ``X`` or moved
    to ``X``). ``BizTypeConflict``, nothing written, for anything else."""
    n = len(rows) - 1
    old, new = rows[:-1], rows[-1]
    plain_deltas = {row.delta for row in old
                    if row is not None and not row.registration.startswith(PENDING)}
    if new is None and len(plain_deltas) == 1 and (delta := next(iter(plain_deltas))) != n:
        raise _refuse(biz_type, f"its rows say it is in {delta} databases, but "
                                f"{n} {'was' if n == 1 else 'were'} given: give them all")
    for k, (row, name) in enumerate(zip(old, names, strict=False)):
        if row is None:
            raise _refuse(biz_type, f"{name} does not hold it")
        if row.remainder != k:
            raise _refuse(biz_type, f"{name} holds the class {row.remainder} (mod {row.delta}), "
                                    f"so it is number {row.remainder} (counting from 0) in the "
                                    f"servers' list, not number {k}: the databases are given "
                                    "in another order")
    if new is None:
        plain = {row.registration for row in old if row is not None}
        wrong = [f"{name} is frozen by an idgen add-db to another database"
                 if row.registration.startswith(PENDING)
                 else f"{name} holds the class {row.remainder} (mod {row.delta})"
                 for row, name in zip(old, names, strict=False)
                 if row is not None and (row.delta != n or row.registration.startswith(PENDING))]
        if any(row is not None and row.registration.startswith(PENDING) for row in old):
            raise _refuse(biz_type, "; ".join(wrong), frozen=True)
        if wrong or len(plain) != 1:
            raise _refuse(biz_type, "its rows are not the classes 0..n-1 (mod n) of one "
                          f"registration, n = {n} ({'; '.join(wrong) or 'registered apart'})")
        return new_registration()[:24]
    target = new.registration.removeprefix(PENDING)
    if new.registration.startswith(PENDING) and (new.remainder != n or new.delta != n + 1):
        raise _refuse(biz_type, f"a move to {names[-1]} from {new.remainder} databases is under "
                                f"way, and {n} were given", frozen=True)
    if new.remainder != n or new.delta != n + 1 or not target:
        raise _refuse(biz_type, f"the new database {names[-1]} already holds it, as the class "
                                f"{new.remainder} (mod {new.delta}); add another database")
    plain = set()
    for row, name in zip(old, names, strict=False):
        assert row is not None
        if _frozen_for(row, target) or _moved_to(row, target, n):
            continue
        if row.delta == n and not row.registration.startswith(PENDING):
            plain.add(row.registration)
            continue
        raise _refuse(biz_type, f"{name} is neither as servers use it now nor part of a move "
                                f"to {names[-1]} (registration {row.registration[:16]!r}, delta "
                                f"{row.delta})", frozen=row.registration.startswith(PENDING))
    if len(plain) > 1:
        raise _refuse(biz_type, "its rows were registered apart")
    return target


def _frozen_for(row: BizRow, target: str) -> bool:
    return row.registration == PENDING + target


def _moved_to(row: BizRow, target: str, n: int) -> bool:
    return row.registration == target and row.delta == n + 1


def _write(store: SegmentStore, biz_type: str, change: Callable[[BizRow], dict[str, object]],
           done: Callable[[BizRow], bool]) -> BizRow:
    """Compare-and-set ``change(row)`` on the row unless ``done(row)``; the row as written
    (or found done). ``change`` raises ``BizTypeConflict`` for a row it must not touch."""
    for attempt in range(_ATTEMPTS):
        row = store.read(biz_type)
        if row is None:
            raise StorageUnavailable(f"the row of {biz_type!r} in {store.name} disappeared")
        if done(row):
            return row
        values = change(row)
        try:
            with store.engine.begin() as conn:
                won = conn.execute(update(segment_table).where(
                    _T.biz_type == biz_type, _T.version == row.version).values(
                    **values, version=_T.version + 1,
                    updated_at=func.current_timestamp())).rowcount == 1
        except DB_ERRORS as exc:
            if not lost_race(exc):
                raise store.unavailable(exc) from None
            won = False  # a deadlock or a Galera certification lost to an allocator
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
    target = _target(rows, names, biz_type)
    wrote: list[bool] = []  # one entry once this run has written anything
    try:
        return _move(stores, new, everything, names, rows, biz_type, target, n, wrote)
    except (StorageUnavailable, BizTypeConflict) as exc:
        if rows[-1] is None and not wrote:
            raise  # the move had not begun: nothing to finish
        raise StorageUnavailable(
            f"{exc} -- the move of {biz_type!r} stopped halfway: its frozen rows are not served "
            "(servers hand out what they hold, then refuse it) until the same idgen add-db "
            "command is run again, which finishes it") from None


def _move(stores: Sequence[SegmentStore], new: SegmentStore, everything: Sequence[SegmentStore],
          names: Sequence[str], rows: Sequence[BizRow | None], biz_type: str, target: str,
          n: int, wrote: list[bool]) -> list[Moved]:
    pending = PENDING + target
    before: list[tuple[int, int] | None] = [(n, k) for k in range(n)] + [None]

    # 0. The new database's row first, frozen: any frozen or moved old row found later
    #    then names the move it belongs to (``_target``).
    if rows[-1] is None:
        step = next(row.step for row in rows[:-1] if row is not None)
        new.register(biz_type, step=step, delta=n + 1, remainder=n, registration=pending)
        wrote.append(True)

    # 1. Freeze: no row of an old class is served once it is frozen.
    def freeze(row: BizRow) -> dict[str, object]:
        if row.registration.startswith(PENDING) or row.delta != n:
            raise _refuse(biz_type, f"a row changed meanwhile (registration "
                                    f"{row.registration[:16]!r}, delta {row.delta})")
        return {"registration": pending, "delta": FROZEN_DELTA}

    for store in stores:
        _write(store, biz_type, freeze,
               lambda r: _frozen_for(r, target) or _moved_to(r, target, n))

    # 2. Move: with every row frozen (or moved by an earlier run), H is above every ID of
    #    the old classes. A row found otherwise (restored, failed over) stops the move.
    frozen = _read_all(everything, biz_type)
    for row, name in zip(frozen, names, strict=True):
        if row is None or not (_frozen_for(row, target) or _moved_to(row, target, n)):
            raise StorageUnavailable(
                f"cannot add a database to {biz_type!r}: its row in {name} is no longer frozen "
                "(restored from a backup or failed over meanwhile?); run the command again")
    high = max(row.max_id for row in frozen if row is not None)

    def move(k: int) -> Callable[[BizRow], dict[str, object]]:
        def values(row: BizRow) -> dict[str, object]:
            if not _frozen_for(row, target):
                raise _refuse(biz_type, f"a row changed meanwhile (registration "
                                        f"{row.registration[:16]!r}, delta {row.delta})")
            return {"registration": target, "delta": n + 1, "remainder": k,
                    "max_id": max(row.max_id, high)}
        return values

    moved = []
    for k, store in enumerate(everything):
        was = frozen[k]
        assert was is not None  # checked above
        row = _write(store, biz_type, move(k), lambda r: _moved_to(r, target, n))
        moved.append(Moved(store.label or f"db{k}", store.name, before[k], (n + 1, k), row.max_id,
                           changed=not _moved_to(was, target, n)))
    if any(m.changed for m in moved):
        log.warning("biz type %r moved to %d databases: every segment from now on lies above %d",
                    biz_type, n + 1, high,
                    extra={"biz_type": biz_type, "databases": n + 1, "above": high})
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
                                 "they do")
    return rows
