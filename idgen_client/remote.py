"""The remote client: ``NextId`` and ``NextSegment`` over gRPC, with failover.

It spreads calls across the servers it is given (round robin) and, when one
answers ``UNAVAILABLE`` or does not answer in time, retries on the next after
the shared backoff (``idgen_core.retry``). Retrying is always safe: a call whose answer
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

from idgen_core.errors import ConfigError, InvalidRequest, ServiceUnavailable
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
from idgen_wire.status import error_for

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
    """

    def __init__(
        self,
        targets: str | Sequence[str] = DEFAULT_ADDRESS,
        *,
        timeout: float = 3.0,
        retries: int = 4,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        if not timeout > 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a whole number, at least 0, got {retries!r}")
        self.targets = parse_targets(targets)
        self._timeout = timeout
        self._backoff = Backoff(backoff, max_backoff, attempts=retries + 1)
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

    def _call(self, method: str, request: Message) -> Any:  # the generated stubs are untyped
        if self._closed.is_set():
            raise ServiceUnavailable("the ID client is closed")
        last: grpc.RpcError | None = None
        attempts = self._backoff.attempts or 1
        for attempt in range(attempts):
            if attempt and self._closed.wait(self._backoff.delay(attempt)):
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
            f"no ID server answered after {attempts} attempts ({tried}): {detail}"
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


