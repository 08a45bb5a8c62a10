"""The standard gRPC health service (``grpc.health.v1.Health``), kept true by a thread.

What it answers, for ``""`` (the server as a whole) and for each of idgen's services:

- ``SERVING`` while at least one database is reachable (not benched,
  ``idgen_server.health``) or the buffers still hold IDs: a caller of ``NextId``
  can be served;
- ``NOT_SERVING`` when every database is down and nothing is buffered, and back to
  ``SERVING`` by itself once a database answers again (the allocator's watch
  thread pings benched databases);
- ``NOT_SERVING`` for good once the server drains (``drain``): a load balancer or
  a Kubernetes probe takes the server out while it still answers calls.

And for ``liveness`` (``LIVENESS``), a name for liveness probes: ``SERVING`` whenever
the process answers at all, until it drains. A liveness probe on ``""`` would restart
a server whose databases are down, which brings no database back and empties the
buffers that were still serving.

The state is recomputed every ``interval`` seconds in a thread (``idgen-health``)
rather than on each ``Check``: a probe costs a dictionary lookup, and ``Watch``
streams (grpcio-health-checking's servicer; they hold no RPC thread) hear of a
change within one interval. Health checks need no token: probes carry none.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["DEFAULT_INTERVAL", "LIVENESS", "HealthService"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.5
"""Seconds between two computations of the state."""

LIVENESS = "liveness"
"""The service name a liveness probe asks: SERVING while the process answers."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthService:
    """Reports ``can_serve()`` for ``services`` (and ``""``) on a gRPC server. Thread-safe;
    ``start()`` begins watching, ``drain()`` turns it NOT_SERVING for good, ``close()``
    ends the thread."""

    def __init__(self, can_serve: Callable[[], bool], services: Sequence[str], *,
                 interval: float = DEFAULT_INTERVAL) -> None:
        self._can_serve = can_serve
        # "" last: once a watcher of the server as a whole hears a change, each service
        # already answers it too.
        self._services = (*services, health.OVERALL_HEALTH)
        self._interval = interval
        self._servicer = health.HealthServicer()
        self._lock = threading.Lock()
        self._serving: bool | None = None
        self._draining = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._servicer.set(LIVENESS, _SERVING)
        self._update()

    def add_to_server(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    @property
    def serving(self) -> bool:
        """What the service answers now: True for SERVING."""
        with self._lock:
            return bool(self._serving) and not self._draining

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="idgen-health", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._update()
            except Exception:  # a bug must not freeze the answer probes get
                log.exception("computing the health state failed; trying again")

    def _update(self) -> None:
        serving = self._can_serve()
        with self._lock:
            if self._draining or serving == self._serving:
                return
            first = self._serving is None
            self._serving = serving
            status = _SERVING if serving else _NOT_SERVING
            for service in self._services:
                self._servicer.set(service, status)
        if not first or not serving:
            if serving:
                log.info("serving again: a database answers", extra={"serving": True})
            else:
                log.warning("not serving: every database is unreachable and the buffers are empty",
                            extra={"serving": False})

    def drain(self, *, announce: bool = True) -> None:
        """Answer NOT_SERVING from now on, whatever the databases do (logged if ``announce``)."""
        with self._lock:
            if self._draining:
                return
            self._draining = True
            self._servicer.enter_graceful_shutdown()
        if announce:
            log.info("draining: health checks answer NOT_SERVING", extra={"serving": False})

    def close(self) -> None:
        """Stop the thread (the health answers stay as they are)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(5)
