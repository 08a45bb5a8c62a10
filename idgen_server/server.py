"""Assemble and run an idgen server from a ``ServerConfig``.

``IdGenServer`` owns everything with a lifetime: the database pools, the
per-biz-type buffers, the token cache, the gRPC server (TLS, if configured;
never plaintext instead) and the optional Prometheus endpoint.
It is a context manager; ``stop()`` drains in-flight calls for ``grace``
seconds, then stops the background fetches and closes the pools.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from idgen_core.errors import ConfigError, StorageUnavailable
from idgen_server.admin import AdminService, add_admin_to_server
from idgen_server.allocator import Allocator
from idgen_server.auth import Authenticator
from idgen_server.buffers import BufferPool
from idgen_server.config import ServerConfig
from idgen_server.defaults import DATA_DIR_ENV, DEFAULT_BIZ_TYPE, DEFAULT_STEP, EMBEDDED_FILE
from idgen_server.gate import Gate
from idgen_server.health_service import HealthService
from idgen_server.http_api import HttpApi
from idgen_server.http_server import HttpServer
from idgen_server.metrics import MetricsEndpoint
from idgen_server.quota import Quotas
from idgen_server.service import IdGenService, add_to_server
from idgen_server.stats import RpcStats
from idgen_server.store import SegmentStore
from idgen_server.tls import server_credentials, server_ssl_context
from idgen_server.urls import sqlite_path
from idgen_wire import idgen_pb2
from idgen_wire.idgen_pb2_grpc import IdGeneratorServicer

__all__ = ["IdGenServer", "ServicerFactory"]

ServicerFactory = Callable[[BufferPool, Allocator], IdGeneratorServicer]
"""Makes the ``idgen.v1.IdGenerator`` servicer over the server's buffers and allocator."""

log = logging.getLogger(__name__)


class IdGenServer:
    """A running idgen server. Raises ``ConfigError`` for a configuration that cannot
    work: a bad setting, a port in use, or a database that will not answer without a
    person's help (wrong password, unknown database, missing file or table). A
    database that is merely unreachable does not stop it (``unreachable``).

    ``servicer`` makes the object that answers the RPCs (``IdGenService`` unless
    told otherwise: the benchmark gives one that does no work, to measure gRPC's
    own cost with everything else the same).
    """

    def __init__(self, config: ServerConfig, *, servicer: ServicerFactory | None = None) -> None:
        self.config = config
        # Before anything opens: a bad certificate or key stops the server, naming the file.
        credentials = (server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
                       if config.tls_cert is not None and config.tls_key is not None else None)
        stores: list[SegmentStore] = []
        try:
            for url, label in zip(config.db_urls, config.db_labels, strict=True):
                stores.append(SegmentStore(url, timeout=config.db_timeout, label=label))
            failures = self._prepare(stores)
            self.unreachable = [stores[index].name for index in failures]
            """Names of the databases that did not answer at start-up."""
            self.allocator = Allocator(stores, above_all_limit=config.above_all_limit)
            for index, error in failures.items():
                # Benched from the start: with every database down, health answers NOT_SERVING
                # (and metrics say down) before the watch thread's first ping has timed out.
                self.allocator.bench(index, error)
        except BaseException:
            for store in stores:
                store.close()
            raise
        self.buffers = BufferPool(self.allocator, preload_at=config.preload_at)
        self.auth = Authenticator([s.tokens for s in stores], always=config.tokens_always)
        try:
            self.service: IdGeneratorServicer
            self.service = (servicer or IdGenService)(self.buffers, self.allocator)
            self._executor = ThreadPoolExecutor(max_workers=config.workers,
                                                thread_name_prefix="idgen-rpc")
            self._grpc = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
            self.gate = gate = Gate(self.auth, Quotas(config.quota_calls, config.quota_ids))
            # Calls are counted for the metrics only when they are served: else nothing is recorded.
            self.rpc_stats = RpcStats() if config.metrics_address is not None else None
            # Both parse requests themselves: bad bytes are INVALID_ARGUMENT.
            add_to_server(self.service, self._grpc, gate, self.rpc_stats)
            admin = AdminService(self.buffers, self.allocator, lambda: self.serving)  # started now
            add_admin_to_server(admin, self._grpc, gate, self.rpc_stats)  # the admin scope, once tokens exist
            services = [s.full_name for s in idgen_pb2.DESCRIPTOR.services_by_name.values()]
            self._health = HealthService(self._can_serve, services)
            self._health.add_to_server(self._grpc)
            if config.reflection:
                reflection.enable_server_reflection(
                    (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc)
        except BaseException:
            self.auth.close()
            self.buffers.close()
            self.allocator.close()
            raise
        self._metrics: MetricsEndpoint | None = None
        self._http: HttpServer | None = None
        try:
            # gRPC's core would also print its own multi-line complaint about a port in use.
            if _taken(config.listen):
                self.port = 0
            elif credentials is not None:
                self.port = self._grpc.add_secure_port(config.listen, credentials)
            else:
                self.port = self._grpc.add_insecure_port(config.listen)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self._release()
            raise ConfigError(f"cannot listen on {config.listen}: address in use or not local")

    def _prepare(self, stores: list[SegmentStore]) -> dict[int, StorageUnavailable]:
        """Check every database; those that do not answer, by index, with their failure."""
        if self.config.embedded:
            self._prepare_embedded(stores[0])
            return {}
        unreachable = {}
        for index, store in enumerate(stores):
            try:
                store.check_ready()
            except StorageUnavailable as exc:
                # It may come back: serve from the others meanwhile.
                log.warning("starting without %s for now: %s", store.name, exc)
                unreachable[index] = exc
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
        existing = store.read(DEFAULT_BIZ_TYPE)  # its step may have changed since (idgen set-step)
        store.register(DEFAULT_BIZ_TYPE, step=existing.step if existing is not None else DEFAULT_STEP)

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (the real port if 0 was asked for)."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> IdGenServer:
        """Start serving; returns at once. ``ConfigError`` if the metrics port is taken."""
        address = self.config.metrics_address
        if address is not None:
            host, _, port = address.rpartition(":")
            try:
                self._metrics = MetricsEndpoint(host.strip("[]"), int(port), self.allocator, self.buffers,
                                                self.rpc_stats)
            except ConfigError:
                self._release()
                raise
        if self.config.http_listen is not None:
            try:
                self._http = self._http_server(self.config.http_listen).start()
            except ConfigError:
                self._release()
                raise
        self.auth.start()
        self.allocator.start()
        self._health.start()
        self._grpc.start()
        databases = dict(zip(self.allocator.labels, (s.name for s in self.allocator.stores), strict=True))
        config = self.config
        log.info("idgen serving on %s (%s; %s) from %s", self.address, self.security,
                 "tokens required" if self.auth.required else "no token required",
                 ", ".join(f"{label}={name}" for label, name in databases.items()),
                 extra={"listen": self.address, "security": self.security,  # names: no password
                        "tokens_required": self.auth.required, "databases": databases,
                        "workers": config.workers, "drain": config.drain,
                        "quota_calls": config.quota_calls, "quota_ids": config.quota_ids,
                        "metrics": self.metrics_address, "reflection": config.reflection})
        if self.config.insecure and not self.config.loopback:
            where = self.address + (f" and HTTP on {self.http_address}" if self.http_address else "")
            log.warning("serving on %s, beyond loopback, with --insecure: %s; %s", where,
                        "TLS on" if self.config.tls else "plaintext, readable by anyone on the network",
                        "tokens required" if self.auth.required
                        else "open to every caller until a token is created (idgen token create)")
        return self

    def _http_server(self, listen: str) -> HttpServer:
        """The HTTP/JSON API over the same servicer, gate and health, with the same TLS."""
        if not isinstance(self.service, IdGenService):
            raise ConfigError("the HTTP API serves idgen's own servicer only")
        config = self.config
        context = (server_ssl_context(config.tls_cert, config.tls_key, config.tls_client_ca)
                   if config.tls_cert is not None and config.tls_key is not None else None)
        api = HttpApi(self.service, self.gate, lambda: self.serving)
        return HttpServer(api.application(), listen, ssl_context=context, grace=config.grace,
                          workers=config.workers)

    @property
    def http_address(self) -> str | None:
        """``host:port`` of the HTTP API, once started; None if there is none."""
        return None if self._http is None else self._http.address

    @property
    def serving(self) -> bool:
        """What the health service answers for the ID service: SERVING (True) while a
        database is reachable or the buffers hold IDs, until the server drains."""
        return self._health.serving

    def _can_serve(self) -> bool:
        return any(self.allocator.healthy()) or self.buffers.holding()

    def drain(self) -> None:
        """Answer health checks NOT_SERVING from now on, while still serving calls: what a
        stopping server does first, so that load balancers move away before calls fail."""
        self._health.drain()

    @property
    def metrics_address(self) -> str | None:
        """``host:port`` of the metrics endpoint, once started; None if there is none."""
        return None if self._metrics is None else self._metrics.address

    @property
    def security(self) -> str:
        """How the transport is protected: "plaintext", "TLS" or "mutual TLS"."""
        if self.config.tls_client_ca is not None:
            return "mutual TLS"
        return "TLS" if self.config.tls else "plaintext"

    def stop(self) -> None:
        """Drain calls for ``config.grace`` seconds, then release everything."""
        self._release(self.config.grace)

    def _release(self, grace: float = 0.0) -> None:
        self._health.drain(announce=False)  # a Watch stream hears NOT_SERVING before the server goes
        if self._http is not None:
            self._http.begin_stop()  # both stop taking calls at once, and drain together
        self._grpc.stop(grace).wait()
        self._health.close()
        self.auth.close()
        # Before the executor: a call still waiting on a buffer ends now, as UNAVAILABLE
        # (503 over HTTP), rather than up to the buffer's wait timeout after the grace period.
        self.buffers.close()
        if self._http is not None:
            self._http.stop()
        self._executor.shutdown(wait=True)
        if self._metrics is not None:
            self._metrics.close()
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
