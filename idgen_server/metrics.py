"""Prometheus metrics, read at scrape time from the counters the server keeps.

Nothing is counted on the hot path for them: the collector reads the stores',
the allocator's and the buffers' own counters when Prometheus asks.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from idgen_core.errors import ConfigError
from idgen_server.allocator import Allocator
from idgen_server.buffers import BufferPool

__all__ = ["MetricsEndpoint"]


class _Collector(Collector):
    def __init__(self, allocator: Allocator, buffers: BufferPool) -> None:
        self._allocator = allocator
        self._buffers = buffers

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        allocator = self._allocator
        segments = CounterMetricFamily("idgen_segments_allocated", "Segments allocated", labels=["db"])
        conflicts = CounterMetricFamily(
            "idgen_allocation_conflicts", "Optimistic-lock races lost and retried", labels=["db"])
        healthy = GaugeMetricFamily("idgen_db_healthy", "1 if the database is not benched", labels=["db"])
        # Databases by label, never by URL: the metrics must not describe the deployment.
        for store, label, ok in zip(allocator.stores, allocator.labels, allocator.healthy(), strict=True):
            segments.add_metric([label], store.allocations)
            conflicts.add_metric([label], store.conflicts)
            healthy.add_metric([label], 1.0 if ok else 0.0)
        waits = CounterMetricFamily(
            "idgen_buffer_waits", "Calls that found both segments used up", labels=["biz_type"])
        for biz_type, buffer in self._buffers:
            waits.add_metric([biz_type], buffer.waits)
        yield from (segments, conflicts, healthy, waits)


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes, serving in a daemon thread until ``close()``."""

    def __init__(self, host: str, port: int, allocator: Allocator, buffers: BufferPool) -> None:
        registry = CollectorRegistry()
        registry.register(_Collector(allocator, buffers))
        try:
            self._server, self._thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    @property
    def address(self) -> str:
        """``host:port`` it serves on (the real port if 0 was asked for)."""
        server: WSGIServer = self._server
        host, port = server.server_address[:2]
        return f"{host!s}:{port}"

    def close(self) -> None:
        server: WSGIServer = self._server
        thread: threading.Thread = self._thread
        server.shutdown()
        server.server_close()
        thread.join(5)
