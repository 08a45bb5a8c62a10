"""Load: many concurrent callers against one server, every ID recorded and checked.

    python -m tests.fault.load [--callers 64] [--duration 60] [--processes 4]

One ``idgen serve`` on a fresh MariaDB database; ``--callers`` callers spread
over ``--processes`` client processes (``tests.fault.worker``, pinned mode),
each calling ``NextId`` for one ID as fast as it can. Reports the server's RSS
once the load has warmed up and at the end, the latency percentiles of the
calls, the throughput, and the errors (there must be none) and duplicates
(there must be none). Exit status 0 only if both are zero.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

from benchmarks.harness import percentiles
from tests.fault.check import check, load_callers
from tests.fault.harness import _Worker
from tests.support.databases import MariaDB
from tests.support.servers import ServerProcess
from tests.support.stores import prepare

__all__ = ["LoadReport", "rss_kib", "run"]

BIZ = "load"


def rss_kib(pid: int) -> int:
    """The resident set size of a process, in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class LoadReport:
    callers: int
    duration: float
    calls: int
    ids: int
    errors: int
    duplicates: int
    rss_start_kib: int
    rss_end_kib: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    worker_failures: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.errors or self.duplicates or self.worker_failures) and self.calls > 0

    def lines(self) -> list[str]:
        lat = ", ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items())
        return [
            f"{self.callers} callers for {self.duration:.0f}s against one server: "
            f"{self.calls:,} calls ({self.calls / self.duration:,.0f}/s), {self.ids:,} IDs",
            f"errors: {self.errors}; duplicates: {self.duplicates}",
            f"server RSS: {self.rss_start_kib / 1024:.1f} MiB after warm-up, "
            f"{self.rss_end_kib / 1024:.1f} MiB at the end",
            f"latency (ms): {lat}",
            "RESULT: " + ("OK" if self.ok else "FAILED"),
        ]


def run(callers: int = 64, duration: float = 60.0, processes: int = 4, warmup: float = 2.0,
        step: int = 100_000, say=print) -> LoadReport:
    workdir = tempfile.mkdtemp(prefix="idgen-load-")
    out = os.path.join(workdir, "calls")
    os.makedirs(out)
    mariadb = MariaDB()
    workers: list[_Worker] = []
    server: ServerProcess | None = None
    try:
        url = mariadb.create()
        prepare([url], BIZ, step=step)
        server = ServerProcess([url], cwd=workdir).start()
        assert server.proc is not None
        meta = {}
        per = [callers // processes + (1 if i < callers % processes else 0) for i in range(processes)]
        for n, threads in enumerate(t for t in per if t):
            name = f"load{n}"
            workers.append(_Worker(name, [
                "--mode", "pinned", "--targets", server.address, "--biz", BIZ,
                "--threads", str(threads), "--out", out, "--name", name, "--rate", "0",
                "--max-count", "1", "--seed", str(n)]))
            meta.update({f"{name}-{i}": {"kind": "pinned", "target": server.address}
                         for i in range(threads)})
        say(f"{callers} callers in {len(workers)} processes against {server.address}; "
            f"warming up {warmup:.0f}s, then {duration:.0f}s")
        time.sleep(warmup)  # load pacing, not synchronisation: let the callers reach steady state
        rss_start = rss_kib(server.proc.pid)
        started = time.monotonic()
        time.sleep(duration)
        rss_end = rss_kib(server.proc.pid)
        results = {w.name: w.stop() for w in workers}
        logs = load_callers(out, meta)
        latencies = sorted(c.t1 - c.t0 for log in logs for c in log.calls
                           if c.t0 >= started and c.t1 <= started + duration)
        findings = check(logs, [], grace=0, step=step, delta=1)
        report = LoadReport(
            callers=callers, duration=duration, calls=len(latencies),
            ids=findings.ids, errors=findings.errors, duplicates=findings.duplicates,
            rss_start_kib=rss_start, rss_end_kib=rss_end,
            latency_ms={name: 1000 * value for name, value in
                        percentiles(latencies, (50, 90, 99, 99.9)).items()}
            | {"max": 1000 * (latencies[-1] if latencies else float("nan"))},
            worker_failures={k: v["failures"] for k, v in results.items() if v.get("failures")},
        )
        for line in report.lines():
            say(line)
        return report
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(10)
        if server is not None:
            server.stop()
        mariadb.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args(argv)
    report = run(args.callers, args.duration, args.processes, say=lambda s: print(s, flush=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
