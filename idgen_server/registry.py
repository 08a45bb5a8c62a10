"""Registering a biz type across its databases: the one way that keeps them apart.

``register(stores, biz_type, step=...)`` gives database k of n the residue class
``residue_class(k, n)`` and one registration shared by all n rows, so that a
server can later tell rows registered together from rows registered apart
(``idgen_server.rows``). It reads the biz type in every database first, and all
of them must answer:

- registered nowhere: it is registered in every database;
- registered everywhere alike (same classes, step and registration): nothing to do;
- anything else is refused with ``BizTypeConflict``, which says what is there:
  fewer or other databases, another step, rows registered apart, and rows in
  only some of the databases. The last may be an earlier run that stopped
  halfway, but it may as well be a database that served its class and was lost
  or replaced since: what it handed out cannot be known, so nothing is guessed.
  Adding a database to a biz type already in use is not a registration either:
  its IDs so far were handed out over fewer classes, so the new set must start
  above all of them; ``idgen add-db`` does that (``idgen_server.moves``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from idgen_core.errors import BizTypeConflict
from idgen_core.segment import validate_biz_type
from idgen_server.rows import BizRow, new_registration, residue_class
from idgen_server.store import SegmentStore
from idgen_server.urls import check_distinct

__all__ = ["Registered", "register"]


@dataclass(frozen=True)
class Registered:
    """The outcome in one database."""

    database: str
    created: bool
    step: int
    delta: int
    remainder: int


def register(stores: Sequence[SegmentStore], biz_type: str, *, step: int) -> list[Registered]:
    """Register ``biz_type`` in every store, store k getting ``residue_class(k, len(stores))``.

    Raises ``BizTypeConflict`` (nothing written) when it is registered otherwise,
    ``StorageUnavailable`` when a database cannot be read.
    """
    validate_biz_type(biz_type)
    check_distinct([store.name for store in stores])
    existing = [store.read(biz_type) for store in stores]
    registration = _registration_to_complete(biz_type, stores, existing, step)
    results = []
    for k, store in enumerate(stores):
        delta, remainder = residue_class(k, len(stores))
        try:
            created = store.register(biz_type, step=step, delta=delta, remainder=remainder,
                                     registration=registration)
        except BizTypeConflict:
            row = store.read(biz_type)
            if row is None or row.registration != registration:
                raise
            raise BizTypeConflict(  # the row this very run wrote, through another URL
                f"{store.name} already holds the row just written through "
                f"{stores[row.remainder].name if row.remainder < k else 'another URL'}: the "
                "same database is given twice (under two URLs?); give each database once"
            ) from None
        results.append(Registered(store.name, created, step, delta, remainder))
    return results


def _registration_to_complete(biz_type: str, stores: Sequence[SegmentStore],
                              rows: list[BizRow | None], step: int) -> str:
    """The registration the rows already share, or a new one if there are none;
    ``BizTypeConflict`` unless every database holds this very registration."""
    found = [(k, row) for k, row in enumerate(rows) if row is not None]
    if not found:
        return new_registration()
    n = len(stores)
    problems = []
    for k, row in found:
        if (row.delta, row.remainder) != residue_class(k, n):
            problems.append(f"in {stores[k].name} it is registered for {row.delta} database(s) "
                            f"with remainder {row.remainder}, not for {n} with remainder {k}")
        elif row.step != step:
            problems.append(f"in {stores[k].name} its step is {row.step}, not {step}")
    missing = [stores[k].name for k, row in enumerate(rows) if row is None]
    if missing:
        problems.append(f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no row "
                        "of it: a database that had one may have handed out IDs of its class (if "
                        "an earlier add-biz stopped halfway before anything was served, delete "
                        "its rows and register again)")
    if len({row.registration for _, row in found}) > 1:
        problems.append("its rows in " + ", ".join(stores[k].name for k, _ in found)
                        + " were registered apart")
    steps = {row.step for _, row in found}
    if problems and not missing and all("its step is" in p for p in problems) and len(steps) == 1:
        raise BizTypeConflict(  # the one difference that cannot hand out an ID twice
            f"biz type {biz_type!r} is already registered in every database, with step "
            f"{steps.pop()}, not {step}: to change its step, run `idgen set-step {biz_type} {step}`")
    if problems:
        raise BizTypeConflict(
            f"biz type {biz_type!r} is already registered otherwise: {'; '.join(problems)}. "
            "Registering it again over these databases could hand out IDs twice. Give the "
            "same --step and the same databases in the same order as when it was registered; "
            f"to add a database to a biz type in use, run `idgen add-db {biz_type} --db ... "
            "--new-db URL` with its databases in their order"
        )
    return found[0][1].registration
