"""idgen's benchmarks: ``python -m benchmarks.run [--quick] [--json PATH] [--chart PNG] [--mariadb URL]``.

Also ``--markdown PATH`` (the table for RESULTS.md) and ``--only N`` (one scenario).

Runs the benchmark scenarios, shows progress on stderr, and
prints one table at the end: each figure of idgen next to a baseline measured
in the same run, and their ratio. ``--quick`` shortens every window (a CI smoke
run: the figures are then rough). MariaDB defaults to ``IDGEN_BENCH_MARIADB`` or
``mysql+pymysql://root@127.0.0.1:3306/test``; a fresh database is made on that
server for the run and dropped afterwards. ``--mariadb none`` skips MariaDB.
A scenario that cannot run is reported skipped, with the reason.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence

from benchmarks import (
    aio_bench,
    allocation,
    grpc_bench,
    http_bench,
    inprocess,
    metrics_bench,
    naive,
    report,
    secure_bench,
    sequencer_figures,
)
from benchmarks.harness import (
    BIZ_SWITCH,
    SWITCH_STEP,
    Context,
    Run,
    progress,
    register_bench,
)
from benchmarks.processes import WorkerPool

DEFAULT_MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"
_ALLOC_STEP = 1000

# Scenario number -> runner, in the order they run (4 reuses figures of 1 and 2).
SCENARIOS: dict[int, Callable[[Context], None]] = {
    1: inprocess.run,
    2: grpc_bench.run,
    4: naive.run,
    3: allocation.run,
    5: sequencer_figures.run,
    6: secure_bench.run,
    7: metrics_bench.run,
    8: aio_bench.run,
    9: http_bench.run,
}


def _prepare(url: str) -> None:
    register_bench(url, (BIZ_SWITCH, SWITCH_STEP),
                   *((allocation.biz_for(n), _ALLOC_STEP) for n in allocation.ALLOCATORS))


class _MariaDB:
    """A fresh database on the MariaDB server for this run, dropped at the end."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        from idgen_server.urls import normalize_url

        url = normalize_url(url)
        self._conn = naive.connect(url, database=False)
        u = make_url(url)
        self.name = f"idgen_bench_{uuid.uuid4().hex[:10]}"
        with self._conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.name}`")
        self.url = u.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self._conn.close()


def _load() -> str:
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="idgen's benchmarks: every figure against a baseline from the same run.")
    parser.add_argument("--quick", action="store_true",
                        help="short windows, for CI smoke runs (figures are rough)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--chart", metavar="PNG", help="draw the ratios as a PNG (needs matplotlib)")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown here")
    parser.add_argument("--mariadb", metavar="URL",
                        default=os.environ.get("IDGEN_BENCH_MARIADB", DEFAULT_MARIADB),
                        help="MariaDB server to use ('none' to skip; default %(default)s)")
    parser.add_argument("--only", metavar="N", type=int, action="append",
                        choices=sorted(SCENARIOS), help="run only scenario N (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.time()
    run = Run(quick=args.quick)
    progress(f"idgen benchmarks ({'quick' if args.quick else 'full'} run), {_load()}")
    with tempfile.TemporaryDirectory(prefix="idgen-bench-") as tmp:
        sqlite_url = f"sqlite:///{tmp}/bench.db"
        _prepare(sqlite_url)
        maria: _MariaDB | None = None
        reason = ""
        if args.mariadb.lower() == "none":
            reason = "MariaDB disabled with --mariadb none"
        else:
            try:
                maria = _MariaDB(args.mariadb)
                _prepare(maria.url)
            except Exception as exc:
                reason = (f"MariaDB at {args.mariadb.split('@')[-1]} is not usable "
                          f"({type(exc).__name__}: {exc}); pass --mariadb URL")
                if maria is not None:
                    maria.drop()
                    maria = None
        if reason:
            progress(f"MariaDB scenarios will be skipped: {reason}")
        ctx = Context(run=run, pool=WorkerPool(), sqlite_url=sqlite_url,
                      mariadb_url=maria.url if maria else None, mariadb_reason=reason,
                      tmp_dir=tmp)
        try:
            for number, scenario in SCENARIOS.items():
                if args.only and number not in args.only:
                    continue
                try:
                    scenario(ctx)
                except Exception as exc:  # one broken scenario must not hide the others
                    progress(f"scenario {number} failed: {type(exc).__name__}: {exc}")
                    if number not in run.scenarios:
                        run.scenarios[number] = {"title": "", "status": "running"}
                    run.skip(number, f"the scenario failed: {type(exc).__name__}: {exc}",
                             only_missing=True)
                    run.finish(number)
        finally:
            server_stats = ctx.close()
            if maria is not None:
                maria.drop()
    rows = sorted(run.rows.values(), key=lambda r: r.scenario)
    print(report.table(rows))
    extra: dict[str, object] = {
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": report.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        # Per benchmark server and biz type: segments fetched, and calls that had to wait.
        "server_buffers": server_stats,
    }
    if args.chart:
        why_not = report.chart(rows, args.chart)
        extra["chart"] = args.chart if why_not is None else {"skipped": why_not}
        progress(f"chart: {args.chart}" if why_not is None else f"chart skipped: {why_not}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(rows) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json(run, extra))
        progress(f"JSON: {args.json}")
    progress(f"done in {time.time() - started:.0f}s, {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
