"""The remote client: ``NextId``, ``NextSegment`` and leases over gRPC, with failover;
and, for operators, a server's health and status.

It spreads calls across the servers it is given (round robin) and, when one
answers ``UNAVAILABLE`` or does not answer in time, retries on the next after
the shared backoff (``idgen_core.retry``). Retrying is always safe: a call whose answer
was lost wastes IDs, it never causes one to be handed out twice. A failure that
retrying cannot fix (TLS spoken to a plaintext server or the reverse, a
certificate the client does not trust) is raised at once, explained
(``idgen_client.tls``).

Security: a token (``authorization: Bearer``) and TLS files, each from an
argument or, when not given, from the environment (``IDGEN_TOKEN``,
``IDGEN_TLS_CA``, ``IDGEN_TLS_CERT``, ``IDGEN_TLS_KEY``).
"""
from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idgen_client.calls import (
    RETRYABLE,
    acquire_lease_request,
    client_settings,
    next_id_request,
    next_segment_request,
    no_answer,
    release_lease_request,
    segment_from,
)
from idgen_client.tls import server_speaks_tls
from idgen_core.errors import ServiceUnavailable, UnknownBizType
from idgen_core.segment import Segment
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from idgen_wire.address import DEFAULT_ADDRESS
from idgen_wire.status import error_from

__all__ = ["RemoteClient"]


class RemoteClient:
    """Calls idgen servers. Thread-safe; a context manager that closes its channels.

    ``timeout`` bounds each attempt; ``retries`` is how many further attempts a
    call makes (on the next server each time) after an ``UNAVAILABLE`` or a
    timeout, waiting ``Backoff(backoff, max_backoff).delay(attempt)`` in
    between. Errors are ``IdGenError`` subclasses, the same the server raised
    (``UnknownBizType`` for ``NOT_FOUND``, ...); bad settings raise ``ConfigError``.

    ``token`` is sent with every call; ``ca_file`` turns TLS on (``tls=True`` does
    with the system's root CAs), ``cert_file`` and ``key_file`` add a client
    certificate (mutual TLS), ``tls_server_name`` checks the servers'
    certificates for that name rather than the address's host. Each of the
    first four is read from ``env`` (the process environment) when not given:
    ``IDGEN_TOKEN``, ``IDGEN_TLS_CA``, ``IDGEN_TLS_CERT``, ``IDGEN_TLS_KEY``.
    """

    def __init__(
        self,
        targets: str | Sequence[str] = DEFAULT_ADDRESS,
        *,
        timeout: float = 3.0,
        retries: int = 4,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls: bool | None = None,
        tls_server_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings = client_settings(
            targets, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff,
            token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file, tls=tls,
            tls_server_name=tls_server_name, env=env)
        self.targets = list(settings.targets)
        if settings.credentials is not None:
            self._channels = [grpc.secure_channel(t, settings.credentials, options=settings.options)
                              for t in self.targets]
        else:
            self._channels = [grpc.insecure_channel(t, options=settings.options) for t in self.targets]
        self._stubs = [idgen_pb2_grpc.IdGeneratorStub(c) for c in self._channels]
        self._admin = [idgen_pb2_grpc.AdminStub(c) for c in self._channels]
        self._health = [health_pb2_grpc.HealthStub(c) for c in self._channels]
        self._turn = itertools.count(random.randrange(len(self._stubs)))
        self._closed = threading.Event()

    def next_ids(self, biz_type: str, count: int) -> list[int]:
        """``count`` new IDs, increasing. Raises ``IdGenError`` subclasses."""
        return list(self._call("NextId", next_id_request(biz_type, count)).ids)

    def next_id(self, biz_type: str) -> int:
        """One new ID (a round trip per ID: prefer ``next_ids`` or ``LocalGenerator``)."""
        return self.next_ids(biz_type, 1)[0]

    def next_segment(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                     above_all: bool = False) -> Segment:
        """A fresh segment of ``steps`` steps whose IDs are all above ``floor``, validated.

        ``above_all``: also above every ID any database allocated before the call
        (``ServiceUnavailable`` while one of them cannot be read).
        """
        request = next_segment_request(biz_type, floor, steps, above_all)
        return segment_from(self._call("NextSegment", request), floor)

    def acquire_lease(self, biz_type: str, name: str, holder: str, ttl_ms: int, epoch: int = 0,
                      *, timeout: float | None = None) -> idgen_pb2.AcquireLeaseResponse:
        """Ask for the lease (``epoch`` 0) or renew it (the epoch held): the server's answer.
        ``idgen_client.Lease`` is what applications use; ``timeout`` bounds each attempt."""
        request = acquire_lease_request(biz_type, name, holder, ttl_ms, epoch)
        return self._call("AcquireLease", request, timeout=timeout)  # type: ignore[no-any-return]

    def release_lease(self, biz_type: str, name: str, holder: str, epoch: int, *,
                      timeout: float | None = None) -> int:
        """Free the lease held under ``epoch``: how many databases freed it."""
        request = release_lease_request(biz_type, name, holder, epoch)
        return int(self._call("ReleaseLease", request, timeout=timeout).released)

    def status(self) -> idgen_pb2.StatusResponse:
        """What a server holds: its buffers and databases (the ``Admin`` service; once tokens
        exist, the token needs the admin scope). With several targets, the next in turn answers."""
        return self._call("Status", idgen_pb2.StatusRequest(), self._admin)  # type: ignore[no-any-return]

    def health(self, service: str = "") -> str:
        """What a server's standard health service says of ``service`` (``""``: the server as
        a whole): ``"SERVING"``, ``"NOT_SERVING"`` or ``"SERVICE_UNKNOWN"``.
        ``ServiceUnavailable`` if no server answered."""
        try:
            reply = self._call("Check", health_pb2.HealthCheckRequest(service=service), self._health)
        except UnknownBizType:  # NOT_FOUND: the health service knows no such service
            return "SERVICE_UNKNOWN"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)  # type: ignore[no-any-return]

    def serving(self, service: str = "") -> bool:
        """Whether the health service reports ``service`` SERVING (see ``health``)."""
        return self.health(service) == "SERVING"

    def _call(self, method: str, request: Message, stubs: Sequence[Any] | None = None, *,
              timeout: float | None = None) -> Any:  # the generated stubs are untyped
        stubs = self._stubs if stubs is None else stubs
        settings = self._settings
        timeout = settings.timeout if timeout is None else min(timeout, settings.timeout)
        if self._closed.is_set():
            raise ServiceUnavailable("the ID client is closed")
        failures: list[grpc.RpcError] = []
        attempts = settings.backoff.attempts or 1
        for attempt in range(attempts):
            if attempt and self._closed.wait(settings.backoff.delay(attempt)):
                raise ServiceUnavailable("the ID client is closed")
            turn = next(self._turn) % len(stubs)
            try:
                return getattr(stubs[turn], method)(request, timeout=timeout,
                                                    metadata=settings.metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in RETRYABLE:
                    raise error_from(exc) from None
                if code is grpc.StatusCode.UNAVAILABLE:
                    self._raise_if_misconfigured(exc.details() or "", self.targets[turn])
                failures.append(exc)
        raise no_answer(settings, attempts, failures) from None

    def _raise_if_misconfigured(self, details: str, target: str) -> None:
        """Raise ``ServiceUnavailable`` at once, explained, for a failure no retry can fix."""
        settings = self._settings
        explanation = settings.explain(details)
        if explanation is None:
            return
        # A plaintext client's "closed" is only likely to be a TLS server: ask the server.
        if settings.needs_confirmation and \
                server_speaks_tls(target, timeout=settings.timeout) is not True:
            return
        raise ServiceUnavailable(explanation)

    def close(self) -> None:
        """Close the channels; calls in flight fail, later calls raise ``ServiceUnavailable``."""
        self._closed.set()
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never the token
        return f"RemoteClient({', '.join(self.targets)}{', TLS' if self._settings.tls else ''})"
