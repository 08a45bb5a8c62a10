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
import os
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idgen_client.tls import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    channel_credentials,
    explain_failure,
    server_speaks_tls,
)
from idgen_core.errors import ConfigError, InvalidRequest, ServiceUnavailable, UnknownBizType
from idgen_core.leases import validate_holder, validate_lease_name, validate_ttl_ms
from idgen_core.retry import Backoff
from idgen_core.segment import (
    Segment,
    validate_biz_type,
    validate_count,
    validate_floor,
    validate_steps,
)
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from idgen_wire.address import DEFAULT_ADDRESS, parse_targets
from idgen_wire.auth import TOKEN_ENV, bearer
from idgen_wire.status import error_from

__all__ = ["RemoteClient"]

_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# gRPC's default reconnect backoff grows to 120 s: after a server was down for a while, a
# channel kept failing calls for seconds (minutes after long outages) once it was back.
# A dead server costs a refused connect per second at most; a returned one is used at once.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


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
        env = os.environ if env is None else env
        token = token if token is not None else env.get(TOKEN_ENV) or None
        ca_file = ca_file or env.get(CA_FILE[1]) or None
        cert_file = cert_file or env.get(CERT_FILE[1]) or None
        key_file = key_file or env.get(KEY_FILE[1]) or None
        self._tls = bool(tls) or bool(ca_file or cert_file)
        if tls is False and (ca_file or cert_file):
            raise ConfigError("tls=False, but TLS files are given (ca_file, cert_file or IDGEN_TLS_*)")
        self._client_cert = cert_file is not None
        self._metadata = _token_metadata(token)
        if not timeout > 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a whole number, at least 0, got {retries!r}")
        self.targets = parse_targets(targets)
        self._timeout = timeout
        self._backoff = Backoff(backoff, max_backoff, attempts=retries + 1)
        if self._tls:
            credentials = channel_credentials(ca_file, cert_file, key_file)
            options = _CHANNEL_OPTIONS + ((("grpc.ssl_target_name_override", tls_server_name),)
                                          if tls_server_name else ())
            self._channels = [grpc.secure_channel(t, credentials, options=options) for t in self.targets]
        else:
            self._channels = [grpc.insecure_channel(t, options=_CHANNEL_OPTIONS) for t in self.targets]
        self._stubs = [idgen_pb2_grpc.IdGeneratorStub(c) for c in self._channels]
        self._admin = [idgen_pb2_grpc.AdminStub(c) for c in self._channels]
        self._health = [health_pb2_grpc.HealthStub(c) for c in self._channels]
        self._turn = itertools.count(random.randrange(len(self._stubs)))
        self._closed = threading.Event()

    def next_ids(self, biz_type: str, count: int) -> list[int]:
        """``count`` new IDs, increasing. Raises ``IdGenError`` subclasses."""
        validate_biz_type(biz_type)
        request = idgen_pb2.NextIdRequest(biz_type=biz_type, count=validate_count(count))
        return list(self._call("NextId", request).ids)

    def next_id(self, biz_type: str) -> int:
        """One new ID (a round trip per ID: prefer ``next_ids`` or ``LocalGenerator``)."""
        return self.next_ids(biz_type, 1)[0]

    def next_segment(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                     above_all: bool = False) -> Segment:
        """A fresh segment of ``steps`` steps whose IDs are all above ``floor``, validated.

        ``above_all``: also above every ID any database allocated before the call
        (``ServiceUnavailable`` while one of them cannot be read).
        """
        validate_biz_type(biz_type)
        validate_floor(floor)
        validate_steps(steps)
        request = idgen_pb2.NextSegmentRequest(biz_type=biz_type, floor=floor, steps=steps,
                                               above_all=above_all)
        reply = self._call("NextSegment", request)
        try:
            segment = Segment(reply.start, reply.end, reply.delta, reply.remainder)
        except InvalidRequest as exc:
            raise ServiceUnavailable(f"the server sent a malformed segment ({exc})") from None
        if segment.start <= floor:
            raise ServiceUnavailable(
                f"the server sent a segment starting at {segment.start}, not above the floor {floor}"
            )
        return segment

    def acquire_lease(self, biz_type: str, name: str, holder: str, ttl_ms: int, epoch: int = 0,
                      *, timeout: float | None = None) -> idgen_pb2.AcquireLeaseResponse:
        """Ask for the lease (``epoch`` 0) or renew it (the epoch held): the server's answer.
        ``idgen_client.Lease`` is what applications use; ``timeout`` bounds each attempt."""
        validate_biz_type(biz_type)
        validate_lease_name(name)
        validate_holder(holder)
        validate_ttl_ms(ttl_ms)
        request = idgen_pb2.AcquireLeaseRequest(biz_type=biz_type, name=name, holder=holder,
                                                ttl_ms=ttl_ms, epoch=epoch)
        return self._call("AcquireLease", request, timeout=timeout)  # type: ignore[no-any-return]

    def release_lease(self, biz_type: str, name: str, holder: str, epoch: int, *,
                      timeout: float | None = None) -> int:
        """Free the lease held under ``epoch``: how many databases freed it."""
        request = idgen_pb2.ReleaseLeaseRequest(biz_type=biz_type, name=name, holder=holder,
                                                epoch=epoch)
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
        timeout = self._timeout if timeout is None else min(timeout, self._timeout)
        if self._closed.is_set():
            raise ServiceUnavailable("the ID client is closed")
        last: grpc.RpcError | None = None
        attempts = self._backoff.attempts or 1
        for attempt in range(attempts):
            if attempt and self._closed.wait(self._backoff.delay(attempt)):
                break
            turn = next(self._turn) % len(stubs)
            try:
                return getattr(stubs[turn], method)(request, timeout=timeout,
                                                    metadata=self._metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in _RETRYABLE:
                    raise error_from(exc) from None
                if code is grpc.StatusCode.UNAVAILABLE:
                    self._raise_if_misconfigured(exc.details() or "", self.targets[turn])
                last = exc
        tried = ", ".join(self.targets)
        detail = last.details() if last is not None else "client closed"
        raise ServiceUnavailable(
            f"no ID server answered after {attempts} attempts ({tried}): {detail}"
        ) from None

    def _raise_if_misconfigured(self, details: str, target: str) -> None:
        """Raise ``ServiceUnavailable`` at once, explained, for a failure no retry can fix."""
        explanation = explain_failure(details, tls=self._tls, client_cert=self._client_cert)
        if explanation is None:
            return
        # A plaintext client's "closed" is only likely to be a TLS server: ask the server.
        if not self._tls and server_speaks_tls(target, timeout=self._timeout) is not True:
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
        return f"RemoteClient({', '.join(self.targets)}{', TLS' if self._tls else ''})"


def _token_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The call metadata carrying ``token``; ``ConfigError`` (never quoting it) if it cannot be sent."""
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip() or not token.isascii() \
            or not token.isprintable() or any(c.isspace() for c in token.strip()):
        raise ConfigError(f"the token ({TOKEN_ENV} or token=) must be one word of printable ASCII, "
                          "as `idgen token create` printed it")
    return (bearer(token.strip()),)


