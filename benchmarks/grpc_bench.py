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
from collections.abc import Mapping
from typing import Any

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


def measure_rounds(ctx: Context, servers: Mapping[str, Any], count: int, callers: int,
                   security: Mapping[str, dict[str, str] | None] | None = None
                   ) -> tuple[str, dict[str, dict[str, object]], dict[str, list[dict[str, object]]]]:
    """Rounds of ``measure`` against each of ``servers`` in turn (3, or 1 in quick mode):
    the figure's key (calls/s for count=1, else IDs/s), each server's best round, and
    every round. ``security``: per server, what ``measure`` takes."""
    warmup, seconds, rounds = (0.2, 0.6, 1) if ctx.quick else (0.5, 2.0, 3)
    results: dict[str, list[dict[str, object]]] = {side: [] for side in servers}
    for _ in range(rounds):
        for side, server in servers.items():
            results[side].append(measure(ctx, server.address, server.proc.pid, count, callers,
                                         warmup, seconds, security=(security or {}).get(side)))
    key = "calls_per_s" if count == 1 else "ids_per_s"
    best = {side: max(rs, key=lambda r: r[key]) for side, rs in results.items()}  # type: ignore[arg-type,return-value]
    return key, best, results


def measure(ctx: Context, address: str, pid: int, count: int, callers: int,
            warmup: float, seconds: float, clients: int = 1,
            security: dict[str, str] | None = None) -> dict[str, object]:
    """One window of load from ``clients`` worker processes sharing ``callers`` calls in
    flight: calls/s, IDs/s, latencies, and the CPU (in cores) each side used in the window.
    ``security``: ``ca_file`` (TLS) and ``token`` for the worker (``benchmarks.worker``)."""
    shares = [callers // clients + (1 if i < callers % clients else 0) for i in range(clients)]
    shares = [s for s in shares if s]
    start_at = time.time() + 0.3
    command = {"op": "load", "target": address, "biz": BIZ_BENCH, "count": count,
               "warmup": warmup, "seconds": seconds, "start_at": start_at, **(security or {})}
    workers = ctx.pool.get(len(shares))
    for worker, share in zip(workers, shares):
        worker.send({**command, "callers": share})
    # The server's CPU over the measured window, read from /proc at its edges.
    time.sleep(max(0.0, start_at + warmup - time.time()))
    cpu_server = _cpu_seconds(pid)
    time.sleep(max(0.0, start_at + warmup + seconds - time.time()))
    cpu_server = _cpu_seconds(pid) - cpu_server
    answers = [w.receive(timeout=warmup + seconds + 60) for w in workers]
    lat_us = [x / 1000 for a in answers for x in a["latencies_ns"]]  # type: ignore[attr-defined]
    return {
        "calls_per_s": sum(a["calls"] for a in answers) / seconds,  # type: ignore[misc]
        "ids_per_s": sum(a["ids"] for a in answers) / seconds,  # type: ignore[misc]
        "short_replies": sum(a["short"] for a in answers),  # type: ignore[misc]
        "latency_us": percentiles(lat_us),
        "server_cpu": cpu_server / seconds,
        "client_cpu": sum(a["cpu"] for a in answers),  # type: ignore[misc]
        "clients": len(shares),
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
        idgen = ctx.server("idgen")
        from idgen_client.remote import RemoteClient

        with RemoteClient(idgen.address) as client:
            id_base = client.next_id(BIZ_BENCH)  # the floor's replies carry IDs this large
        servers = {"null": ctx.server("null", id_base=id_base), "idgen": idgen}
    except Exception as exc:
        ctx.run.skip(2, f"a benchmark server did not start: {exc}")
        ctx.run.finish(2)
        return
    for (count, callers), row in rows.items():
        try:
            key, best, results = measure_rounds(ctx, servers, count, callers)
        except Exception as exc:
            row.skipped = f"the load generator failed: {exc}"
            progress(f"  {row.figure}: skipped: {row.skipped}")
            continue
        row.idgen = best["idgen"][key]  # type: ignore[assignment]
        row.baseline = best["null"][key]  # type: ignore[assignment]
        row.details = {"best": best, "rounds": results}
        lat: dict[str, dict[str, float]] = {
            mode: best[mode]["latency_us"] for mode in best}  # type: ignore[misc]
        row.note = ("p50/p99/p99.9 µs " + "/".join(f"{v:.0f}" for v in lat["idgen"].values())
                    + " (floor " + "/".join(f"{v:.0f}" for v in lat["null"].values()) + ")")
        if count == 1:
            row.met = row.ratio is not None and row.ratio >= 0.7
        elif callers == 16:
            row.met = row.idgen is not None and row.idgen >= 1_000_000
        progress(f"  {row.figure}: {row.idgen:,.0f} vs {row.baseline:,.0f} {row.unit}")
    ctx.run.finish(2)
