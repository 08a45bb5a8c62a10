"""Scenario 3: segment allocation, 1, 4 and 8 allocators racing on one row.

Each allocator is its own process (``benchmarks.worker``) calling
``SegmentStore.allocate`` in a loop for the same window, on SQLite (a WAL file,
``synchronous=FULL``) and on MariaDB. The figure is segments/s summed over the
allocators; its baseline is one allocator alone on the same database in the
same run, so the ratio says how allocation scales under contention (on 2 cores
it cannot scale far). Conflicts are the optimistic-lock races lost and retried.
"""
from __future__ import annotations

import time

from benchmarks.harness import Context, Row, progress

ALLOCATORS = (1, 4, 8)


def biz_for(n: int) -> str:
    return f"alloc{n}"


def run(ctx: Context) -> None:
    dbs = {"SQLite": ctx.sqlite_url, "MariaDB": ctx.mariadb_url}
    rows: dict[tuple[str, int], Row] = {}
    for db in dbs:
        for n in ALLOCATORS:
            rows[db, n] = ctx.run.declare(Row(
                key=f"alloc.{db.lower()}.{n}", scenario=3,
                figure=f"allocation on {db}, {n} allocator{'s' if n > 1 else ''}",
                unit="segments/s", baseline_name=f"1 allocator on {db}"))
    ctx.run.start(3, "segment allocation: 1/4/8 racing allocator processes")
    seconds = 0.5 if ctx.quick else 3.0
    for db, url in dbs.items():
        if url is None:
            for n in ALLOCATORS:
                rows[db, n].skipped = ctx.mariadb_reason
            progress(f"  {db}: skipped: {ctx.mariadb_reason}")
            continue
        alone: float | None = None
        for n in ALLOCATORS:
            row = rows[db, n]
            start_at = time.time() + 1.0 + 0.1 * n  # time to open n connections
            command = {"op": "allocate", "url": url, "biz": biz_for(n), "seconds": seconds,
                       "start_at": start_at}
            try:
                answers = ctx.pool.run_all([dict(command) for _ in range(n)],
                                           timeout=seconds + 60)
            except Exception as exc:
                row.skipped = f"an allocator process failed: {exc}"
                progress(f"  {row.figure}: skipped: {row.skipped}")
                continue
            segments = sum(int(a["segments"]) for a in answers)  # type: ignore[call-overload]
            conflicts = sum(int(a["conflicts"]) for a in answers)  # type: ignore[call-overload]
            took = max(float(a["seconds"]) for a in answers)  # type: ignore[arg-type]
            rate = segments / took
            if n == 1:
                alone = rate
            row.idgen, row.baseline = rate, alone
            row.note = f"{conflicts} conflicts ({conflicts / max(segments, 1):.2f}/segment)"
            row.details = {"segments": segments, "conflicts": conflicts, "seconds": took,
                           "per_allocator": answers}
            if alone is None:
                row.skipped = "the 1-allocator baseline did not run"
            progress(f"  {row.figure}: {rate:,.0f} segments/s, {conflicts} conflicts")
    ctx.run.finish(3)
