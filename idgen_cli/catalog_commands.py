"""``idgen list``, ``describe``, ``set-step``, ``skip-to`` and ``add-db``: the segment table,
for operators.

They work on the databases directly, found as ``serve`` finds them
(``idgen_cli.databases``), through ``idgen_server.catalog``; no server needs to
run, and running servers see the edits at their next allocation. Databases are
shown by label (``db0``, ``db1``, ... unless named ``LABEL=URL``), with a legend
giving each one's URL, password hidden.

Exit status: 0 done; 1 a database could not be read or written (what could be
was printed first), or the biz type is unknown; 2 a bad request (a step that does
not suit the rows).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from idgen_cli.databases import stores
from idgen_server import catalog
from idgen_server.allocator import unknown_biz_type
from idgen_server.catalog import Change, Entry, Listing, Summary, read_catalog, summarize
from idgen_server.moves import add_database
from idgen_server.urls import split_label

__all__ = ["add_db", "describe", "list_biz_types", "set_step", "skip_to"]

_COLUMNS = ("MAX_ID", "STEP", "DELTA", "REMAINDER", "VERSION", "UPDATED_AT", "RANGE USED")


def _percent(share: float | None) -> str:
    """A share of the int64 range as a percentage, with the digits a small one needs."""
    if share is None:
        return "?"
    if share == 0:
        return "0%"
    percent = share * 100
    return f"{percent:.2f}%" if percent >= 0.01 else f"{percent:.2e}%"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def _number(value: int | None) -> str:
    return "?" if value is None else str(value)


def _cells(entry: Entry) -> list[str]:
    return [_number(entry.max_id), _number(entry.step), _number(entry.delta),
            _number(entry.remainder), _number(entry.version), _when(entry.updated_at),
            _percent(entry.range_used)]


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _legend(listings: Sequence[Listing]) -> None:
    for listing in listings:
        print(f"{listing.label} = {listing.name}{'' if listing.entries is not None else ' (unreadable)'}")
    print()


def _entry_json(entry: Entry) -> dict[str, Any]:
    # max_id as a string, like the IDs of `idgen next --json`: beyond 2**53 a JSON number
    # loses digits in many readers.
    return {"biz_type": entry.biz_type,
            "max_id": None if entry.max_id is None else str(entry.max_id),
            "step": entry.step, "delta": entry.delta, "remainder": entry.remainder,
            "version": entry.version, "registration": entry.registration,
            "updated_at": None if entry.updated_at is None else entry.updated_at.isoformat(),
            "range_used": entry.range_used, "damage": entry.damage}


def _database_json(listing: Listing) -> dict[str, Any]:
    return {"label": listing.label, "name": listing.name,
            "readable": listing.entries is not None, "error": listing.error}


def _report_unreadable(listings: Sequence[Listing]) -> int:
    """Each database that could not be read, on stderr; the exit status."""
    failed = [listing for listing in listings if listing.entries is None]
    for listing in failed:
        print(f"idgen: error: {listing.label}: {listing.error}", file=sys.stderr)
    return 1 if failed else 0


def list_biz_types(args: argparse.Namespace) -> int:
    """``idgen list``: every biz type's row in every database."""
    with stores(args) as opened:
        listings = read_catalog(opened)
    if args.json:
        print(json.dumps({"databases": [
            {**_database_json(x), "biz_types": None if x.entries is None
             else [_entry_json(e) for e in x.entries.values()]} for x in listings]}, indent=2))
        return _report_unreadable(listings)
    _legend(listings)
    rows: list[tuple[str, ...]] = [("DATABASE", "BIZ TYPE", *_COLUMNS)]
    notes = []
    for listing in listings:
        if listing.entries is not None and not listing.entries:
            notes.append(f"{listing.label}: no biz type registered")
        for entry in (listing.entries or {}).values():
            rows.append((listing.label, entry.biz_type, *_cells(entry)))
            if entry.damage is not None:
                notes.append(f"{listing.label}: {entry.damage}")
    _table(rows)
    for note in notes:
        print(f"note: {note}")
    return _report_unreadable(listings)


def _observations(name: str, listings: Sequence[Listing], summary: Summary) -> list[str]:
    """What the rows say together, one sentence each."""
    said = [f"registered in {len(summary.registered_in)} of {len(listings)} database(s)"
            + (f"; no row in {', '.join(summary.missing)}" if summary.missing else "")
            + (f"; {', '.join(summary.unreadable)} could not be read" if summary.unreadable else "")]
    rows = [x.entries[name] for x in listings if x.entries is not None and name in x.entries]
    if summary.full_residue_set:
        delta = rows[0].delta
        said.append(f"the rows form the full residue set mod {delta}: every ID class has "
                    "exactly one database")
    elif summary.full_residue_set is False:
        classes = ", ".join(sorted({f"{e.remainder} mod {e.delta}" for e in rows}))
        said.append(f"the rows do not form the full residue set (classes held: {classes})")
    else:
        said.append("whether the rows form the full residue set cannot be told: not every "
                    "row could be read")
    steps = set(summary.steps.values())
    if len(steps) == 1:
        said.append(f"step {steps.pop()} in every row")
    elif steps:
        said.append("the step differs between databases (" + ", ".join(
            f"{label}: {step}" for label, step in summary.steps.items()) + "): harmless, the "
            f"step cannot make duplicates; `idgen set-step {name} N` makes them alike")
    if summary.refusal is not None:
        said.append(f"a server would refuse it: {summary.refusal}")
    elif rows:
        said.append(("the rows that could be read pass" if summary.unreadable else "it passes")
                    + " the checks a server makes at every allocation")
    highest = max((e.max_id for e in rows if e.max_id is not None), default=None)
    if highest is not None:
        said.append(f"highest max_id {highest} ({_percent(highest / (2**63 - 1))} of the "
                    "int64 range used)")
    return said


def describe(args: argparse.Namespace) -> int:
    """``idgen describe NAME``: one biz type in every database, and what its rows say."""
    with stores(args) as opened:
        listings = read_catalog(opened, args.name)
    summary = summarize(args.name, listings)
    if not summary.registered_in and not summary.unreadable:
        raise unknown_biz_type(args.name)
    said = _observations(args.name, listings, summary)
    if args.json:
        print(json.dumps({
            "biz_type": args.name,
            "databases": [{**_database_json(x), "row": None if x.entries is None or args.name
                           not in x.entries else _entry_json(x.entries[args.name])}
                          for x in listings],
            "registered_in": summary.registered_in, "missing": summary.missing,
            "unreadable": summary.unreadable, "full_residue_set": summary.full_residue_set,
            "steps": summary.steps, "steps_differ": len(set(summary.steps.values())) > 1,
            "refusal": summary.refusal, "notes": said}, indent=2))
        return _report_unreadable(listings)
    _legend(listings)
    rows: list[tuple[str, ...]] = [("DATABASE", *_COLUMNS)]
    for listing in listings:
        if listing.entries is None:
            rows.append((listing.label, "unreadable"))
        elif args.name not in listing.entries:
            rows.append((listing.label, "no row"))
        else:
            rows.append((listing.label, *_cells(listing.entries[args.name])))
    _table([row + ("",) * (len(rows[0]) - len(row)) for row in rows])
    print()
    for line in said:
        print(f"- {line}")
    for listing in listings:
        entry = (listing.entries or {}).get(args.name)
        if entry is not None and entry.damage is not None:
            print(f"- {listing.label}: {entry.damage}")
    return _report_unreadable(listings)


def _failed(changes: Sequence[Change]) -> list[Change]:
    failed = [change for change in changes if change.error is not None]
    for change in failed:
        print(f"idgen: error: {change.label}: {change.error}", file=sys.stderr)
    return failed


def set_step(args: argparse.Namespace) -> int:
    """``idgen set-step NAME N``: the step, in every database at once."""
    with stores(args) as opened:
        changes = catalog.set_step(opened, args.name, args.step)
    for change in changes:
        where = f"in {change.label} ({change.name})"
        if change.error is not None:
            print(f"{args.name}: step not changed {where}")
        elif change.before is None:
            print(f"{args.name}: no row {where}: left alone")
        elif change.changed:
            print(f"{args.name}: step {change.before} -> {change.after} {where}")
        else:
            print(f"{args.name}: step already {change.after} {where}")
    if _failed(changes):
        print(f"idgen: error: the step of {args.name!r} now differs between databases, which is "
              "harmless (the step cannot make duplicates): run the command again once every "
              "database answers", file=sys.stderr)
        return 1
    print(f"running servers use step {args.step} from their next allocation of {args.name!r}; "
          "the segments they and their clients hold already keep their size")
    return 0


def skip_to(args: argparse.Namespace) -> int:
    """``idgen skip-to NAME ID``: every segment allocated afterwards lies above ID."""
    with stores(args) as opened:
        changes = catalog.skip_to(opened, args.name, args.id)
    for change in changes:
        where = f"in {change.label} ({change.name})"
        if change.error is not None:
            print(f"{args.name}: max_id not moved {where}")
        elif change.before is None:
            print(f"{args.name}: no row {where}: left alone")
        elif change.changed:
            print(f"{args.name}: max_id {change.before} -> {change.after} {where}")
        else:
            print(f"{args.name}: max_id {change.before} is at or above {args.id} already {where}: "
                  "left as it is (a max_id is never lowered: IDs would be handed out twice)")
    if _failed(changes):
        print(f"idgen: error: not every database was moved up to {args.id}: those that were not "
              "still hand out IDs below it; run the command again once every database answers",
              file=sys.stderr)
        return 1
    print(f"every segment of {args.name!r} allocated from now on lies above {args.id}; IDs "
          "already buffered by running servers and clients (up to two segments each) are "
          "below it and are still handed out")
    return 0



def add_db(args: argparse.Namespace) -> int:
    """``idgen add-db NAME --db URL... --new-db URL``: n databases become n + 1."""
    with stores(args) as opened, stores(_only(args, args.new_db, len(opened))) as added:
        moved = add_database(opened, added[0], args.name)
    for row in moved:
        now = f"IDs = {row.after[1]} (mod {row.after[0]})"
        if not row.changed:
            print(f"{args.name}: {row.label} ({row.name}): moved already: {now}, max_id {row.max_id}")
            continue
        was = "new" if row.before is None else f"IDs = {row.before[1]} (mod {row.before[0]})"
        print(f"{args.name}: {row.label} ({row.name}): {was} -> {now}, above {row.max_id}")
    if not any(row.changed for row in moved):
        print(f"{args.name!r} was moved to these {len(moved)} databases already: nothing to do")
        return 0
    print(f"every segment of {args.name!r} allocated from now on lies above every ID handed out "
          f"before; start servers with all {len(moved)} databases in this order (servers on "
          "the old list keep working)")
    return 0


def _only(args: argparse.Namespace, entry: str, index: int) -> argparse.Namespace:
    """``args`` with ``entry`` as the one database (labelled ``db<index>`` unless it has a
    label), its password from the same password file."""
    label, _ = split_label(entry)
    return argparse.Namespace(**{**vars(args), "db": [entry if label else f"db{index}={entry}"],
                                 "config": None})
