"""The segment table as an operator sees it: every row of every database, and two edits.

``read_catalog`` reads every row of every database (or one biz type's), with
``updated_at``, which ``BizRow`` does not carry; a database that cannot be read is
reported as such, the others are still read. ``summarize`` says what one biz
type's rows mean together: in how many databases it is, whether they form the
full residue set, whether a server would refuse them (``check_residue_set``).

The two edits work as allocation does, by compare-and-set on ``version``, which
they bump: an allocator that read the row before loses its own compare-and-set,
reads again and goes on with the new row. Neither can lower a ``max_id``, which
would hand out IDs a second time; nothing here offers that.

- ``set_step`` changes the step in every database that holds the biz type. Every
  database must answer, and the step must suit every row (``1..MAX_ROW_STEP``,
  at least the row's ``delta``), before anything is written. The step only sets
  how many numbers one allocation claims: which IDs a database hands out are its
  residue class's, above its ``max_id``, so steps that differ between databases
  (while this runs, or after it failed halfway) cannot make duplicates.
- ``skip_to`` raises ``max_id`` to an ID where it is below it, so that every
  segment allocated afterwards lies above that ID. Every database must answer
  first: one left out would go on allocating below it.

Failures come out as ``StorageUnavailable`` naming the database without its
password, with no SQL (``idgen_server.database``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.sql import func

from idgen_core.errors import BizTypeMisconfigured, InvalidRequest, StorageUnavailable
from idgen_core.retry import Backoff
from idgen_core.segment import INT64_MAX, validate_biz_type
from idgen_server.allocator import unknown_biz_type
from idgen_server.database import DB_ERRORS
from idgen_server.rows import MAX_ROW_STEP, BizRow, check_residue_set, check_row
from idgen_server.schema import segment_table
from idgen_server.store import SegmentStore

__all__ = ["Change", "Entry", "Listing", "Summary", "read_catalog", "set_step", "skip_to", "summarize"]

log = logging.getLogger(__name__)

_T = segment_table.c
_NUMBERS = ("max_id", "step", "delta", "remainder", "version")
_ATTEMPTS = 100
_RETRY = Backoff(initial=0.001, maximum=0.05)
"""How long an edit that lost the compare-and-set to an allocator waits before it reads again."""


@dataclass(frozen=True)
class Entry:
    """One biz type's row in one database, as read. A field that is not a whole number
    (a hand edit; SQLite stores anything) is None; ``damage`` says what a server
    would refuse in the row, else None."""

    biz_type: str
    max_id: int | None
    step: int | None
    delta: int | None
    remainder: int | None
    version: int | None
    registration: str
    updated_at: datetime | None
    damage: str | None = None

    @property
    def range_used(self) -> float | None:
        """``max_id`` as a share of the int64 range, 0 to 1: what is used up for good."""
        return None if self.max_id is None else self.max_id / INT64_MAX

    def row(self) -> BizRow | None:
        """The row as a server reads it, or None if a field is not a whole number."""
        if (self.max_id is None or self.step is None or self.delta is None
                or self.remainder is None or self.version is None):
            return None
        return BizRow(self.biz_type, self.max_id, self.step, self.delta, self.remainder,
                      self.version, self.registration)


@dataclass(frozen=True)
class Listing:
    """One database's rows by biz type, or why it could not be read (``entries`` None)."""

    label: str
    name: str
    entries: dict[str, Entry] | None
    error: str | None = None


@dataclass(frozen=True)
class Change:
    """What an edit did in one database: the value before and after (equal if nothing
    changed; both None if the database holds no row of the biz type), or why it could not
    write there (``error``)."""

    label: str
    name: str
    before: int | None
    after: int | None
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.error is None and self.before is not None and self.before != self.after


@dataclass(frozen=True)
class Summary:
    """What one biz type's rows say together."""

    registered_in: list[str]  # labels of the databases that hold a row
    missing: list[str]  # labels of those that answered without one
    unreadable: list[str]
    full_residue_set: bool | None  # None: cannot tell (a database unreadable, a row unreadable)
    refusal: str | None  # what a server would refuse the biz type for, else None
    steps: dict[str, int]  # by label


def _unavailable(store: SegmentStore, exc: BaseException) -> StorageUnavailable:
    """What ``SegmentStore`` raises for ``exc``: the database by its name, no SQL."""
    return store.unavailable(exc)


def _label(store: SegmentStore, index: int) -> str:
    return store.label or f"db{index}"


def _entry(record: Row[Any], database: str) -> Entry:
    """The row as read, with what is wrong with it; tolerant of anything a hand edit left."""
    numbers: dict[str, Any] = {}
    damage = None
    for field in _NUMBERS:
        value = getattr(record, field)
        whole = isinstance(value, int) and not isinstance(value, bool)
        numbers[field] = value if whole else None
        if not whole and damage is None:
            damage = f"{field} is {repr(value)[:40]}, not a whole number"
    updated = record.updated_at
    entry = Entry(str(record.biz_type), registration=str(record.registration or ""),
                  updated_at=updated if isinstance(updated, datetime) else None, **numbers)
    row = entry.row()
    if row is not None:
        try:
            check_row(database, row)
        except BizTypeMisconfigured as exc:
            damage = str(exc)
    return entry if damage is None else replace(entry, damage=damage)


def read_catalog(stores: Sequence[SegmentStore], biz_type: str | None = None) -> list[Listing]:
    """Every database's rows (only ``biz_type``'s if given), in the order of ``stores``;
    a database that cannot be read has ``entries`` None and its ``error``. Never raises
    ``StorageUnavailable``."""
    query = select(*segment_table.c).order_by(_T.biz_type)
    if biz_type is not None:
        query = query.where(_T.biz_type == validate_biz_type(biz_type))
    listings = []
    for index, store in enumerate(stores):
        try:
            try:
                with store.engine.connect() as conn:
                    records = list(conn.execute(query))
            except DB_ERRORS as exc:
                raise _unavailable(store, exc) from None
        except StorageUnavailable as exc:
            listings.append(Listing(_label(store, index), store.name, None, str(exc)))
            continue
        entries = {entry.biz_type: entry for entry in (_entry(r, store.name) for r in records)}
        listings.append(Listing(_label(store, index), store.name, entries))
    return listings


def summarize(biz_type: str, listings: Sequence[Listing]) -> Summary:
    """What ``biz_type``'s rows in ``listings`` (every database a server uses) say together."""
    held = {x.label: x.entries[biz_type] for x in listings
            if x.entries is not None and biz_type in x.entries}
    unreadable = [x.label for x in listings if x.entries is None]
    rows = {label: row for label, entry in held.items() if (row := entry.row()) is not None}
    refusal = None
    try:
        check_residue_set(biz_type, rows, len(listings))
    except BizTypeMisconfigured as exc:
        refusal = str(exc)
    full = None
    if not unreadable and len(rows) == len(held):
        deltas = {row.delta for row in rows.values()}
        full = (len(deltas) == 1 and sorted(row.remainder for row in rows.values())
                == list(range(deltas.pop())))
    return Summary(registered_in=list(held), unreadable=unreadable,
                   missing=[x.label for x in listings if x.entries is not None and x.label not in held],
                   full_residue_set=full, refusal=refusal,
                   steps={label: row.step for label, row in rows.items()})


# -- the edits ------------------------------------------------------------------------------


def _read_every(stores: Sequence[SegmentStore], biz_type: str, doing: str) -> list[BizRow | None]:
    """The biz type's row in every database; ``StorageUnavailable`` (nothing written) unless
    every one answers, ``UnknownBizType`` if none holds it."""
    rows: list[BizRow | None] = []
    failed = []
    for store in stores:
        try:
            rows.append(store.read(biz_type))
        except StorageUnavailable as exc:
            failed.append(str(exc))
    if failed:
        raise StorageUnavailable(f"cannot {doing}: every database must be read first, and "
                                 f"{'; '.join(failed)}. Nothing was changed")
    if all(row is None for row in rows):
        raise unknown_biz_type(biz_type)
    return rows


def _edit(store: SegmentStore, label: str, biz_type: str, field: str,
          wanted: Callable[[BizRow], int | None], *, above: int | None = None) -> Change:
    """Set ``field`` of the row to ``wanted(row)`` (None: leave it) by compare-and-set on
    its version, reading again after losing to an allocator; bounded."""
    for attempt in range(_ATTEMPTS):
        try:
            row = store.read(biz_type)
        except (StorageUnavailable, BizTypeMisconfigured) as exc:  # failing, or damaged meanwhile
            return Change(label, store.name, None, None, str(exc))
        if row is None:
            return Change(label, store.name, None, None,
                          f"its row of {biz_type!r} disappeared meanwhile: nothing was changed there")
        before = getattr(row, field)
        try:
            value = wanted(row)
        except InvalidRequest as exc:  # the row changed since every database was checked
            return Change(label, store.name, before, before, f"{exc}: nothing was changed there")
        if value is None or value == before:
            return Change(label, store.name, before, before)
        condition = [_T.biz_type == biz_type, _T.version == row.version]
        if above is not None:  # never lower a max_id, whatever was read
            condition.append(_T.max_id < above)
        try:
            with store.engine.begin() as conn:
                won = conn.execute(update(segment_table).where(*condition).values(
                    {field: value, "version": _T.version + 1,
                     "updated_at": func.current_timestamp()})).rowcount == 1
        except DB_ERRORS as exc:
            return Change(label, store.name, before, before, str(_unavailable(store, exc)))
        if won:
            log.debug("database %s: %s of %r changed from %d to %d", store.name, field, biz_type,
                     before, value)
            return Change(label, store.name, before, value)
        time.sleep(_RETRY.delay(attempt + 1))  # an allocator won: read again
    return Change(label, store.name, None, None,
                  f"gave up after {_ATTEMPTS} attempts lost to allocators: nothing was changed there")


def set_step(stores: Sequence[SegmentStore], biz_type: str, step: int) -> list[Change]:
    """Set the biz type's step to ``step`` in every database that holds it (one without a
    row is left alone: ``before`` None). ``InvalidRequest`` (nothing written) if ``step`` is
    not in ``1..MAX_ROW_STEP`` or below a row's ``delta``; see ``_read_every`` for the rest.
    A database that fails while writing has ``error`` set; the others are changed."""
    validate_biz_type(biz_type)
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= MAX_ROW_STEP:
        raise InvalidRequest(f"the step must be a whole number in 1..{MAX_ROW_STEP}, got {step!r}")
    rows = _read_every(stores, biz_type, f"change the step of {biz_type!r}")
    for store, row in zip(stores, rows, strict=True):
        if row is not None and step < row.delta:
            raise InvalidRequest(
                f"step {step} is below delta {row.delta} of {biz_type!r} in {store.name}: that "
                f"database hands out one number in {row.delta}, so a segment of fewer numbers "
                f"could hold none; give {row.delta} or more. Nothing was changed")

    def wanted(row: BizRow) -> int:
        if step < row.delta:  # edited since it was checked
            raise InvalidRequest(f"step {step} is now below the row's delta {row.delta}")
        return step

    return [_edit(store, _label(store, k), biz_type, "step", wanted) if row is not None
            else Change(_label(store, k), store.name, None, None)
            for k, (store, row) in enumerate(zip(stores, rows, strict=True))]


def skip_to(stores: Sequence[SegmentStore], biz_type: str, target: int) -> list[Change]:
    """Raise the biz type's ``max_id`` to ``target`` in every database that holds it where it
    is below, so that every segment allocated afterwards lies above ``target``; never lowers
    one (``after`` equals ``before`` where it was at or above; ``before`` None: no row).
    ``InvalidRequest`` unless ``target`` is in ``1..INT64_MAX - 1``; see ``_read_every`` for
    the rest."""
    validate_biz_type(biz_type)
    if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target < INT64_MAX:
        raise InvalidRequest(f"the ID must be a whole number in 1..{INT64_MAX - 1}, got {target!r}")
    rows = _read_every(stores, biz_type, f"move {biz_type!r} up to {target}")
    return [_edit(store, _label(store, k), biz_type, "max_id",
                  lambda row: target if row.max_id < target else None, above=target)
            if row is not None else Change(_label(store, k), store.name, None, None)
            for k, (store, row) in enumerate(zip(stores, rows, strict=True))]
