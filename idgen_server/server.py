"""Assemble and run an idgen server from a ``ServerConfig``.

``IdGenServer`` owns everything with a lifetime: the database pools, the
per-biz-type buffers, the gRPC server and the optional Prometheus endpoint.
It is a context manager; ``stop()`` drains in-flight calls for ``grace``
seconds, then stops the background loaders and closes the pools.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from idgen_client.errors import InvalidRequest, StorageUnavailable
from idgen_server.allocator import Allocator
from idgen_server.config import DEFAULT_BIZ_TYPE, DEFAULT_STEP, ServerConfig
from idgen_server.service import IdGenService, add_to_server
from idgen_server.store import SegmentStore

__all__ = ["IdGenServer"]

log = logging.getLogger(__name__)


class _Metrics(Collector):
    """Read at scrape time from the counters the core keeps: nothing on the hot path."""

    def __init__(self, service: IdGenService) -> None:
        self._service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        allocator = self._service.allocator
        segments = CounterMetricFamily("idgen_segments_allocated", "Segments allocated", labels=["db"])
        conflicts = CounterMetricFamily(
            "idgen_allocation_conflicts", "Optimistic-lock races lost and retried", labels=["db"])
        healthy = GaugeMetricFamily("idgen_db_healthy", "1 if the database is not benched", labels=["db"])
        for store, ok in zip(allocator.stores, allocator.healthy(), strict=True):
            segments.add_metric([store.name], store.segments)
            conflicts.add_metric([store.name], store.conflicts)
            healthy.add_metric([store.name], 1.0 if ok else 0.0)
        waits = CounterMetricFamily(
            "idgen_buffer_waits", "Calls that found both segments used up", labels=["biz_type"])
        for biz_type, buffer in self._service.buffers():
            waits.add_metric([biz_type], buffer.waits)
        yield from (segments, conflicts, healthy, waits)


class IdGenServer:
    """A running idgen server. Raises ``InvalidRequest`` for an unusable configuration."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        stores = [SegmentStore(url, timeout=config.db_timeout) for url in config.db_urls]
        self.allocator = Allocator(stores)
        try:
            self._prepare(stores)
        except BaseException:
            self.allocator.close()
            raise
        self.service = IdGenService(self.allocator, preload_at=config.preload_at)
        self._executor = ThreadPoolExecutor(max_workers=config.workers,
                                            thread_name_prefix="idgen-rpc")
        self._grpc = grpc.server(
            self._executor,
            options=[("grpc.so_reuseport", 0)],
        )
        add_to_server(self.service, self._grpc)  # parses requests itself: bad bytes are INVALID_ARGUMENT
        try:
            self.port = self._grpc.add_insecure_port(config.listen)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self.allocator.close()
            raise InvalidRequest(f"cannot listen on {config.listen}: address in use or not local")
        self._metrics: tuple[WSGIServer, threading.Thread] | None = None

    def _prepare(self, stores: list[SegmentStore]) -> None:
        if self.config.is_default_db:
            # Zero set-up: the embedded SQLite file gets its schema and a `default` biz type.
            stores[0].create_schema()
            stores[0].register(DEFAULT_BIZ_TYPE, step=DEFAULT_STEP)
            return
        for store in stores:
            try:
                if not store.has_schema():
                    raise InvalidRequest(
                        f"database {store.name} has no idgen_segment table: "
                        f"run `idgen init-db --db URL` for it first"
                    )
            except StorageUnavailable as exc:
                # It may come back: serve from the others meanwhile.
                log.warning("starting without %s for now: %s", store.name, exc)

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (the real port if 0 was asked for)."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> IdGenServer:
        """Start serving; returns at once."""
        if self.config.metrics_port is not None:
            registry = CollectorRegistry()
            registry.register(_Metrics(self.service))
            host = self.config.listen.rpartition(":")[0].strip("[]")
            self._metrics = start_http_server(self.config.metrics_port, host, registry)
        self._grpc.start()
        log.info("idgen serving on %s from %s", self.address,
                 ", ".join(s.name for s in self.allocator.stores))
        return self

    def stop(self) -> None:
        """Drain calls for ``config.grace`` seconds, then release everything."""
        self._grpc.stop(self.config.grace).wait()
        self._executor.shutdown(wait=True)
        self.service.close()
        if self._metrics is not None:
            server, thread = self._metrics
            server.shutdown()
            thread.join(5)
        self.allocator.close()

    def __enter__(self) -> IdGenServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
