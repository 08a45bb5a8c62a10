"""Scenario 8: the asyncio clients' cost in the steady state.

Every candidate is a coroutine function awaited by the same loop (``_rate``), which
also yields to the event loop once every ``_YIELD_EVERY`` awaits, as any application
does (without it the generator's fetch tasks would never run and callers would wait):

- ``AsyncLocalGenerator.next_id`` (fed by the benchmark server over ``NextSegment``)
  against a trivial coroutine returning ``next()`` of an ``itertools.count``: the least
  any awaited ID source costs. Target: at least 0.5x.
- ``AsyncSequencer.stamp(group)`` over 1,000 groups, every group stamped once first (the
  steady state), against the same trivial coroutine taking a group; and, for scale, the
  synchronous ``Sequencer.stamp`` on the same ID stream, called by the same loop without
  awaiting.

Each figure is the best of 3 rounds, alternating with its baseline.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from itertools import repeat

from benchmarks.harness import BIZ_BENCH, Context, Row, progress

GROUPS = 1_000
_YIELD_EVERY = 1_000


async def _rate(fn: Callable[..., Awaitable[object]], args: list[str] | None, n: int) -> float:
    """Awaits per second of ``fn()`` (or ``fn(arg)`` for each of ``args``), ``n`` of them."""
    rounds = n // _YIELD_EVERY
    start = time.perf_counter()
    if args is None:
        for _ in repeat(None, rounds):
            for _ in repeat(None, _YIELD_EVERY):
                await fn()
            await asyncio.sleep(0)
    else:
        for r in range(rounds):
            for arg in args[r * _YIELD_EVERY:(r + 1) * _YIELD_EVERY]:
                await fn(arg)
            await asyncio.sleep(0)
    return rounds * _YIELD_EVERY / (time.perf_counter() - start)


def _counter() -> tuple[Callable[[], Awaitable[int]], Callable[[str], Awaitable[int]]]:
    count = itertools.count(1)

    async def next_value() -> int:
        return next(count)

    async def next_for(group: str) -> int:
        return next(count)

    return next_value, next_for


async def _measure(ctx: Context, rows: dict[str, Row]) -> None:
    from idgen_client.aio import AsyncLocalGenerator, AsyncSequencer
    from idgen_client.local import LocalGenerator
    from idgen_client.sequencer import Sequencer

    n = 200_000 if ctx.quick else 2_000_000
    address = ctx.server("idgen").address
    next_value, next_for = _counter()
    rng = random.Random(8)
    names = [f"group-{i}" for i in range(GROUPS)]
    drawn = [names[rng.randrange(GROUPS)] for _ in range(n)]

    async with AsyncLocalGenerator(BIZ_BENCH, address) as gen:
        await _rate(gen.next_id, None, 100_000)  # warm up: segments grow to their size
        best = base = 0.0
        for _ in range(3):
            best = max(best, await _rate(gen.next_id, None, n))
            base = max(base, await _rate(next_value, None, n))
        row = rows["ids"]
        row.idgen, row.baseline = best, base
        row.met = best / base >= 0.5
        row.details = {"ids": n, "waits": gen.waits, "fetches": gen.fetches,
                       "yield_every": _YIELD_EVERY}
        progress(f"  {row.figure}: {best:,.0f} vs {base:,.0f} /s ({best / base:.2f}x)")

        async with AsyncSequencer(gen) as sequencer:
            await _rate(sequencer.stamp, names, GROUPS)  # every group once
            stamped = base = 0.0
            for _ in range(3):
                stamped = max(stamped, await _rate(sequencer.stamp, drawn, n))
                base = max(base, await _rate(next_for, drawn, n))
        row = rows["stamps"]
        row.idgen, row.baseline = stamped, base
        row.details = {"stamps": n, "groups": GROUPS}
        progress(f"  {row.figure}: {stamped:,.0f} vs {base:,.0f} /s ({stamped / base:.2f}x)")

    with LocalGenerator(BIZ_BENCH, address) as sync_gen:
        sync = Sequencer(sync_gen).stamp
        for name in names:
            sync(name)
        start = time.perf_counter()
        for group in drawn:
            sync(group)
        sync_rate = n / (time.perf_counter() - start)
    row = rows["stamps_vs_sync"]
    row.idgen, row.baseline = stamped, sync_rate
    row.details = {"stamps": n, "groups": GROUPS}
    progress(f"  {row.figure}: {stamped:,.0f} vs {sync_rate:,.0f} /s ({stamped / sync_rate:.2f}x)")


def run(ctx: Context) -> None:
    rows = {
        "ids": ctx.run.declare(Row(
            key="aio.next_id", scenario=8, figure="await AsyncLocalGenerator.next_id()",
            unit="IDs/s", baseline_name="a coroutine returning next(itertools.count)",
            target=">= 0.5x")),
        "stamps": ctx.run.declare(Row(
            key="aio.stamp", scenario=8,
            figure=f"await AsyncSequencer.stamp(group), {GROUPS:,} groups", unit="stamps/s",
            baseline_name="a coroutine returning next(itertools.count)")),
        "stamps_vs_sync": ctx.run.declare(Row(
            key="aio.stamp.sync", scenario=8,
            figure=f"await AsyncSequencer.stamp(group), {GROUPS:,} groups", unit="stamps/s",
            baseline_name="Sequencer.stamp(group), synchronous, same loop")),
    }
    ctx.run.start(8, "asyncio clients, steady state")
    try:
        asyncio.run(_measure(ctx, rows))
    except Exception as exc:  # a server that did not start, a package missing
        ctx.run.skip(8, f"{type(exc).__name__}: {exc}", only_missing=True)
    ctx.run.finish(8)
