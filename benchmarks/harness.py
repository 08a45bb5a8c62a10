"""What every scenario shares: the result row, the timing loops, progress, the context.

A figure is only ever reported next to a baseline measured in the same run on
the same machine, and the ratio is always ``idgen / baseline``: for rates higher
is better, for latencies lower is better (the row's ``target`` says which).

A scenario declares its figures before it runs, so that a scenario that cannot
run (no MariaDB, a package missing) still reports every one of them, each
marked skipped with the reason: nothing is dropped silently.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat

__all__ = [
    "BENCH_STEP", "BIZ_BENCH", "BIZ_SWITCH", "SWITCH_STEP", "SWITCH_STEPS", "CallTimes",
    "Context", "Row", "Run", "best_rate", "percentiles", "progress", "rate_loop",
    "threaded_rate", "time_each_call", "timed_threads",
]

from benchmarks.processes import ServerProcess, WorkerPool, benchmark_server

_T0 = time.monotonic()


def register_bench(url: str, *more: tuple[str, int]) -> None:
    """The schema and the bench's biz type (and ``more`` as ``(name, step)``) in ``url``."""
    from idgen_server.store import SegmentStore

    store = SegmentStore(url)
    try:
        store.create_schema()
        store.register(BIZ_BENCH, step=BENCH_STEP)
        for name, step in more:
            store.register(name, step=step)
    finally:
        store.close()


def progress(message: str) -> None:
    """One line of progress on stderr, with the time since the run started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One figure of the table: idgen against a baseline measured in the same run."""

    key: str
    scenario: int
    figure: str
    unit: str
    baseline_name: str
    target: str = ""
    idgen: float | None = None
    baseline: float | None = None
    met: bool | None = None
    note: str = ""
    skipped: str | None = None
    details: dict[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.idgen is None or not self.baseline:
            return None
        return self.idgen / self.baseline

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


class Run:
    """The rows of one run, by key, in the order they were declared."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.rows: dict[str, Row] = {}
        self.scenarios: dict[int, dict[str, object]] = {}

    def declare(self, row: Row) -> Row:
        self.rows[row.key] = row
        return row

    def start(self, scenario: int, title: str) -> None:
        self.scenarios[scenario] = {"title": title, "status": "running", "reason": None}
        progress(f"scenario {scenario}: {title}")

    def finish(self, scenario: int) -> None:
        status = self.scenarios[scenario]
        rows = [r for r in self.rows.values() if r.scenario == scenario]
        if rows and all(r.skipped for r in rows):
            status["status"] = "skipped"
            status["reason"] = rows[0].skipped
        elif any(r.skipped for r in rows):
            status["status"] = "partial"
        else:
            status["status"] = "ran"

    def skip(self, scenario: int, reason: str, *, only_missing: bool = False) -> None:
        """Mark the scenario's figures skipped (those without a value, if ``only_missing``)."""
        for row in self.rows.values():
            missing = row.idgen is None or row.baseline is None
            if row.scenario == scenario and (missing or not only_missing):
                row.skipped = reason
        progress(f"scenario {scenario}: skipped: {reason}")


# -- in-process timing --------------------------------------------------------

def rate_loop(fn: Callable[[], object], n: int) -> float:
    """Seconds for ``n`` calls of the zero-argument callable ``fn`` in a bare loop.

    Every in-process candidate, idgen and baselines alike, is timed by exactly
    this loop, so the loop's own cost (10-20 ns a turn) is in every figure.
    """
    start = time.perf_counter()
    for _ in repeat(None, n):
        fn()
    return time.perf_counter() - start


def best_rate(fn: Callable[[], object], n: int, rounds: int) -> float:
    """Calls per second: the best of ``rounds`` timed loops (the least disturbed one)."""
    rate_loop(fn, min(n, 10_000))  # warm up: specialise the bytecode, fill caches
    return max(n / rate_loop(fn, n) for _ in range(rounds))


def timed_threads(threads: int, work: Callable[[int], object]) -> float:
    """Seconds for ``threads`` threads to each run ``work(index)``, from a common start
    (a barrier the measuring thread passes too) to the last thread's end."""
    barrier = threading.Barrier(threads + 1)

    def body(index: int) -> None:
        barrier.wait()
        work(index)

    workers = [threading.Thread(target=body, args=(i,), name=f"bench-caller-{i}", daemon=True)
               for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - start


def threaded_rate(fn: Callable[[], object], threads: int, n_per_thread: int) -> float:
    """Total calls per second of ``threads`` threads each calling ``fn`` ``n`` times."""
    return threads * n_per_thread / timed_threads(threads, lambda _: rate_loop(fn, n_per_thread))


@dataclass
class CallTimes:
    """Per-call latencies of a run of calls, summarised."""

    worst_ns: int = 0
    top5_ns: list[int] = field(default_factory=list)
    calls: int = 0
    slow: int = 0
    """Calls that took more than the threshold (100 µs)."""
    slow_calls: list[tuple[object, int]] = field(default_factory=list)
    """(what the call returned, ns) of the first 10,000 slow calls."""

    def merge(self, other: CallTimes) -> None:
        self.top5_ns = sorted(self.top5_ns + other.top5_ns, reverse=True)[:5]
        self.worst_ns = max(self.worst_ns, other.worst_ns)
        self.calls += other.calls
        self.slow += other.slow
        self.slow_calls += other.slow_calls[:10_000 - len(self.slow_calls)]


def time_each_call(fn: Callable[[], object], n: int, slow_ns: int = 100_000) -> CallTimes:
    """Time each of ``n`` calls of ``fn`` alone (``perf_counter_ns`` on either side)."""
    clock = time.perf_counter_ns
    worst: list[int] = []
    floor = 0
    slow: list[tuple[object, int]] = []
    slow_count = 0
    for _ in repeat(None, n):
        t0 = clock()
        result = fn()
        took = clock() - t0
        if took > slow_ns:
            slow_count += 1
            if len(slow) < 10_000:
                slow.append((result, took))
        if took > floor:
            worst.append(took)
            if len(worst) > 64:
                worst.sort(reverse=True)
                del worst[5:]
                floor = worst[-1]
    worst.sort(reverse=True)
    return CallTimes(worst[0] if worst else 0, worst[:5], n, slow_count, slow)


def percentiles(samples: Sequence[float], points: Iterable[float] = (50, 99, 99.9)
                ) -> dict[str, float]:
    """Nearest-rank percentiles of ``samples`` (empty -> no keys)."""
    ordered = sorted(samples)
    out: dict[str, float] = {}
    if not ordered:
        return out
    for p in points:
        rank = max(1, -(-len(ordered) * p // 100))
        out[f"p{p:g}"] = ordered[int(rank) - 1]
    return out


@dataclass
class Context:
    """What the scenarios share in one run."""

    run: Run
    pool: WorkerPool
    sqlite_url: str
    """A fresh SQLite database with the schema and the benchmark biz types."""
    mariadb_url: str | None
    """A fresh MariaDB database with the same, or None (``mariadb_reason`` says why)."""
    mariadb_reason: str = ""
    servers: dict[str, ServerProcess] = field(default_factory=dict)
    tmp_dir: str = ""
    """The run's scratch directory (removed at the end): more databases, certificates."""

    @property
    def quick(self) -> bool:
        return self.run.quick

    def server(self, mode: str, *, id_base: int | None = None) -> ServerProcess:
        """The benchmark server of ``mode`` ('idgen' or 'null') on SQLite, started once."""
        if mode not in self.servers:
            self.servers[mode] = benchmark_server(mode, self.sqlite_url, id_base=id_base)
        return self.servers[mode]

    def add_server(self, name: str, server: ServerProcess) -> ServerProcess:
        """Keep ``server`` (started by the scenario) to be stopped, and its figures gathered,
        with the others at the end of the run."""
        self.servers[name] = server
        return server

    def close(self) -> dict[str, object]:
        """Stop the servers and workers; returns each server's buffer fetches and waits."""
        stats = {mode: server.close() for mode, server in self.servers.items()}
        self.servers.clear()
        self.pool.close()
        return dict(stats)


BIZ_BENCH = "bench"
"""The biz type of the throughput figures: step 1,000,000, so a segment lasts long
enough at full speed that the loader never makes a caller wait."""
BIZ_SWITCH = "switch"
"""The biz type of the segment-switch figure: a small step, many switches."""
BENCH_STEP = 1_000_000
SWITCH_STEP = 50_000
SWITCH_STEPS = 4
"""Segments of 4 x 50,000 IDs: small enough for 100 switches in a few seconds, large
enough that at full speed the 80% left after the preload starts outlasts one
``NextSegment`` (which a caller spinning on the GIL slows to several ms)."""
