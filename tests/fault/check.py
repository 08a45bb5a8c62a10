"""Checks a recorded history of IDs, errors and faults against idgen's promises.

Given every call every caller made (with the IDs it got, or the error it saw)
and every fault the harness injected, it finds:
- duplicates: any ID received twice, by anyone (invariant 1);
- IDs outside 1..2^63-1 (invariant 2);
- order violations (invariant 3): IDs within one answer must increase; a local
  generator's IDs must increase overall; a caller pinned to one server must see
  increasing IDs across its calls for as long as that server process lives;
- reissued buffers: a server restarted after ``kill -9`` hands out only IDs
  above what the databases had allocated at the kill, so nothing the dead
  process had buffered is ever handed out again;
- reissued wasted ranges: a segment whose COMMIT went through but whose answer
  was dropped is never handed out;
- unexplained errors: every error must fall in the window of a fault that
  explains it for that kind of caller, extended by ``grace`` seconds of
  recovery after the fault ends: ``ServiceUnavailable`` when all databases
  were cut (everyone) or a server was killed (callers pinned to it);
  ``BizTypeMisconfigured`` while a row was damaged or clashed (everyone).
  Nothing else, notably not one database of two cut, explains any error.
"""
from __future__ import annotations

import array
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from idgen_core.segment import INT64_MAX
from tests.fault.worker import HEADER

__all__ = ["CallerLog", "Fault", "Findings", "check", "load_callers"]

_UNAVAILABLE = {"ServiceUnavailable", "StorageUnavailable"}
_MISCONFIGURED = {"BizTypeMisconfigured"}
_EXAMPLES = 10


@dataclass
class Fault:
    """One injected fault; ``end`` is when it was undone (for a kill: the restart was ready)."""

    kind: str  # one of tests.fault.harness.KINDS
    target: str  # a server address, "db0", "db1", or "all"
    start: float
    end: float
    detail: dict = field(default_factory=dict)


@dataclass
class Call:
    t0: float
    t1: float
    ids: array.array


@dataclass
class CallerLog:
    name: str
    kind: str  # remote, pinned, local
    target: str | None = None  # the server a pinned caller calls
    calls: list[Call] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


@dataclass
class Findings:
    ids: int = 0
    calls: int = 0
    duplicates: int = 0
    duplicate_examples: list[int] = field(default_factory=list)
    out_of_range: list[int] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    reissued_after_kill: list[str] = field(default_factory=list)
    reissued_wasted: list[str] = field(default_factory=list)
    errors: int = 0
    explained: Counter = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)
    unexplained_count: int = 0
    recovery: list[str] = field(default_factory=list)
    not_recovered: list[str] = field(default_factory=list)
    faults_by_kind: Counter = field(default_factory=Counter)
    errors_by_fault_kind: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.out_of_range or self.order_violations
                    or self.reissued_after_kill or self.reissued_wasted
                    or self.unexplained_count or self.not_recovered)

    def lines(self) -> Iterator[str]:
        yield f"IDs checked: {self.ids:,} in {self.calls:,} successful calls"
        yield f"duplicates: {self.duplicates}" + (
            f" e.g. {self.duplicate_examples}" if self.duplicates else "")
        yield f"IDs outside 1..2^63-1: {len(self.out_of_range)}"
        yield f"order violations: {len(self.order_violations)}"
        yield f"IDs a killed server had buffered, handed out again: {len(self.reissued_after_kill)}"
        yield f"IDs of lost-commit segments handed out: {len(self.reissued_wasted)}"
        yield "faults injected: " + (", ".join(f"{k} x{n}" for k, n in
                                               sorted(self.faults_by_kind.items())) or "none")
        yield f"errors seen by callers: {self.errors}"
        for (kind, typ, caller_kind), n in sorted(self.explained.items()):
            yield f"  {n} x {typ} to {caller_kind} callers, explained by {kind}"
        yield f"  unexplained: {self.unexplained_count}"
        for line in self.unexplained[:_EXAMPLES]:
            yield f"    {line}"
        for line in self.order_violations[:_EXAMPLES] + self.reissued_after_kill[:_EXAMPLES] \
                + self.reissued_wasted[:_EXAMPLES] + self.not_recovered[:_EXAMPLES]:
            yield f"  ! {line}"
        for line in self.recovery:
            yield f"  {line}"
        yield "RESULT: " + ("OK" if self.ok else "FAILED")


def read_calls(path: str) -> list[Call]:
    calls = []
    with open(path, "rb") as f:
        data = f.read()
    pos, size = 0, HEADER.size
    while pos + size <= len(data):
        t0, t1, n = HEADER.unpack_from(data, pos)
        pos += size
        ids = array.array("q")
        ids.frombytes(data[pos:pos + 8 * n])
        pos += 8 * n
        if len(ids) != n:
            break  # a torn last record: the worker died while writing (never expected)
        calls.append(Call(t0, t1, ids))
    return calls


def load_callers(out_dir: str, meta: dict[str, dict]) -> list[CallerLog]:
    """Read the files the workers wrote; ``meta`` maps caller name to kind and target."""
    logs = []
    for name, info in sorted(meta.items()):
        log = CallerLog(name, info["kind"], info.get("target"))
        base = os.path.join(out_dir, name)
        if os.path.exists(base + ".bin"):
            log.calls = read_calls(base + ".bin")
        if os.path.exists(base + ".err"):
            with open(base + ".err") as f:
                log.errors = [json.loads(line) for line in f if line.strip()]
        logs.append(log)
    return logs


def _increasing(ids: array.array) -> bool:
    return all(a < b for a, b in zip(ids, ids[1:]))


def _explains(fault: Fault, caller: CallerLog, error_type: str) -> bool:
    if fault.kind in ("misregistration", "damaged-row"):
        return error_type in _MISCONFIGURED
    if error_type not in _UNAVAILABLE:
        return False
    if fault.kind == "all-cut":
        return True
    return fault.kind == "kill" and caller.kind == "pinned" and caller.target == fault.target


def check(callers: Iterable[CallerLog], faults: list[Fault], *, grace: float, step: int,
          delta: int) -> Findings:
    callers = list(callers)
    found = Findings()
    found.faults_by_kind = Counter(f.kind for f in faults)
    kills: dict[str, list[Fault]] = {}
    for fault in sorted(faults, key=lambda f: f.start):
        if fault.kind == "kill":
            kills.setdefault(fault.target, []).append(fault)
    wasted = [(d["db"], d["max_id"] - step, d["max_id"])
              for f in faults if f.kind == "drop-commit"
              for d in f.detail.get("drops", []) if d["when"] == "after" and d["max_id"]]

    buckets = [array.array("q") for _ in range(256)]
    for caller in callers:
        _check_order(caller, kills, found)
        for call in caller.calls:
            found.calls += 1
            found.ids += len(call.ids)
            for x in call.ids:
                buckets[x & 255].append(x)
            if call.ids and not (1 <= min(call.ids) and max(call.ids) <= INT64_MAX):
                found.out_of_range.extend(x for x in call.ids if not 1 <= x <= INT64_MAX)
            for db, low, high in wasted:
                if call.ids and call.ids[0] <= high and call.ids[-1] > low:
                    for x in call.ids:
                        if low < x <= high and x % delta == db:
                            found.reissued_wasted.append(
                                f"{caller.name} got {x}, in the lost-commit segment ({low}, {high}] of db{db}")
        _check_errors(caller, faults, grace, found)
    for bucket in buckets:
        if len(set(bucket)) != len(bucket):
            dups = [x for x, n in Counter(bucket).items() if n > 1]
            found.duplicates += len(dups)
            found.duplicate_examples.extend(dups[:_EXAMPLES - len(found.duplicate_examples)])
    _check_recovery(callers, faults, grace, found)
    return found


def _check_order(caller: CallerLog, kills: dict[str, list[Fault]], found: Findings) -> None:
    previous: Call | None = None
    previous_life: int | None = None
    lives = _lifetimes(kills.get(caller.target or "", []))
    for call in caller.calls:
        if not _increasing(call.ids):
            found.order_violations.append(f"{caller.name}: IDs within one answer not increasing "
                                          f"at t={call.t0:.3f}")
        if caller.kind == "local":
            if previous is not None and previous.ids and call.ids and call.ids[0] <= previous.ids[-1]:
                found.order_violations.append(
                    f"{caller.name}: local generator went from {previous.ids[-1]} to {call.ids[0]}")
            previous = call
        elif caller.kind == "pinned":
            life = next((i for i, (born, died, _) in enumerate(lives)
                         if born <= call.t0 and call.t1 <= died), None)
            if life is None:
                previous = None  # answered around a kill: which process answered is unknown
                continue
            if (previous is not None and previous.ids and call.ids
                    and previous_life == life and call.ids[0] <= previous.ids[-1]):
                found.order_violations.append(
                    f"{caller.name}: server {caller.target} went from {previous.ids[-1]} "
                    f"to {call.ids[0]} within one process lifetime")
            at_kill = lives[life][2]
            if at_kill:
                for x in call.ids:
                    if x <= at_kill[str(x % len(at_kill))]:
                        found.reissued_after_kill.append(
                            f"{caller.name}: restarted {caller.target} handed out {x}, not above "
                            f"db{x % len(at_kill)}'s max_id {at_kill[str(x % len(at_kill))]} at the kill")
                        break
            previous, previous_life = call, life


def _lifetimes(kills: list[Fault]) -> list[tuple[float, float, dict | None]]:
    """(born, died, max_ids at the kill before birth) per process lifetime of one server."""
    lives: list[tuple[float, float, dict | None]] = []
    born, at_kill = float("-inf"), None
    for kill in kills:
        lives.append((born, kill.start, at_kill))
        born, at_kill = kill.end, kill.detail.get("max_ids")
    lives.append((born, float("inf"), at_kill))
    return lives


def _check_errors(caller: CallerLog, faults: list[Fault], grace: float, found: Findings) -> None:
    for error in caller.errors:
        found.errors += 1
        fault = next((f for f in faults if _explains(f, caller, error["type"])
                      and f.start <= error["t1"] and error["t0"] <= f.end + grace), None)
        if fault is None:
            found.unexplained_count += 1
            if len(found.unexplained) < 50:
                found.unexplained.append(f"{caller.name} ({caller.kind}) at t={error['t0']:.3f}: "
                                         f"{error['type']}: {error['message'][:300]}")
            continue
        error["explained_by"] = id(fault)
        found.explained[(fault.kind, error["type"], caller.kind)] += 1
        found.errors_by_fault_kind[fault.kind] += 1


def _check_recovery(callers: list[CallerLog], faults: list[Fault], grace: float,
                    found: Findings) -> None:
    """After each fault that caused errors, every caller that saw one got IDs again."""
    for fault in faults:
        hit, delays = 0, []
        for caller in callers:
            errors = [e for e in caller.errors if e.get("explained_by") == id(fault)]
            if not errors:
                continue
            hit += 1
            last = max(e["t1"] for e in errors)
            after = next((c for c in caller.calls if c.t0 >= last), None)
            if after is None:
                found.not_recovered.append(
                    f"{caller.name} got no ID after the {fault.kind} of {fault.target} ended")
            else:
                delays.append(after.t1 - fault.end)
        if hit:
            found.recovery.append(
                f"{fault.kind} of {fault.target} ({fault.end - fault.start:.1f}s): {hit} caller(s) "
                f"saw errors; all got IDs again at most {max(delays, default=0):.1f}s after it ended")
