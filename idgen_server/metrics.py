"""Prometheus metrics, read at scrape time from the counters the server's objects keep.

Nothing here runs per call: the collector reads, when Prometheus asks, what the
objects count themselves (``RpcStats``: RPCs by method and code with latencies,
recorded without a lock; each store's allocations, conflicts and allocation
times; each buffer's state; the allocator's database health and the rows its
watch thread last read, so a scrape sends no query). prometheus_client's own
``Counter`` and ``Histogram`` take a lock on every ``inc``/``observe``, which is why
none of them is used on the hot path (``idgen_server.stats`` has the figures).

Names follow Prometheus' conventions and, for the RPCs, go-grpc-prometheus and
py-grpc-prometheus (``grpc_server_handled_total`` and friends), so that existing
dashboards work. A database is named by its label (``db0``), never by its URL;
biz types are those the server serves (buffers it made, rows in its databases).
docs/operations.md lists every family.

``MetricsEndpoint`` serves them over HTTP on ``/metrics`` only (any other path is
404), with prometheus_client's WSGI app, in the ``idgen-metrics`` thread.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from idgen_core.errors import ConfigError
from idgen_core.segment import INT64_MAX
from idgen_core.version import installed_version
from idgen_server.allocator import Allocator
from idgen_server.buffers import BufferPool
from idgen_server.stats import HistogramSnapshot, RpcStats

__all__ = ["METRICS_PATH", "MetricsEndpoint", "make_registry"]

METRICS_PATH = "/metrics"
_RPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]


def _buckets(histogram: HistogramSnapshot) -> list[tuple[str, float]]:
    """The histogram's buckets as prometheus_client takes them: (``le``, cumulative count)."""
    bounds = [floatToGoString(b) for b in histogram.bounds] + ["+Inf"]
    return list(zip(bounds, histogram.cumulative(), strict=True))


class _Collector(Collector):
    """Every idgen family, built afresh at each scrape."""

    def __init__(self, allocator: Allocator, buffers: BufferPool, rpcs: RpcStats | None,
                 version: str) -> None:
        self._allocator = allocator
        self._buffers = buffers
        self._rpcs = rpcs
        self._version = version

    def collect(self) -> Iterator[Metric]:
        if self._rpcs is not None:
            yield from self._rpc_families(self._rpcs)
        yield from self._database_families()
        yield from self._buffer_families()
        info = GaugeMetricFamily("idgen_build_info", "The idgen version serving (always 1)",
                                 labels=["version"])
        info.add_metric([self._version], 1)
        yield info

    @staticmethod
    def _rpc_families(rpcs: RpcStats) -> Iterable[Metric]:
        started = CounterMetricFamily(
            "grpc_server_started", "RPCs started on the server", labels=_RPC_LABELS)
        handled = CounterMetricFamily(
            "grpc_server_handled", "RPCs completed on the server, whatever their status",
            labels=[*_RPC_LABELS, "grpc_code"])
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Seconds from a call's arrival at the servicer to its reply", labels=_RPC_LABELS)
        for method in rpcs.snapshot():
            labels = ["unary", method.service, method.method]
            started.add_metric(labels, method.started)
            for code, n in method.handled.items():
                handled.add_metric([*labels, code.name], n)
            seconds.add_metric(labels, _buckets(method.latency), method.latency.total)
        return started, handled, seconds

    def _database_families(self) -> Iterable[Metric]:
        allocator = self._allocator
        up = GaugeMetricFamily(
            "idgen_database_up", "1 if the database answered its last call, 0 while it is "
            "benched", labels=["db"])
        segments = CounterMetricFamily(
            "idgen_segments_allocated", "Segments allocated from the database", labels=["db"])
        conflicts = CounterMetricFamily(
            "idgen_allocation_conflicts",
            "Allocations that lost the compare-and-set race and were retried", labels=["db"])
        seconds = HistogramMetricFamily(
            "idgen_allocation_seconds",
            "Seconds to allocate a segment from the database, retries included", labels=["db"])
        used = GaugeMetricFamily(
            "idgen_range_used_ratio",
            "Share of the int64 range used: max_id / (2^63-1), as last read from the database",
            labels=["biz_type", "db"])
        # By label, never by URL: what a scrape shows must not describe the deployment.
        for index, (store, label, health) in enumerate(
                zip(allocator.stores, allocator.labels, allocator.health(), strict=True)):
            up.add_metric([label], 1 if health.reachable else 0)
            segments.add_metric([label], store.allocations)
            conflicts.add_metric([label], store.conflicts)
            timings = store.allocation_seconds.snapshot()
            seconds.add_metric([label], _buckets(timings), timings.total)
            for biz_type, row in allocator.last_read(index).items():
                used.add_metric([biz_type, label], row.max_id / INT64_MAX)
        return up, segments, conflicts, seconds, used

    def _buffer_families(self) -> Iterable[Metric]:
        issued = CounterMetricFamily(
            "idgen_ids_issued", "IDs handed out by NextId", labels=["biz_type"])
        buffered = GaugeMetricFamily(
            "idgen_ids_buffered", "IDs held in memory, ready without a database",
            labels=["biz_type"])
        waits = CounterMetricFamily(
            "idgen_buffer_waits", "Calls that found both segments used up and waited",
            labels=["biz_type"])
        fetches = CounterMetricFamily(
            "idgen_segment_fetches", "Segments the buffer fetched from the databases",
            labels=["biz_type"])
        in_segments = CounterMetricFamily(
            "idgen_segment_ids_served",
            "IDs handed out in whole segments by NextSegment, to clients that generate IDs "
            "in-process", labels=["biz_type"])
        for biz_type, state, _ in self._buffers.states():
            issued.add_metric([biz_type], state.issued)
            buffered.add_metric([biz_type], state.buffered)
            waits.add_metric([biz_type], state.waits)
            fetches.add_metric([biz_type], state.fetches)
        for biz_type, ids in sorted(self._allocator.served.snapshot().items()):
            in_segments.add_metric([biz_type], ids)
        return issued, buffered, waits, fetches, in_segments


def make_registry(allocator: Allocator, buffers: BufferPool, rpcs: RpcStats | None = None
                  ) -> CollectorRegistry:
    """A registry of idgen's families and the standard process, platform and GC ones."""
    # Described at registration, so that ``/metrics?name[]=...`` can pick families.
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Collector(allocator, buffers, rpcs, installed_version()))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def _only_metrics(app: WSGIApplication) -> WSGIApplication:
    """``app`` on ``METRICS_PATH``; 404 everywhere else."""
    def routed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == METRICS_PATH:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found: the metrics are at {METRICS_PATH}\n".encode()]
    return routed


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes, serving ``/metrics`` in the ``idgen-metrics``
    daemon thread until ``close()``. ``ConfigError`` if it cannot listen on host:port."""

    def __init__(self, host: str, port: int, allocator: Allocator, buffers: BufferPool,
                 rpcs: RpcStats | None = None) -> None:
        self.registry = make_registry(allocator, buffers, rpcs)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

            class Server(ThreadingWSGIServer):
                address_family = family

            self._server = make_server(host, port, _only_metrics(make_wsgi_app(self.registry)),
                                       Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="idgen-metrics",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``host:port`` it serves on (the real port if 0 was asked for)."""
        address, port = self._server.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
