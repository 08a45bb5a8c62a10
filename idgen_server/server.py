"""Assemble and run an idgen server from a ``ServerConfig``.

``IdGenServer`` owns everything with a lifetime: the database pools, the
per-biz-type buffers, the gRPC server and the optional Prometheus endpoint.
It is a context manager; ``stop()`` drains in-flight calls for ``grace``
seconds, then stops the background loaders and closes the pools.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from idgen_client.errors import ConfigError, StorageUnavailable
from idgen_server.allocator import Allocator
from idgen_server.config import (
    DATA_DIR_ENV,
    DEFAULT_BIZ_TYPE,
    DEFAULT_STEP,
    EMBEDDED_FILE,
    ServerConfig,
)
from idgen_server.database import sqlite_path
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
    """A running idgen server. Raises ``ConfigError`` for a configuration that cannot
    work: a bad setting, a port in use, or a database that will not answer without a
    person's help (wrong password, unknown database, missing file or table). A
    database that is merely unreachable does not stop it (``unreachable``)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        stores: list[SegmentStore] = []
        try:
            for url in config.db_urls:
                stores.append(SegmentStore(url, timeout=config.db_timeout))
            self.unreachable = self._prepare(stores)
            """Names of the databases that did not answer at start-up."""
        except BaseException:
            for store in stores:
                store.close()
            raise
        self.allocator = Allocator(stores)
        self.service = IdGenService(self.allocator, preload_at=config.preload_at)
        self._executor = ThreadPoolExecutor(max_workers=config.workers,
                                            thread_name_prefix="idgen-rpc")
        self._grpc = grpc.server(
            self._executor,
            options=[("grpc.so_reuseport", 0)],
        )
        add_to_server(self.service, self._grpc)  # parses requests itself: bad bytes are INVALID_ARGUMENT
        self._metrics: tuple[WSGIServer, threading.Thread] | None = None
        try:
            # gRPC's core would also print its own multi-line complaint about a port in use.
            self.port = 0 if _taken(config.listen) else self._grpc.add_insecure_port(config.listen)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self._release()
            raise ConfigError(f"cannot listen on {config.listen}: address in use or not local")

    def _prepare(self, stores: list[SegmentStore]) -> list[str]:
        if self.config.embedded:
            self._prepare_embedded(stores[0])
            return []
        unreachable = []
        for store in stores:
            try:
                store.check_ready()
            except StorageUnavailable as exc:
                # It may come back: serve from the others meanwhile.
                log.warning("starting without %s for now: %s", store.name, exc)
                unreachable.append(store.name)
        return unreachable

    def _prepare_embedded(self, store: SegmentStore) -> None:
        """Zero set-up: the embedded SQLite file gets its schema and a `default` biz type."""
        path = sqlite_path(self.config.db_urls[0])
        assert path is not None
        legacy = os.path.abspath(EMBEDDED_FILE)
        if not os.path.exists(path) and os.path.exists(legacy) and legacy != path:
            raise ConfigError(
                f"found {legacy}, the embedded database of an earlier idgen, which served "
                f"./{EMBEDDED_FILE} of the directory it ran in; the embedded database is now "
                f"{path}. To keep its IDs, move it there, or serve it with --db sqlite:///{legacy}")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the directory of the embedded database {path}: "
                              f"{exc.strerror} (set {DATA_DIR_ENV} to another directory)") from None
        store.create_schema()
        store.register(DEFAULT_BIZ_TYPE, step=DEFAULT_STEP)

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (the real port if 0 was asked for)."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> IdGenServer:
        """Start serving; returns at once. ``ConfigError`` if the metrics port is taken."""
        if self.config.metrics_port is not None:
            registry = CollectorRegistry()
            registry.register(_Metrics(self.service))
            host = self.config.listen.rpartition(":")[0].strip("[]")
            try:
                self._metrics = start_http_server(self.config.metrics_port, host, registry)
            except OSError as exc:
                self._release()
                raise ConfigError(f"cannot serve metrics on {host}:{self.config.metrics_port}: "
                                  f"{exc.strerror or exc}") from None
        self._grpc.start()
        log.info("idgen serving on %s from %s", self.address,
                 ", ".join(s.name for s in self.allocator.stores))
        return self

    def stop(self) -> None:
        """Drain calls for ``config.grace`` seconds, then release everything."""
        self._release(self.config.grace)

    def _release(self, grace: float = 0.0) -> None:
        self._grpc.stop(grace).wait()
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


def _taken(listen: str) -> bool:
    """Whether another process listens on ``listen`` (HOST:PORT) already."""
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return False
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except OSError:
        return False  # gRPC will say what is wrong with the host
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False
