"""The asyncio remote client: ``NextId``, ``NextSegment`` and leases over ``grpc.aio``.

``RemoteClient``'s twin for code on an event loop: the same settings, requests, checks,
errors, failover and retries (``idgen_client.calls``), awaited instead of blocking. Nothing
it does blocks the loop: calls are ``grpc.aio`` calls, the waits between attempts are
``asyncio`` sleeps, and the one blocking step (asking a server that closed the connection
whether it speaks TLS) runs in a worker thread.
"""
from __future__ import annotations

import asyncio
import itertools
import random
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

__all__ = ["AsyncRemoteClient"]


class AsyncRemoteClient:
    """Calls idgen servers from asyncio code; ``async with`` closes its channels.

    Its arguments, guarantees and errors are ``RemoteClient``'s (token and TLS from the
    environment when not given). Its channels are opened by the first call, on the loop
    that makes it: use one client from one event loop.
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
        self._settings = client_settings(
            targets, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff,
            token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file, tls=tls,
            tls_server_name=tls_server_name, env=env)
        self.targets = list(self._settings.targets)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: dict[str, list[Any]] = {}
        self._turn = itertools.count(random.randrange(len(self.targets)))
        self._closed = False
        self._closing = asyncio.Event()  # binds to a loop only when first awaited

    async def next_ids(self, biz_type: str, count: int) -> list[int]:
        """``count`` new IDs, increasing. Raises ``IdGenError`` subclasses."""
        return list((await self._call("NextId", next_id_request(biz_type, count))).ids)

    async def next_id(self, biz_type: str) -> int:
        """One new ID (a round trip per ID: prefer ``next_ids`` or ``AsyncLocalGenerator``)."""
        return (await self.next_ids(biz_type, 1))[0]

    async def next_segment(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                           above_all: bool = False) -> Segment:
        """A fresh segment whose IDs are all above ``floor`` (``RemoteClient.next_segment``)."""
        request = next_segment_request(biz_type, floor, steps, above_all)
        return segment_from(await self._call("NextSegment", request), floor)

    async def acquire_lease(self, biz_type: str, name: str, holder: str, ttl_ms: int,
                            epoch: int = 0, *,
                            timeout: float | None = None) -> idgen_pb2.AcquireLeaseResponse:
        """Ask for the lease (``epoch`` 0) or renew it: the server's answer."""
        request = acquire_lease_request(biz_type, name, holder, ttl_ms, epoch)
        return await self._call("AcquireLease", request, timeout=timeout)  # type: ignore[no-any-return]

    async def release_lease(self, biz_type: str, name: str, holder: str, epoch: int, *,
                            timeout: float | None = None) -> int:
        """Free the lease held under ``epoch``: how many databases freed it."""
        request = release_lease_request(biz_type, name, holder, epoch)
        return int((await self._call("ReleaseLease", request, timeout=timeout)).released)

    async def status(self) -> idgen_pb2.StatusResponse:
        """What a server holds (``RemoteClient.status``)."""
        return await self._call("Status", idgen_pb2.StatusRequest(), "admin")  # type: ignore[no-any-return]

    async def health(self, service: str = "") -> str:
        """What a server's health service says of ``service`` (``RemoteClient.health``)."""
        try:
            reply = await self._call("Check", health_pb2.HealthCheckRequest(service=service),
                                     "health")
        except UnknownBizType:  # NOT_FOUND: the health service knows no such service
            return "SERVICE_UNKNOWN"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)  # type: ignore[no-any-return]

    async def serving(self, service: str = "") -> bool:
        """Whether the health service reports ``service`` SERVING."""
        return await self.health(service) == "SERVING"

    def _open(self) -> dict[str, list[Any]]:
        """The stubs, their channels opened on the running loop by the first call."""
        if not self._stubs:
            settings = self._settings
            if settings.credentials is not None:
                self._channels = [grpc.aio.secure_channel(t, settings.credentials,
                                                          options=settings.options)
                                  for t in self.targets]
            else:
                self._channels = [grpc.aio.insecure_channel(t, options=settings.options)
                                  for t in self.targets]
            self._stubs = {
                "ids": [idgen_pb2_grpc.IdGeneratorStub(c) for c in self._channels],
                "admin": [idgen_pb2_grpc.AdminStub(c) for c in self._channels],
                "health": [health_pb2_grpc.HealthStub(c) for c in self._channels],
            }
        return self._stubs

    async def _call(self, method: str, request: Message, service: str = "ids", *,
                    timeout: float | None = None) -> Any:  # the generated stubs are untyped
        settings = self._settings
        timeout = settings.timeout if timeout is None else min(timeout, settings.timeout)
        if self._closed:
            raise ServiceUnavailable("the ID client is closed")
        stubs = self._open()[service]
        failures: list[grpc.RpcError] = []
        attempts = settings.backoff.attempts or 1
        for attempt in range(attempts):
            if attempt and await self._closed_within(settings.backoff.delay(attempt)):
                raise ServiceUnavailable("the ID client is closed")
            turn = next(self._turn) % len(stubs)
            try:
                return await getattr(stubs[turn], method)(request, timeout=timeout,
                                                          metadata=settings.metadata)
            except asyncio.CancelledError:
                # grpc.aio cancels the calls of a channel it closes: that is the client's
                # close, not the caller's cancellation, unless the caller's task is cancelled.
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    raise ServiceUnavailable("the ID client is closed") from None
                raise
            except grpc.RpcError as exc:
                if self._closed:
                    raise ServiceUnavailable("the ID client is closed") from None
                code = exc.code()
                if code not in RETRYABLE:
                    raise error_from(exc) from None
                if code is grpc.StatusCode.UNAVAILABLE:
                    await self._raise_if_misconfigured(exc.details() or "", self.targets[turn])
                failures.append(exc)
        raise no_answer(settings, attempts, failures) from None

    async def _closed_within(self, delay: float) -> bool:
        """Wait ``delay`` seconds, or less if the client is closed meanwhile: whether it was."""
        try:
            async with asyncio.timeout(delay):
                await self._closing.wait()
        except TimeoutError:
            pass
        return self._closed

    async def _raise_if_misconfigured(self, details: str, target: str) -> None:
        """Raise ``ServiceUnavailable`` at once, explained, for a failure no retry can fix."""
        settings = self._settings
        explanation = settings.explain(details)
        if explanation is None:
            return
        if settings.needs_confirmation:
            # A blocking handshake: in a worker thread, so that the loop runs on meanwhile.
            speaks = await asyncio.to_thread(server_speaks_tls, target, timeout=settings.timeout)
            if speaks is not True:
                return
        raise ServiceUnavailable(explanation)

    async def close(self) -> None:
        """Close the channels; calls in flight fail, later calls raise ``ServiceUnavailable``."""
        self._closed = True
        self._closing.set()
        channels, self._channels, self._stubs = self._channels, [], {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncRemoteClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:  # never the token
        return f"AsyncRemoteClient({', '.join(self.targets)}{', TLS' if self._settings.tls else ''})"
