"""The remote client: ``NextId`` and ``NextSegment`` over gRPC, with failover.

It spreads calls across the servers it is given (round robin) and, when one
answers ``UNAVAILABLE`` or does not answer in time, retries on the next with
exponential backoff and jitter. Retrying is always safe: a call whose answer
was lost wastes IDs, it never causes one to be handed out twice.
"""
from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from idgen_client._proto import idgen_pb2, idgen_pb2_grpc
from idgen_client._status import error_for
from idgen_client.errors import InvalidRequest, ServiceUnavailable, safe_repr
from idgen_client.segment import INT64_MAX, Segment, validate_biz_type, validate_count
from idgen_client.sizing import MAX_STEPS

__all__ = ["DEFAULT_TARGET", "RemoteClient"]

DEFAULT_TARGET = "127.0.0.1:50051"
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# gRPC's default reconnect backoff grows to 120 s: after a server was down for a while, a
# channel kept failing calls for seconds (minutes after long outages) once it was back.
# A dead server costs a refused connect per second at most; a returned one is used at once.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def parse_targets(targets: str | Sequence[str], *, allow_port_0: bool = False) -> tuple[str, ...]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` -> ``("a:1", "b:2")``; raises ``InvalidRequest``.

    ``allow_port_0`` is for listen addresses, where 0 asks for any free port.
    """
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    parsed = tuple(t.strip() for t in items if t.strip())
    if not parsed:
        raise InvalidRequest("no server address given: pass HOST:PORT, e.g. 127.0.0.1:50051")
    for target in parsed:
        host, sep, port = target.rpartition(":")
        lowest = 0 if allow_port_0 else 1
        if (not sep or not host or "@" in host or "/" in host or not port.isdigit()
                or not lowest <= int(port) < 65536):
            raise InvalidRequest(f"server address {safe_repr(target)} is not HOST:PORT")
    return parsed


class RemoteClient:
    """Calls idgen servers. Thread-safe; a context manager that closes its channels.

    ``timeout`` bounds each attempt; ``retries`` is how many further attempts a
    call makes (on the next server each time) after an ``UNAVAILABLE`` or a
    timeout, sleeping ``backoff * 2**attempt`` (capped at ``max_backoff``, with
    full jitter) in between. Errors are ``IdGenError`` subclasses, the same the
    server raised (``UnknownBizType`` for ``NOT_FOUND``, ...).
    """

    def __init__(
        self,
        targets: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float = 3.0,
        retries: int = 4,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        if timeout <= 0:
            raise InvalidRequest(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise InvalidRequest(f"retries must be at least 0, got {retries}")
        self.targets = parse_targets(targets)
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._channels = [grpc.insecure_channel(t, options=_CHANNEL_OPTIONS) for t in self.targets]
        self._stubs = [idgen_pb2_grpc.IdGeneratorStub(c) for c in self._channels]
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
        if isinstance(floor, bool) or not isinstance(floor, int) or not 0 <= floor <= INT64_MAX:
            raise InvalidRequest(f"floor must be a whole number in 0..2^63-1, got {floor!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise InvalidRequest(f"steps must be a whole number in 1..{MAX_STEPS}, got {steps!r}")
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

    def _call(self, method: str, request: Message) -> Any:  # the generated stubs are untyped
        if self._closed.is_set():
            raise ServiceUnavailable("the ID client is closed")
        last: grpc.RpcError | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                delay = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
                if self._closed.wait(random.uniform(delay / 2, delay)):
                    break
            stub = self._stubs[next(self._turn) % len(self._stubs)]
            try:
                return getattr(stub, method)(request, timeout=self._timeout)
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in _RETRYABLE:
                    raise error_for(code, exc.details() or "") from None
                last = exc
        tried = ", ".join(self.targets)
        detail = last.details() if last is not None else "client closed"
        raise ServiceUnavailable(
            f"no ID server answered after {self._retries + 1} attempts ({tried}): {detail}"
        ) from None

    def close(self) -> None:
        """Close the channels; calls in flight fail, later calls raise ``ServiceUnavailable``."""
        self._closed.set()
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


