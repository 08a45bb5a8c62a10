"""A biz type's rows, and what they must satisfy before a segment is cut from them.

Each database that serves a biz type holds one row for it. Registered together
(``idgen add-biz NAME --db A --db B ...``), database k of n gets ``delta = n``
and ``remainder = k`` (``residue_class``) and all n rows share one random
``registration``: each database then hands out its own residue class and no two
can ever produce the same ID, whatever their ``max_id``s.

Rows are also edited by people: registered apart, restored from a backup,
changed by hand. A set of rows that is not one set of distinct residue classes
hands out the same IDs from two databases, silently. So before any segment is
cut, and at every allocation (rows can change under a running server), the
server checks:

1. The row itself (``check_row``): ``max_id >= 0``, ``1 <= step <= MAX_ROW_STEP``,
   ``delta >= 1``, ``0 <= remainder < delta`` and ``step >= delta`` (a smaller
   step makes segments without IDs). A damaged row is named with its database
   and field.
2. The set (``check_residue_set``): every row of the biz type the server has
   read has the same ``delta`` and the same ``registration``, no two share a
   ``remainder``, and ``delta`` is at least the number of databases the server
   uses. The last rule needs no other row: a biz type registered for fewer
   databases than the server uses (the commonest way to get two rows of one
   class) is refused even while the other databases cannot be read. What it
   cannot see is a database it has never read holding a row of the same class
   and the same width; that is checked as soon as the database answers.

Either failure is ``BizTypeMisconfigured`` (FAILED_PRECONDITION on the wire):
the biz type is refused, the others keep being served, and service resumes by
itself once the rows are repaired. A row that ``idgen add-db`` froze is refused
too, as ``BizTypeMoving`` (UNAVAILABLE): a pause that callers wait out.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from idgen_core.errors import BizTypeMisconfigured, BizTypeMoving, InvalidRequest

__all__ = ["MAX_ROW_STEP", "PENDING", "BizRow", "check_residue_set", "check_row", "damaged_row", "new_registration",
           "residue_class"]

MAX_ROW_STEP = 10**12
"""The largest step a biz type may have: a larger one (a slip of the finger) would use up
the int64 range in a few allocations."""

_REPAIR = "nothing is handed out for it until the rows are repaired (README: what the server checks)"


@dataclass(frozen=True, slots=True)
class BizRow:
    """A biz type's row in one database, as read."""

    biz_type: str
    max_id: int
    step: int
    delta: int
    remainder: int
    version: int
    registration: str = ""


def residue_class(index: int, count: int) -> tuple[int, int]:
    """``(delta, remainder)`` of the ``index``-th of ``count`` databases serving one biz type."""
    if not 0 <= index < count:
        raise InvalidRequest(f"database index {index} is not in 0..{count - 1}")
    return count, index


PENDING = "pending-"
"""How the registration of a row frozen by ``idgen add-db`` begins (``idgen_server.moves``):
no segment is cut from such a row, whatever the other rows say."""


def new_registration() -> str:
    """A fresh identifier shared by the rows of one registration (random, 32 hex digits)."""
    return secrets.token_hex(16)


def _damage(row: BizRow) -> str | None:
    if row.max_id < 0:
        return f"max_id is {row.max_id} (must be at least 0)"
    if not 1 <= row.step <= MAX_ROW_STEP:
        return f"step is {row.step} (must be in 1..{MAX_ROW_STEP})"
    if row.delta < 1:
        return f"delta is {row.delta} (must be at least 1)"
    if not 0 <= row.remainder < row.delta:
        return f"remainder is {row.remainder} (must be in 0..{row.delta - 1}, below delta)"
    if row.step < row.delta:
        return f"step is {row.step}, below delta {row.delta} (segments would hold no ID)"
    return None


def damaged_row(database: str, biz_type: str, what: str) -> BizTypeMisconfigured:
    """The error for a row of ``biz_type`` in ``database`` whose field is wrong as ``what`` says."""
    return BizTypeMisconfigured(
        f"biz type {biz_type!r} has a damaged row in {database}: {what}; {_REPAIR}")


def check_row(database: str, row: BizRow) -> None:
    """Raise ``BizTypeMisconfigured`` naming the database, biz type and field if ``row`` is
    damaged, or if ``idgen add-db`` has frozen it (``PENDING``)."""
    if row.registration.startswith(PENDING):
        raise BizTypeMoving(
            f"biz type {row.biz_type!r} is being moved to another set of databases (idgen "
            f"add-db): {database} cuts no segment of it until the move is finished, in moments; "
            "retry shortly, and if the command stopped halfway, run it again")
    damage = _damage(row)
    if damage is not None:
        raise damaged_row(database, row.biz_type, damage)


def check_residue_set(biz_type: str, rows: Mapping[str, BizRow], databases: int) -> None:
    """Raise ``BizTypeMisconfigured`` unless ``rows`` (database name -> row) are one
    registration of distinct residue classes, wide enough for ``databases`` databases."""
    for name, row in rows.items():
        check_row(name, row)
    problems = []
    deltas = {row.delta for row in rows.values()}
    if len(deltas) > 1:
        problems.append("their delta differs: " + _listing(rows, lambda r: f"delta {r.delta}"))
    elif deltas and (delta := deltas.pop()) < databases:
        problems.append(
            f"delta is {delta}, but this server uses {databases} databases: each needs delta "
            f"{databases} or more, or two of them could hand out the same IDs (to add a "
            "database to a biz type in use, run idgen add-db; else give the server the "
            "databases the biz type was registered for)"
        )
    if len({row.registration for row in rows.values()}) > 1:
        problems.append("they were registered apart: " + _listing(
            rows, lambda r: f"registration {r.registration[:8] or '(none)'}"))
    by_class: dict[tuple[int, int], list[str]] = {}
    for name, row in rows.items():
        by_class.setdefault((row.delta, row.remainder), []).append(name)
    for (delta, remainder), names in by_class.items():
        if len(names) > 1:
            problems.append(f"{' and '.join(names)} hand out the same IDs, "
                            f"those = {remainder} (mod {delta})")
    if problems:
        raise BizTypeMisconfigured(
            f"biz type {biz_type!r} is refused: its rows do not form one set of distinct residue "
            f"classes ({'; '.join(problems)}); {_REPAIR}"
        )


def _listing(rows: Mapping[str, BizRow], describe: Callable[[BizRow], str]) -> str:
    return ", ".join(f"{describe(row)} in {name}" for name, row in rows.items())
