"""What the server counts for its metrics: RPCs by method and status, and latency histograms.

``RpcStats`` counts every call of the RPCs it times (started, handled by status code, a
latency histogram) and takes **no lock per call**: each RPC thread writes only its own
shard, a list of counters made on its first call, and a scrape sums the shards
(``snapshot``). The only lock is taken once per thread, when its shard is made, and by
``register`` and ``snapshot``, never on the hot path.

Why shards, measured on this machine (CPython 3.11, one call = count the start, read the
clock twice, count the status code, find the bucket, add to the sum; best of 5 x 300,000):
the shards cost 270 ns a call, 160 ns over the two clock reads alone (110 ns), with 1 thread
and with 8 alike. prometheus_client's own ``Counter.inc`` and ``Histogram.observe`` take a
lock each (its values are ``threading.Lock``-guarded): 1,170 ns with the labelled children
cached, 3,400 ns with ``labels()`` per call; so they are not used on the hot path. An
``itertools.count`` per counter (``next()`` is atomic in C) costs 210 ns but cannot add a
float, so the latency sum would still need a lock (350 ns). ``timed`` as written (with the
status code read from the context) adds 280 ns to a call of a do-nothing handler. Next to a
``NextId`` round trip of 300-600 µs that is within noise, and so it measured: on ÷ off
within the noise of two identical servers (``benchmarks/metrics_bench.py``, RESULTS.md).

A reader may see a shard mid-update: counters only grow, so a scrape sees each one at
its value just before or just after, never a value that goes back. A histogram's count
is the sum of its buckets, so the two always agree.

``Timings`` is a latency histogram for cold paths (a segment allocation: milliseconds,
a few times a second at most), with a lock of its own; ``Tally`` a count per name for
the same paths.
"""
from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

__all__ = ["ALLOCATION_BUCKETS", "CODES", "RPC_BUCKETS", "HistogramSnapshot", "MethodStats",
           "RpcStats", "Tally", "Timings"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
               0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the RPC latency buckets: from 100 µs, where a ``NextId``
served from memory lies, to 10 s, where a call waits on an unreachable database."""
ALLOCATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                      2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the allocation latency buckets: two transactions, 1 ms on
SQLite to tens of ms on a distant database; more when compare-and-set races are retried."""
CODES: tuple[grpc.StatusCode, ...] = tuple(grpc.StatusCode)
"""Every status code, in number order (OK first)."""
_CODE_INDEX = {code: i for i, code in enumerate(CODES)}
_OK, _UNKNOWN = _CODE_INDEX[grpc.StatusCode.OK], _CODE_INDEX[grpc.StatusCode.UNKNOWN]


@dataclass(frozen=True)
class HistogramSnapshot:
    """A histogram as read at one moment."""

    bounds: tuple[float, ...]
    """Upper bounds of the buckets, increasing; a last bucket, +Inf, follows them."""
    counts: tuple[int, ...]
    """Observations per bucket (not cumulative): ``len(bounds) + 1`` of them."""
    total: float
    """Sum of the observations."""

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Observations at or below each bound, then all of them (Prometheus' ``le``)."""
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


def _bucket(bounds: Sequence[float], seconds: float) -> int:
    """The bucket of ``seconds``: the first whose bound it does not exceed (``le``)."""
    return bisect.bisect_left(bounds, seconds)


class Timings:
    """A latency histogram, thread-safe (a lock per ``observe``: for cold paths only)."""

    def __init__(self, bounds: Sequence[float] = ALLOCATION_BUCKETS) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._total = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[_bucket(self._bounds, seconds)] += 1
            self._total += seconds

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            return HistogramSnapshot(self._bounds, tuple(self._counts), self._total)


class Tally:
    """A count per name, thread-safe (a lock per ``add``: for cold paths only). Give it only
    names from a bounded set (biz types that exist), never ones a caller merely asked for."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True)
class MethodStats:
    """One RPC method's figures, summed over every thread."""

    service: str
    """The service's full name: ``idgen.v1.IdGenerator``."""
    method: str
    """The method's name: ``NextId``."""
    started: int
    handled: dict[grpc.StatusCode, int]
    """Calls ended, by status code: every code, zeros included."""
    latency: HistogramSnapshot
    """Seconds in the handler, from the request's arrival at the servicer to its reply."""


class _Shard(threading.local):
    """The calling thread's counters: made (and registered) on its first access."""

    counts: list[float]

    def __init__(self, stats: RpcStats) -> None:
        self.counts = stats._new_shard()


class RpcStats:
    """Counts and latencies of the RPCs ``timed`` wraps, recorded without a lock (see the
    module). Thread-safe; ``register`` each method before its calls are timed."""

    def __init__(self, bounds: Sequence[float] = RPC_BUCKETS) -> None:
        self._bounds = tuple(bounds)
        # Per method, one run of slots in a shard: started, handled by code, buckets, sum.
        self._width = 1 + len(CODES) + len(self._bounds) + 1 + 1
        self._methods: list[tuple[str, str]] = []
        self._shards: list[list[float]] = []  # every thread's, kept when the thread ends
        self._lock = threading.Lock()
        self._local = _Shard(self)

    def _new_shard(self) -> list[float]:
        with self._lock:
            shard: list[float] = [0] * (self._width * len(self._methods))
            self._shards.append(shard)
        return shard

    def register(self, service: str, method: str) -> int:
        """The slot of ``service``/``method`` (made on first registration)."""
        with self._lock:
            if (service, method) in self._methods:
                return self._methods.index((service, method))
            self._methods.append((service, method))
            for shard in self._shards:
                # Only ever lengthened: a thread writing its earlier slots loses nothing.
                shard.extend([0] * self._width)
            return len(self._methods) - 1

    def timed(self, handler: Callable[[_Req, grpc.ServicerContext], _Resp], slot: int
              ) -> Callable[[_Req, grpc.ServicerContext], _Resp]:
        """``handler`` (a unary-unary behaviour), counting each call in ``slot``'s figures:
        started, then handled with the status it ends with (OK, the code it aborted with,
        UNKNOWN for an exception that is not an abort) and its seconds."""
        local, bounds, clock = self._local, self._bounds, time.perf_counter
        started = slot * self._width
        handled = started + 1
        buckets = handled + len(CODES)
        total = buckets + len(bounds) + 1
        index = _CODE_INDEX

        def timed_call(request: _Req, context: grpc.ServicerContext) -> _Resp:
            counts = local.counts
            counts[started] += 1
            start = clock()
            ok = False
            try:
                response = handler(request, context)
                ok = True
                return response
            finally:
                seconds = clock() - start
                code = context.code()
                counts[handled + (index.get(code, _UNKNOWN) if code is not None
                                  else _OK if ok else _UNKNOWN)] += 1
                counts[buckets + bisect.bisect_left(bounds, seconds)] += 1
                counts[total] += seconds

        return timed_call

    def snapshot(self) -> list[MethodStats]:
        """Every registered method's figures, summed over the threads' shards."""
        with self._lock:
            methods = list(self._methods)
            shards = [list(shard) for shard in self._shards]  # each copy is one C call
        width, n_codes, n_buckets = self._width, len(CODES), len(self._bounds) + 1
        out = []
        for slot, (service, method) in enumerate(methods):
            base = slot * width
            sums = [sum(shard[base + k] for shard in shards) for k in range(width)]
            handled = {code: int(sums[1 + i]) for i, code in enumerate(CODES)}
            first = 1 + n_codes
            latency = HistogramSnapshot(self._bounds,
                                        tuple(int(n) for n in sums[first:first + n_buckets]),
                                        float(sums[first + n_buckets]))
            out.append(MethodStats(service, method, int(sums[0]), handled, latency))
        return out
