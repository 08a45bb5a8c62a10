"""Scenario 5: the sequencer's stamps/s with 1,000 and 1,000,000 groups.

Runs only when ``idgen_client.sequencer`` is importable in this run; otherwise
its figures are reported skipped, with the import error. ``Sequencer`` is fed
by a ``LocalGenerator`` on the benchmark server, and each stamp is
``sequencer.stamp(group_id)`` for a group drawn uniformly from the set, once
every group has been stamped (the steady state, untimed). The
baseline is the least any sequencer must do, with the same ID stream: a dict of
each group's last seq, one ``next_id()`` per stamp (no deduplication, no
persistence). Both are one-argument callables timed by the same loop.

The lease's cost: the same draws stamped by a ``Sequencer`` under a ``Lease``
held through the benchmark server (renewed in the background, as in
production) against one without, on the same generator, alternating, best
of 3 each: a stamp under a lease adds one read of the lease's term and one
monotonic clock read, and no round trip.
"""
from __future__ import annotations

import importlib
import random
import time
from collections.abc import Callable, Sequence
from itertools import repeat

from benchmarks.harness import BIZ_BENCH, Context, Row, progress

GROUPS = (1_000, 1_000_000)


def _rate(fn: Callable[[str], object], groups: Sequence[str]) -> float:
    start = time.perf_counter()
    for group in groups:
        fn(group)
    return len(groups) / (time.perf_counter() - start)


def floor_stamper(next_id: Callable[[], int]) -> Callable[[str], tuple[int, int]]:
    """The least a sequencer must do per stamp: read the last seq, take an ID, store it."""
    last: dict[str, int] = {}
    get = last.get

    def stamp(group: str) -> tuple[int, int]:
        prev = get(group, 0)
        seq = next_id()
        last[group] = seq
        return seq, prev

    return stamp


def run(ctx: Context) -> None:
    rows = {
        g: ctx.run.declare(Row(
            key=f"sequencer.groups{g}", scenario=5,
            figure=f"Sequencer.stamp(), {g:,} groups", unit="stamps/s",
            baseline_name="dict of last seqs + next_id(), same loop"))
        for g in GROUPS
    }
    leased = {
        g: ctx.run.declare(Row(
            key=f"sequencer.lease.groups{g}", scenario=5,
            figure=f"Sequencer.stamp() under a Lease, {g:,} groups", unit="stamps/s",
            baseline_name="the same Sequencer without a lease, same run", target=">= 0.8x"))
        for g in GROUPS
    }
    ctx.run.start(5, "sequencer stamps/s")
    try:
        module = importlib.import_module("idgen_client.sequencer")
        sequencer_class = module.Sequencer
    except Exception as exc:  # ImportError, or a half-landed module
        ctx.run.skip(5, f"idgen_client.sequencer is not importable yet "
                        f"({type(exc).__name__}: {exc}): the sequencer has not landed")
        ctx.run.finish(5)
        return

    from idgen_client.local import LocalGenerator

    stamps = 200_000 if ctx.quick else 2_000_000
    rng = random.Random(5)
    with LocalGenerator(BIZ_BENCH, ctx.server("idgen").address) as gen:
        gen.next_id()
        for g, row in rows.items():
            names = [f"group-{i}" for i in range(g)]
            drawn = [names[i] for i in (rng.randrange(g) for _ in repeat(None, stamps))]
            try:
                sequencer = sequencer_class(gen)
                stamp = sequencer.stamp
                stamp(drawn[0])
            except Exception as exc:
                row.skipped = (f"Sequencer(generator).stamp(group) failed: "
                               f"{type(exc).__name__}: {exc}")
                progress(f"  {row.figure}: skipped: {row.skipped}")
                continue
            try:
                floor = floor_stamper(gen.next_id)
                for warm in (stamp, floor):  # every group once first: the steady state
                    _rate(warm, names)
                row.idgen = _rate(stamp, drawn)
                row.baseline = _rate(floor, drawn)
                row.details = {"stamps": stamps, "groups_stamped_once_before": g}
            finally:
                close = getattr(sequencer, "close", None)
                if callable(close):
                    close()
            progress(f"  {row.figure}: {row.idgen:,.0f} vs {row.baseline:,.0f} stamps/s")
            _lease_cost(ctx, gen, sequencer_class, leased[g], names, drawn)
    ctx.run.finish(5)


def _lease_cost(ctx: Context, gen: object, sequencer_class: type, row: Row,
                names: Sequence[str], drawn: Sequence[str]) -> None:
    """Stamps/s under a lease against without, alternating, best of 3 each."""
    try:
        from idgen_client.lease import Lease
    except Exception as exc:
        row.skipped = f"idgen_client.lease is not importable ({type(exc).__name__}: {exc})"
        return
    with Lease(BIZ_BENCH, "bench", ctx.server("idgen").address) as lease:
        if not lease.wait(30):
            row.skipped = "the lease was not granted within 30 s"
            return
        free, owned = sequencer_class(gen), sequencer_class(gen, lease=lease)
        for warm in (free.stamp, owned.stamp):
            _rate(warm, names)
        on = off = 0.0
        for _ in range(3):
            off = max(off, _rate(free.stamp, drawn))
            on = max(on, _rate(owned.stamp, drawn))
        row.idgen, row.baseline = on, off
        row.met = on / off >= 0.8
        row.details = {"stamps": len(drawn), "epoch": lease.epoch, "ttl_s": 10.0}
    progress(f"  {row.figure}: {on:,.0f} vs {off:,.0f} stamps/s ({on / off:.2f}x)")
