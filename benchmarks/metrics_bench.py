"""Scenario 7: ``NextId`` with metrics on against the same server with metrics off.

Three ``idgen serve`` processes of the same build, each on its own fresh SQLite database
prepared alike (biz type ``bench``, step 1,000,000): *on* serves metrics (``--metrics-port
0``: every ``IdGenerator`` call is counted and timed, ``idgen_server.stats``), *off* and
*off2* do not (nothing is recorded). Quotas are on, out of reach, in all three. The load is
scenario 2's (``grpc_bench.measure``: one ``benchmarks.worker`` process, grpc.aio,
``callers`` calls in flight), in 8 rounds of 2 s (1 of 0.6 s in quick mode); each round
measures the three servers one after the other, in an order rotated from round to round
(so that none always follows another). The figures are the best round of each, as in every
scenario; off2 ÷ off, two identical servers measured in the same rounds, is the noise. The
verdict is on the rounds' own ratios: the median over rounds of on ÷ off within each round
(``_paired``), which one lucky or unlucky round moves less, and in which what the machine
does to all three servers at once cancels out; it must be at least 0.95, or within the
noise (``_met``). On this shared 2-core machine single rounds of one server stray ±10%, so
fewer rounds gave verdicts that flipped from run to run.

While the scenario runs, a thread scrapes *on*'s ``/metrics`` every second (Prometheus
scrapes every 15-60 s), so that the scrapes' cost is in its figures; afterwards the
scraped counts must have followed the load (``_check_counts``), so that the figure is
that of a server that really counts.

``LocalGenerator.next_id`` against each of the three, for completeness: it calls a server
only for segments, so the metrics should not show in it (off2's generator gives its noise).

It is scenario 7 of ``benchmarks.run`` (``--only 7`` runs it alone), and can also be run by
itself with ``python -m benchmarks.metrics_bench [--quick] [--json PATH] [--markdown PATH]``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence

from benchmarks import report
from benchmarks.grpc_bench import measure
from benchmarks.harness import BIZ_BENCH, Context, Row, Run, best_rate, progress, register_bench
from benchmarks.processes import ServerProcess, WorkerPool

SCENARIO = 7
COUNTS = (1, 1000)
CALLERS = (1, 16)
QUICK_CALLERS = (16,)
ROUNDS = 8
TARGET = 0.95
"""Least acceptable median of the rounds' on ÷ off, or less if the noise (off2 ÷ off) strays
further from 1 in the same run: no drop beyond 5% or beyond the noise, whichever is larger."""
TARGET_TEXT = f"median ratio of rounds ≥ {TARGET} or within the noise"
_METRICS_LINE = re.compile(r"metrics on http://(\S+)/metrics")


def _serve(url: str, metrics: bool) -> ServerProcess:
    """``idgen serve`` on ``url``, on a free loopback port, with metrics on a free port or none."""
    args = ["idgen_cli", "serve", "--db", url, "--listen", "127.0.0.1:0", "--drain", "0",
            "--quota-calls", "1e9", "--quota-ids", "1e12"]  # on, but out of the load's reach
    if metrics:
        args += ["--metrics-port", "0"]
    return ServerProcess(args, ready=r"idgen: serving on (\S+)", stops_on_eof=False)


def _metrics_address(server: ServerProcess) -> str | None:
    for line in server.output:
        match = _METRICS_LINE.search(line)
        if match:
            return match.group(1)
    return None


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        return reply.read().decode()  # type: ignore[no-any-return]


class _Scraper:
    """Scrapes ``/metrics`` every ``interval`` seconds in a thread, until ``close()``."""

    def __init__(self, address: str, interval: float = 1.0) -> None:
        self.address = address
        self.scrapes = 0
        self.failures = 0
        self.seconds: list[float] = []
        """How long each scrape took, as the scraper saw it."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,),
                                        name="bench-metrics-scraper", daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                start = time.perf_counter()
                _scrape(self.address)
                self.seconds.append(time.perf_counter() - start)
                self.scrapes += 1
            except OSError:
                self.failures += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _handled_ok(text: str) -> float:
    """``grpc_server_handled_total`` of NextId with code OK in a scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "grpc_server_handled_total"
                    and sample.labels.get("grpc_method") == "NextId"
                    and sample.labels.get("grpc_code") == "OK"):
                return float(sample.value)
    return 0.0


def _check_counts(address: str, before: float, calls_at_least: float) -> float:
    """NextId calls the server counted since ``before``; RuntimeError if fewer than the load's."""
    counted = _handled_ok(_scrape(address)) - before
    if counted < calls_at_least:
        raise RuntimeError(f"the metrics server counted {counted:,.0f} NextId calls, fewer than "
                           f"the {calls_at_least:,.0f} of its measured windows")
    return counted


def _paired(rates: dict[str, list[float]]) -> dict[str, float]:
    """The median over rounds of each side's figure divided by off's in the same round.

    A round measures the three servers back to back, so what the machine does to all of
    them at once (measured: rounds of the local generator at 9-10 M calls/s on every side,
    then rounds at 15 M on every side) cancels out in the round's ratios, where it would
    decide a median of the raw figures."""
    return {side: statistics.median(r / o for r, o in zip(rs, rates["off"], strict=True))
            for side, rs in rates.items()}


def _met(ratios: dict[str, float]) -> bool:
    """Whether on ÷ off (``_paired``) shows no drop beyond 5% or beyond the noise's
    (off2 ÷ off) distance from 1."""
    spread = abs(1 - ratios["off2"])
    return ratios["on"] >= min(TARGET, 1 - spread)


def _num(result: dict[str, object], key: str) -> float:
    """A figure of a ``measure`` result, as a float."""
    value = result[key]
    assert isinstance(value, (int, float)), (key, value)
    return float(value)


def _rounds(ctx: Context, servers: dict[str, ServerProcess], count: int, callers: int
            ) -> tuple[str, dict[str, dict[str, object]], dict[str, list[dict[str, object]]]]:
    """Rounds of ``measure`` over every server, in an order rotated each round: the
    figure's key (calls/s for count=1, else IDs/s), each server's best round, every round."""
    warmup, seconds, rounds = (0.2, 0.6, 1) if ctx.quick else (0.5, 2.0, ROUNDS)
    sides = list(servers)
    results: dict[str, list[dict[str, object]]] = {side: [] for side in sides}
    for r in range(rounds):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            server = servers[side]
            results[side].append(measure(ctx, server.address, server.proc.pid, count, callers,
                                         warmup, seconds))
    key = "calls_per_s" if count == 1 else "ids_per_s"
    best = {side: max(rs, key=lambda r: r[key]) for side, rs in results.items()}  # type: ignore[arg-type,return-value]
    return key, best, results


def _local(ctx: Context, servers: dict[str, ServerProcess], row: Row, noise: Row) -> None:
    """``LocalGenerator.next_id`` against each server, rounds interleaved."""
    from idgen_client.local import LocalGenerator

    n, rounds = (300_000, 2) if ctx.quick else (3_000_000, ROUNDS)
    rates: dict[str, list[float]] = {side: [] for side in servers}
    with contextlib.ExitStack() as stack:
        generators = {side: stack.enter_context(LocalGenerator(BIZ_BENCH, server.address))
                      for side, server in servers.items()}
        for gen in generators.values():
            gen.next_id()  # the first segment: this caller waits for it, once
        for _ in range(rounds):
            for side, gen in generators.items():
                rates[side].append(best_rate(gen.next_id, n, 1))
    best = {side: max(rs) for side, rs in rates.items()}
    ratios = _paired(rates)
    row.idgen, row.baseline = best["on"], best["off"]
    noise.idgen, noise.baseline = best["off2"], best["off"]
    row.details = noise.details = {"rounds": rates, "paired_medians": ratios}
    row.met = _met(ratios)
    row.note = (f"median of rounds' ratios {ratios['on']:.3f}× "
                f"(noise: off2 {ratios['off2']:.3f}×)")
    progress(f"  {row.figure}: {row.idgen:,.0f} vs {row.baseline:,.0f} {row.unit} "
             f"({row.ratio:.3f}×; noise {noise.ratio:.3f}×)")


def run(ctx: Context) -> None:
    callers_list = QUICK_CALLERS if ctx.quick else CALLERS
    rows: dict[tuple[int, int], tuple[Row, Row]] = {}
    for count in COUNTS:
        for callers in callers_list:
            unit = "calls/s" if count == 1 else "IDs/s"
            what = f"NextId count={count}, {callers} caller{'s' if callers > 1 else ''}"
            rows[count, callers] = (
                ctx.run.declare(Row(
                    key=f"metrics.count{count}.callers{callers}", scenario=SCENARIO,
                    figure=f"{what}, metrics on", unit=unit,
                    baseline_name="same idgen server, metrics off", target=TARGET_TEXT)),
                ctx.run.declare(Row(
                    key=f"metrics.noise.count{count}.callers{callers}", scenario=SCENARIO,
                    figure=f"{what}, metrics off (second server: the noise)", unit=unit,
                    baseline_name="same idgen server, metrics off")))
    local = ctx.run.declare(Row(
        key="metrics.local.next_id", scenario=SCENARIO,
        figure="LocalGenerator.next_id(), server with metrics on", unit="calls/s",
        baseline_name="same, server with metrics off", target=TARGET_TEXT))
    local_noise = ctx.run.declare(Row(
        key="metrics.noise.local.next_id", scenario=SCENARIO,
        figure="LocalGenerator.next_id(), second server with metrics off (the noise)",
        unit="calls/s", baseline_name="same, server with metrics off"))
    ctx.run.start(SCENARIO, "gRPC NextId with metrics on vs off")
    directory = tempfile.mkdtemp(prefix="metrics-", dir=ctx.tmp_dir or None)
    try:
        servers: dict[str, ServerProcess] = {}
        for side in ("off", "on", "off2"):
            url = f"sqlite:///{directory}/{side}.db"
            register_bench(url)
            servers[side] = ctx.add_server(f"metrics:{side}", _serve(url, metrics=side == "on"))
        address = _metrics_address(servers["on"])
        if address is None or _metrics_address(servers["off"]) is not None:
            raise RuntimeError("the servers did not start with metrics on and off as asked")
        before = _handled_ok(_scrape(address))
    except Exception as exc:
        ctx.run.skip(SCENARIO, f"the servers could not be set up: {type(exc).__name__}: {exc}")
        ctx.run.finish(SCENARIO)
        return
    scraper = _Scraper(address)
    measured_calls = 0.0
    try:
        for (count, callers), (row, noise) in rows.items():
            try:
                key, best, results = _rounds(ctx, servers, count, callers)
            except Exception as exc:
                row.skipped = noise.skipped = f"the load generator failed: {exc}"
                progress(f"  {row.figure}: skipped: {row.skipped}")
                continue
            window = 0.6 if ctx.quick else 2.0  # _rounds' measured seconds
            measured_calls += sum(_num(r, "calls_per_s") * window for r in results["on"])
            ratios = _paired({side: [_num(r, key) for r in rs] for side, rs in results.items()})
            row.idgen, row.baseline = _num(best["on"], key), _num(best["off"], key)
            noise.idgen, noise.baseline = _num(best["off2"], key), _num(best["off"], key)
            for r in (row, noise):
                r.details = {"best": best, "rounds": results, "paired_medians": ratios}
            row.met = _met(ratios)
            lat = {side: "/".join(f"{v:.0f}" for v in best[side]["latency_us"].values())  # type: ignore[attr-defined]
                   for side in best}
            row.note = (f"median of rounds' ratios {ratios['on']:.3f}× "
                        f"(noise: off2 {ratios['off2']:.3f}×); p50/p99/p99.9 µs "
                        f"{lat['on']} (off {lat['off']}, off2 {lat['off2']})")
            progress(f"  {row.figure}: {row.idgen:,.0f} vs {row.baseline:,.0f} {row.unit} "
                     f"({row.ratio:.3f}×; noise {noise.ratio:.3f}×)")
    finally:
        scraper.close()
    try:
        counted = _check_counts(address, before, measured_calls)
        scrape_ms = statistics.median(scraper.seconds) * 1000 if scraper.seconds else 0.0
        progress(f"  the metrics server counted {counted:,.0f} NextId calls; "
                 f"{scraper.scrapes} scrapes during the load ({scraper.failures} failed), "
                 f"{scrape_ms:.1f} ms each at the median")
        for row, _ in rows.values():
            row.details.update(scrapes=scraper.scrapes, scrape_ms_median=scrape_ms)
    except Exception as exc:
        ctx.run.skip(SCENARIO, f"the metrics did not follow the load: {exc}")
    try:
        _local(ctx, servers, local, local_noise)
    except Exception as exc:
        local.skipped = local_noise.skipped = f"the local generator failed: {type(exc).__name__}: {exc}"
    ctx.run.finish(SCENARIO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_bench",
                                     description="NextId with metrics on vs off, in one run.")
    parser.add_argument("--quick", action="store_true", help="short windows (rough figures)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown here")
    args = parser.parse_args(argv)
    started = time.time()
    run_ = Run(quick=args.quick)
    with tempfile.TemporaryDirectory(prefix="idgen-bench-") as tmp:
        # This scenario makes its own databases; the shared one is not used.
        ctx = Context(run=run_, pool=WorkerPool(), sqlite_url="", mariadb_url=None,
                      mariadb_reason="not used", tmp_dir=tmp)
        try:
            run(ctx)
        finally:
            ctx.close()
    rows = list(run_.rows.values())
    print(report.table(rows))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(rows) + "\n")
    if args.json:
        extra = {"command": "python -m benchmarks.metrics_bench " + " ".join(
                     sys.argv[1:] if argv is None else argv),
                 "machine": report.machine(), "elapsed_s": round(time.time() - started, 1),
                 "load_average": os.getloadavg()}
        with open(args.json, "w") as f:
            f.write(report.to_json(run_, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
