"""``idgen status``: what one server holds (the ``Admin.Status`` RPC), for people or scripts.

For people: a header (release, start, serving), a table of the biz types the
server has served (its double buffer: current and next segment, step, fetches,
waits, IDs issued), a table of its databases (reachable or benched, since when,
last error), then each database's rows as the server last read them, with the
share of the int64 range each has used up.

``--json`` prints the reply in protobuf's canonical JSON mapping, with the
proto's field names, in the proto's order, and every field present, default
values included (the segments ``current`` and ``next`` are absent when none is
held). int64 and
uint64 values are JSON strings there, as the mapping prescribes: JavaScript's
numbers lose precision above 2**53.

Like every client command it needs no server packages.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from google.protobuf.descriptor import Descriptor

from idgen_cli.client_commands import client_for
from idgen_wire import idgen_pb2

__all__ = ["format_status", "percent", "status", "status_json"]

_RANGE_DIGITS = 2
"""Significant digits of a range used: enough to tell 2.2e-14% from 0."""


def status(args: argparse.Namespace) -> int:
    """Ask ``args.target`` for its status and print it; 0 on success (errors raise)."""
    with client_for(args) as client:
        reply = client.status()
    if args.json:
        sys.stdout.write(status_json(reply) + "\n")
    else:
        sys.stdout.write(format_status(reply, args.target))
    return 0


def status_json(reply: idgen_pb2.StatusResponse) -> str:
    """``reply`` in protobuf's canonical JSON mapping (the proto's field names, defaults
    included), its fields in the order of the .proto, indented."""
    from google.protobuf.json_format import MessageToDict

    mapped = MessageToDict(reply, preserving_proto_field_name=True,
                           always_print_fields_with_no_presence=True)
    return json.dumps(_in_field_order(mapped, reply.DESCRIPTOR), indent=2)


def _in_field_order(mapped: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    # MessageToDict puts the fields it adds for their defaults last: the .proto's order reads better.
    ordered: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name not in mapped:
            continue  # a message field not set (a segment not held)
        value = mapped[field.name]
        kind = field.message_type
        if kind is not None and kind.file is descriptor.file:  # not a Timestamp: its JSON is a string
            value = ([_in_field_order(v, kind) for v in value] if field.is_repeated
                     else _in_field_order(value, kind))
        ordered[field.name] = value
    return ordered


def format_status(reply: idgen_pb2.StatusResponse, target: str, now: float | None = None) -> str:
    """The tables ``idgen status`` prints for ``reply`` from ``target`` (``now``: the time
    ages are counted to, ``time.time()`` unless given)."""
    now = time.time() if now is None else now
    started = reply.started_at.ToNanoseconds() / 1e9
    lines = [f"idgen {reply.version} at {target}: {'serving' if reply.serving else 'NOT SERVING'}, "
             f"started {_when(started)} UTC ({_age(now - started)} ago)", ""]
    biz_rows = [("BIZ TYPE", "CURRENT SEGMENT", "IDS LEFT", "NEXT SEGMENT", "STEP", "FETCHES",
                 "WAITS", "ISSUED")]
    for biz in reply.biz_types:
        has_current, has_next = biz.HasField("current"), biz.HasField("next")
        biz_rows.append((biz.biz_type, _segment(biz.current) if has_current else "-",
                         str(biz.current.ids_left) if has_current else "0",
                         _segment(biz.next) if has_next else "-",
                         f"{biz.step} x {biz.step_multiplier}", str(biz.fetches), str(biz.waits),
                         str(biz.ids_issued)))
    if len(biz_rows) > 1:
        lines += _table(biz_rows)
    else:
        lines.append("no biz type served since the server started")
    lines.append("")
    db_rows = [("DATABASE", "NAME", "STATE (UTC)", "LAST ERROR")]
    for db in reply.databases:
        since = db.since.ToNanoseconds() / 1e9
        state = "up" if db.reachable else "BENCHED"
        via = f" via {db.node}" if db.node else ""
        db_rows.append((db.label, db.name,
                        f"{state}{via} since {_when(since)} (for {_age(now - since)})",
                        db.last_error or "-"))
    lines += _table(db_rows)
    for db in reply.databases:
        lines += ["", f"{db.label}: its rows as the server last read them"]
        rows = [("  BIZ TYPE", "MAX_ID", "STEP", "DELTA", "REMAINDER", "RANGE USED")]
        rows += [(f"  {row.biz_type}", str(row.max_id), str(row.step), str(row.delta),
                  str(row.remainder), percent(row.range_used)) for row in db.rows]
        lines += _table(rows) if len(rows) > 1 else ["  none read yet"]
    return "\n".join(lines) + "\n"


def percent(share: float) -> str:
    """``share`` (0 to 1) as a percentage with at least two significant digits, never in
    scientific notation: ``2.2e-16`` is ``0.000000000000022%``, ``0.5`` is ``50.00%``."""
    value = share * 100
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}%"
    decimals = max(2, _RANGE_DIGITS - 1 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}%"


def _segment(segment: idgen_pb2.SegmentStatus) -> str:
    text = f"{segment.start}..{segment.end}"
    if segment.delta > 1:  # only IDs of one residue class: say which
        text += f" ({segment.remainder} mod {segment.delta})"
    return text


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    """A duration for people: ``42s``, ``5m07s``, ``3h02m``, ``2d04h`` (clock skew: ``0s``)."""
    seconds = max(0, int(seconds))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"{days}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{minutes % 60:02d}m"
    if minutes:
        return f"{minutes}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]
