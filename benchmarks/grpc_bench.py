"""Scenario 2: ``NextId`` over gRPC against a do-nothing servicer on the same server.

Both servers (``benchmarks.server``: idgen's, and the same ``IdGenServer`` whose
``NextId`` returns a prebuilt reply of ``count`` IDs) run in their own
processes; the load comes from a third process (``benchmarks.worker``, grpc.aio,
``callers`` calls in flight). The machine has 2 cores: one for the server, one
for the load, so one load process, not more; a second one only takes CPU from
the server (measured: no gain). The CPU each side used is recorded, so a reader
can see which one was the bottleneck. Rounds alternate idgen and the floor, and
the best round of each counts, so that drift in the machine's load hits both.
"""
from __future__ import annotations

import os
import time

from benchmarks.harness import BIZ_BENCH, Context, Row, percentiles, progress

COUNTS = (1, 1000)
CALLERS = (1, 16, 64)
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except OSError:
        return 0.0


def measure(ctx: Context, address: str, pid: int, count: int, callers: int,
            warmup: float, seconds: float) -> dict[str, object]:
    """One window of load from one worker process; calls/s, IDs/s, latencies, CPU."""
    (worker,) = ctx.pool.get(1)
    start_at = time.time() + 0.2
    cpu_server = _cpu_seconds(pid)
    cpu_client = _cpu_seconds(worker.proc.pid)
    worker.send({"op": "load", "target": address, "biz": BIZ_BENCH, "count": count,
                 "callers": callers, "warmup": warmup, "seconds": seconds,
                 "start_at": start_at})
    answer = worker.receive(timeout=warmup + seconds + 60)
    busy = warmup + seconds + 0.2
    lat_us = [x / 1000 for x in answer["latencies_ns"]]  # type: ignore[union-attr]
    return {
        "calls_per_s": answer["calls"] / seconds,  # type: ignore[operator]
        "ids_per_s": answer["ids"] / seconds,  # type: ignore[operator]
        "short_replies": answer["short"],
        "latency_us": percentiles(lat_us),
        # Approximate (they include the warm-up and set-up): which side was saturated.
        "server_cpu": (_cpu_seconds(pid) - cpu_server) / busy,
        "client_cpu": (_cpu_seconds(worker.proc.pid) - cpu_client) / busy,
    }


def run(ctx: Context) -> None:
    rows: dict[tuple[int, int], Row] = {}
    for count in COUNTS:
        for callers in CALLERS:
            unit = "calls/s" if count == 1 else "IDs/s"
            target = ""
            if count == 1:
                target = "≥ 0.7"
            elif callers == 16:
                target = "≥ 1,000,000 IDs/s"
            rows[count, callers] = ctx.run.declare(Row(
                key=f"grpc.count{count}.callers{callers}", scenario=2,
                figure=f"NextId count={count}, {callers} caller{'s' if callers > 1 else ''}",
                unit=unit, baseline_name="do-nothing servicer, same server", target=target))
    ctx.run.start(2, "gRPC NextId vs a do-nothing servicer")
    try:
        servers = {mode: ctx.server(mode) for mode in ("null", "idgen")}
    except Exception as exc:
        ctx.run.skip(2, f"a benchmark server did not start: {exc}")
        ctx.run.finish(2)
        return
    warmup, seconds, rounds = (0.2, 0.6, 1) if ctx.quick else (0.5, 2.0, 3)
    for (count, callers), row in rows.items():
        results: dict[str, list[dict[str, object]]] = {"null": [], "idgen": []}
        try:
            for _ in range(rounds):
                for mode, server in servers.items():
                    results[mode].append(measure(ctx, server.address, server.proc.pid, count,
                                                 callers, warmup, seconds))
        except Exception as exc:
            row.skipped = f"the load generator failed: {exc}"
            progress(f"  {row.figure}: skipped: {row.skipped}")
            continue
        key = "calls_per_s" if count == 1 else "ids_per_s"
        best = {mode: max(rs, key=lambda r: r[key]) for mode, rs in results.items()}  # type: ignore[arg-type,return-value]
        row.idgen = best["idgen"][key]  # type: ignore[assignment]
        row.baseline = best["null"][key]  # type: ignore[assignment]
        row.details = {"best": best, "rounds": results}
        lat_i, lat_n = best["idgen"]["latency_us"], best["null"]["latency_us"]
        fmt = "/".join
        row.note = ("p50/p99/p99.9 µs " + fmt(f"{v:.0f}" for v in lat_i.values())  # type: ignore[union-attr]
                    + " (floor " + fmt(f"{v:.0f}" for v in lat_n.values()) + ")")  # type: ignore[union-attr]
        if count == 1:
            row.met = row.ratio is not None and row.ratio >= 0.7
        elif callers == 16:
            row.met = row.idgen is not None and row.idgen >= 1_000_000
        progress(f"  {row.figure}: {row.idgen:,.0f} vs {row.baseline:,.0f} {row.unit}")
    ctx.run.finish(2)
