"""What the two remote clients share, so that they cannot disagree on a rule.

``RemoteClient`` (threads) and ``idgen_client.aio.AsyncRemoteClient`` (asyncio) differ only in
how they wait. Everything else is here, once: their settings (targets, timeouts, the retry
policy, the token and TLS, each from an argument or the environment), the requests they build
from validated arguments, the replies they check, which failures are retried, and the error a
call that never got an answer ends with.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from idgen_client.tls import CA_FILE, CERT_FILE, KEY_FILE, channel_credentials, explain_failure
from idgen_core.errors import BizTypeMoving, ConfigError, InvalidRequest, ServiceUnavailable
from idgen_core.leases import validate_holder, validate_lease_name, validate_ttl_ms
from idgen_core.retry import Backoff
from idgen_core.segment import (
    Segment,
    validate_biz_type,
    validate_count,
    validate_floor,
    validate_steps,
)
from idgen_wire import idgen_pb2
from idgen_wire.address import parse_targets
from idgen_wire.auth import TOKEN_ENV, bearer
from idgen_wire.status import error_from

__all__ = [
    "CHANNEL_OPTIONS",
    "RETRYABLE",
    "ClientSettings",
    "acquire_lease_request",
    "client_settings",
    "next_id_request",
    "next_segment_request",
    "no_answer",
    "release_lease_request",
    "segment_from",
]

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The codes a call retries on the next server; every other code is the answer."""

# gRPC's default reconnect backoff grows to 120 s: after a server was down for a while, a
# channel kept failing calls for seconds (minutes after long outages) once it was back.
# A dead server costs a refused connect per second at most; a returned one is used at once.
CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True)
class ClientSettings:
    """A client's settings, validated (``client_settings``); the token only inside ``metadata``."""

    targets: tuple[str, ...]
    timeout: float
    """Seconds each attempt may take."""
    backoff: Backoff
    """The wait between attempts, and how many there are."""
    metadata: tuple[tuple[str, str], ...] | None
    tls: bool
    client_cert: bool
    credentials: grpc.ChannelCredentials | None
    """None without TLS."""
    options: tuple[tuple[str, object], ...]
    """The channels' options."""

    def __repr__(self) -> str:  # never the token
        return f"ClientSettings({', '.join(self.targets)}{', TLS' if self.tls else ''})"

    def explain(self, details: str) -> str | None:
        """What an ``UNAVAILABLE``'s details mean when no retry can fix them, else None; for a
        plaintext client, only a likely reading, to be confirmed (``needs_confirmation``)."""
        return explain_failure(details, tls=self.tls, client_cert=self.client_cert)

    @property
    def needs_confirmation(self) -> bool:
        """Whether ``explain``'s reading must be confirmed by asking the server
        (``idgen_client.tls.server_speaks_tls``): a plaintext client's "closed" only
        suggests a TLS server."""
        return not self.tls


def client_settings(
    targets: str | Sequence[str],
    *,
    timeout: float,
    retries: int,
    backoff: float,
    max_backoff: float,
    token: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    tls: bool | None,
    tls_server_name: str | None,
    env: Mapping[str, str] | None,
) -> ClientSettings:
    """The settings the clients' constructors take, validated; ``ConfigError`` names the
    one that is wrong. The token and TLS files not given are read from ``env`` (the process
    environment by default): ``IDGEN_TOKEN``, ``IDGEN_TLS_CA``, ``IDGEN_TLS_CERT``,
    ``IDGEN_TLS_KEY``."""
    env = os.environ if env is None else env
    token = token if token is not None else env.get(TOKEN_ENV) or None
    ca_file = ca_file or env.get(CA_FILE[1]) or None
    cert_file = cert_file or env.get(CERT_FILE[1]) or None
    key_file = key_file or env.get(KEY_FILE[1]) or None
    use_tls = bool(tls) or bool(ca_file or cert_file)
    if tls is False and (ca_file or cert_file):
        raise ConfigError("tls=False, but TLS files are given (ca_file, cert_file or IDGEN_TLS_*)")
    metadata = _token_metadata(token)
    if not timeout > 0:
        raise ConfigError(f"timeout must be positive, got {timeout}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number, at least 0, got {retries!r}")
    parsed = tuple(parse_targets(targets))
    policy = Backoff(backoff, max_backoff, attempts=retries + 1)
    credentials = channel_credentials(ca_file, cert_file, key_file) if use_tls else None
    options = CHANNEL_OPTIONS
    if use_tls and tls_server_name:
        options += (("grpc.ssl_target_name_override", tls_server_name),)
    return ClientSettings(targets=parsed, timeout=timeout, backoff=policy, metadata=metadata,
                          tls=use_tls, client_cert=cert_file is not None,
                          credentials=credentials, options=options)


def _token_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The call metadata carrying ``token``; ``ConfigError`` (never quoting it) if it cannot be sent."""
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip() or not token.isascii() \
            or not token.isprintable() or any(c.isspace() for c in token.strip()):
        raise ConfigError(f"the token ({TOKEN_ENV} or token=) must be one word of printable ASCII, "
                          "as `idgen token create` printed it")
    return (bearer(token.strip()),)


def next_id_request(biz_type: str, count: int) -> idgen_pb2.NextIdRequest:
    validate_biz_type(biz_type)
    return idgen_pb2.NextIdRequest(biz_type=biz_type, count=validate_count(count))


def next_segment_request(biz_type: str, floor: int, steps: int,
                         above_all: bool) -> idgen_pb2.NextSegmentRequest:
    validate_biz_type(biz_type)
    validate_floor(floor)
    validate_steps(steps)
    return idgen_pb2.NextSegmentRequest(biz_type=biz_type, floor=floor, steps=steps,
                                        above_all=above_all)


def segment_from(reply: idgen_pb2.NextSegmentResponse, floor: int) -> Segment:
    """The segment a ``NextSegment`` reply holds, checked: ``ServiceUnavailable`` (a server to
    distrust, not a caller's mistake) if it is malformed or not above ``floor``."""
    try:
        segment = Segment(reply.start, reply.end, reply.delta, reply.remainder)
    except InvalidRequest as exc:
        raise ServiceUnavailable(f"the server sent a malformed segment ({exc})") from None
    if segment.start <= floor:
        raise ServiceUnavailable(
            f"the server sent a segment starting at {segment.start}, not above the floor {floor}"
        )
    return segment


def acquire_lease_request(biz_type: str, name: str, holder: str, ttl_ms: int,
                          epoch: int) -> idgen_pb2.AcquireLeaseRequest:
    validate_biz_type(biz_type)
    validate_lease_name(name)
    validate_holder(holder)
    validate_ttl_ms(ttl_ms)
    return idgen_pb2.AcquireLeaseRequest(biz_type=biz_type, name=name, holder=holder,
                                         ttl_ms=ttl_ms, epoch=epoch)


def release_lease_request(biz_type: str, name: str, holder: str,
                          epoch: int) -> idgen_pb2.ReleaseLeaseRequest:
    return idgen_pb2.ReleaseLeaseRequest(biz_type=biz_type, name=name, holder=holder, epoch=epoch)


def no_answer(settings: ClientSettings, attempts: int,
              failures: Sequence[grpc.RpcError]) -> ServiceUnavailable:
    """The error of a call whose ``attempts`` attempts all failed (``failures``, in order):
    ``BizTypeMoving`` if a server answered that the biz type is paused (a later attempt may
    have timed out waiting on the same pause), else ``ServiceUnavailable`` naming the servers."""
    for failure in reversed(failures):
        if failure.code() is grpc.StatusCode.UNAVAILABLE:
            paused = error_from(failure)
            if isinstance(paused, BizTypeMoving):
                return paused
    last = failures[-1] if failures else None
    detail = last.details() if last is not None else "no attempt was made"
    return ServiceUnavailable(
        f"no ID server answered after {attempts} attempts ({', '.join(settings.targets)}): {detail}")
