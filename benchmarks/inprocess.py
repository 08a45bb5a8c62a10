"""Scenario 1: the local generator's ``next_id()`` against other in-process generators.

Every candidate is a zero-argument callable timed by the same loop
(``harness.rate_loop``): ``LocalGenerator.next_id`` (a bound method, fed by a
real server process over ``NextSegment``), ``itertools.count().__next__`` (what
``next(counter)`` calls: the floor of any Python ID generator), ``uuid.uuid4``,
``uuid_utils.uuid7`` and ``snowflake.SnowflakeGenerator(1).__next__``.
"""
from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable

from benchmarks.harness import (
    BIZ_BENCH,
    BIZ_SWITCH,
    SWITCH_STEP,
    SWITCH_STEPS,
    CallTimes,
    Context,
    Row,
    best_rate,
    progress,
    threaded_rate,
    time_each_call,
)
from idgen_core.buffer import DEFAULT_PRELOAD_AT

THREADS = 8
WORST_CALL_LIMIT = 100e-6


def _others() -> dict[str, tuple[Callable[[], object] | None, str]]:
    """The competitors: name -> (callable, or None and why not)."""
    out: dict[str, tuple[Callable[[], object] | None, str]] = {
        "itertools.count": (itertools.count().__next__, ""),
        "uuid4": (uuid.uuid4, ""),
    }
    try:
        import uuid_utils

        out["uuid7"] = (uuid_utils.uuid7, "")
    except ImportError as exc:
        out["uuid7"] = (None, f"uuid-utils is not installed ({exc}); pip install 'idgen[bench]'")
    try:
        from snowflake import SnowflakeGenerator

        out["snowflake-id"] = (SnowflakeGenerator(1).__next__, "")
    except ImportError as exc:
        out["snowflake-id"] = (None, f"snowflake-id is not installed ({exc}); "
                                     "pip install 'idgen[bench]'")
    return out


_TARGETS_1T = {"itertools.count": "≥ 0.5", "uuid4": "> 1", "uuid7": "> 1", "snowflake-id": "> 1"}
_CALLS = {"itertools.count": "itertools.count().__next__", "uuid4": "uuid.uuid4",
          "uuid7": "uuid_utils.uuid7", "snowflake-id": "SnowflakeGenerator(1).__next__"}


def run(ctx: Context) -> None:
    run_ = ctx.run
    others = _others()
    rows: dict[tuple[int, str], Row] = {}
    for threads in (1, THREADS):
        for name in others:
            note = ""
            if name == "snowflake-id" and threads > 1:
                note = "snowflake-id's generator is not thread-safe (called unsynchronised)"
            rows[threads, name] = run_.declare(Row(
                key=f"inproc.{threads}t.{name}", scenario=1,
                figure=f"next_id(), {threads} thread{'s' if threads > 1 else ''}, vs {name}",
                unit="calls/s", baseline_name=_CALLS[name],
                target=_TARGETS_1T[name] if threads == 1 else "", note=note))
    worst = run_.declare(Row(
        key="inproc.worst_call_across_switches", scenario=1,
        figure="worst single next_id() across segment switches", unit="µs",
        baseline_name="worst single itertools.count().__next__ over as many calls",
        target="< 100 µs"))
    run_.start(1, "in-process next_id() vs itertools.count, uuid4, uuid7, snowflake-id")
    for (_, name), row in rows.items():
        if others[name][0] is None:
            row.skipped = others[name][1]

    from idgen_client.local import LocalGenerator

    address = ctx.server("idgen").address
    n = 300_000 if ctx.quick else 3_000_000
    rounds = 2 if ctx.quick else 5
    with LocalGenerator(BIZ_BENCH, address) as gen:
        gen.next_id()  # the first segment: this caller waits for it, once
        for threads in (1, THREADS):
            # Interleaved, so that drift in the machine's load hits every candidate alike.
            rates: dict[str, list[float]] = {name: [] for name in ["idgen", *others]}
            for _ in range(rounds if threads == 1 else max(1, rounds // 2)):
                for name, (fn, _why) in [("idgen", (gen.next_id, ""))] + list(others.items()):
                    if fn is None:
                        continue
                    if threads == 1:
                        rates[name].append(best_rate(fn, n, 1))
                    else:
                        rates[name].append(threaded_rate(fn, threads, n // threads))
            idgen = max(rates["idgen"])
            for name in others:
                row = rows[threads, name]
                if rates[name]:
                    row.idgen, row.baseline = idgen, max(rates[name])
                    row.details = {"idgen_rounds": rates["idgen"], "baseline_rounds": rates[name]}
                    if row.target:  # one thread: >= 0.5x the floor, ahead of the others
                        ratio = idgen / max(rates[name])
                        row.met = ratio >= 0.5 if name == "itertools.count" else ratio > 1.0
            progress(f"  next_id() on {threads} thread(s): {idgen:,.0f} calls/s")

    # The double buffer's point: a caller should never notice a segment switch. The
    # local generator sizes its segments to last about a second (AdaptiveSteps), which
    # would make 100 switches take minutes; so this figure uses the same DoubleBuffer
    # fed by the same NextSegment RPC, with a fixed segment of SWITCH_STEPS steps.
    from idgen_client.remote import RemoteClient
    from idgen_core.buffer import DoubleBuffer

    with RemoteClient(address) as client, DoubleBuffer(
            lambda floor: client.next_segment(BIZ_SWITCH, floor, SWITCH_STEPS),
            name="bench-switch") as gen:
        gen.next_id()
        size = SWITCH_STEP * SWITCH_STEPS
        progress(f"  worst single call across 100+ segment switches ({size:,} IDs each)")
        before, waits_before = gen.fetches, gen.waits
        times = CallTimes()
        while gen.fetches - before < 101 and times.calls < size * 300:
            times.merge(time_each_call(gen.next_id, size * 10))
        done, waits = gen.fetches - before, gen.waits - waits_before
        base = time_each_call(itertools.count().__next__, times.calls)
        # Which slow calls were the switches themselves: segments are (k*size, (k+1)*size],
        # so an ID's offset says whether its call installed the next segment (offset 0)
        # or crossed the preload threshold and started the next fetch (offset cut).
        cut = int(size * DEFAULT_PRELOAD_AT)
        at = {"install": 0, "preload": 0}
        for result, ns in times.slow_calls:
            offset = (int(result) - 1) % size  # type: ignore[call-overload]
            kind = "install" if offset == 0 else "preload" if offset == cut else None
            if kind:
                at[kind] = max(at[kind], ns)
        worst.idgen, worst.baseline = times.worst_ns / 1e3, base.worst_ns / 1e3
        worst.met = times.worst_ns < WORST_CALL_LIMIT * 1e9
        worst.note = (f"{done} switches, {waits} waits; calls over 100 µs: {times.slow} "
                      f"(baseline {base.slow}) of {times.calls:,}; worst switch call over "
                      f"100 µs: install {at['install'] / 1e3:,.0f} µs, preload start "
                      f"{at['preload'] / 1e3:,.0f} µs (0: none)")
        worst.details = {"switches": done, "calls": times.calls, "segment_ids": size,
                         "waits": waits, "idgen_top5_ns": times.top5_ns,
                         "baseline_top5_ns": base.top5_ns, "idgen_calls_over_100us": times.slow,
                         "baseline_calls_over_100us": base.slow,
                         "worst_install_call_ns": at["install"],
                         "worst_preload_start_call_ns": at["preload"]}
    run_.finish(1)
