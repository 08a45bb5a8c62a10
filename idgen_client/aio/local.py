"""The asyncio local generator: IDs in-process, segments refilled by tasks on the loop.

``LocalGenerator``'s twin for code on an event loop. It takes whole segments with
``NextSegment`` and hands out their IDs itself, double-buffered
(``idgen_core.async_buffer``): in the steady state ``await generator.next_id()`` suspends
nothing and makes no call, and it keeps serving through a server outage for as long as its
buffered segments last. Fetches are tasks on the running loop; a caller that finds both
segments used up awaits one, and the loop runs on meanwhile.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from idgen_client.aio.remote import AsyncRemoteClient
from idgen_core.async_buffer import AsyncDoubleBuffer
from idgen_core.pair import DEFAULT_PRELOAD_AT, DEFAULT_WAIT_TIMEOUT
from idgen_core.segment import Segment, validate_biz_type
from idgen_core.sizing import AdaptiveSteps
from idgen_wire.address import DEFAULT_ADDRESS

__all__ = ["AsyncLocalGenerator"]


class AsyncLocalGenerator:
    """Unique IDs of one biz type, generated in-process, for asyncio code.

    The guarantees of ``LocalGenerator`` (IDs unique, and increasing across segments; sizes
    that adapt to the rate of use), awaited: ``next_id()`` and ``next_ids()`` are coroutines
    that return at once while IDs are buffered, and wait at most ``wait_timeout`` seconds
    for a segment otherwise. Use it from one event loop. Give it server addresses, or an
    ``AsyncRemoteClient`` to share (which it then leaves open); ``async with``, or
    ``aclose()``, cancels its fetch in flight and closes what it opened.
    """

    next_id: Callable[[], Awaitable[int]]
    """The next ID: unique, and greater than every ID this generator gave before. The
    buffer's own bound method, not a wrapper: a wrapping coroutine would double the cost."""

    next_ids: Callable[[int], Awaitable[list[int]]]
    """``count`` IDs, increasing (they may span segments); see ``next_id``."""

    def __init__(
        self,
        biz_type: str,
        targets: str | Sequence[str] | AsyncRemoteClient = DEFAULT_ADDRESS,
        *,
        preload_at: float = DEFAULT_PRELOAD_AT,
        floor: int = 0,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls: bool | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        self.biz_type = validate_biz_type(biz_type)
        if isinstance(targets, AsyncRemoteClient):
            self._client, self._owns_client = targets, False
        else:
            self._client = AsyncRemoteClient(
                targets, token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                tls=tls, tls_server_name=tls_server_name)
            self._owns_client = True
        client, sizing = self._client, AdaptiveSteps(name=biz_type)

        async def fetch(floor: int) -> Segment:
            segment = await client.next_segment(biz_type, floor, sizing.steps)
            sizing.arrived()
            return segment

        self._buffer = AsyncDoubleBuffer(fetch, name=biz_type, preload_at=preload_at,
                                         floor=floor, wait_timeout=wait_timeout)
        self.next_id = self._buffer.next_id
        self.next_ids = self._buffer.next_ids

    def next_id_nowait(self) -> int:
        """The next ID if one is buffered, else ``idgen_core.async_buffer.WouldWait`` (then
        ``await ready()``): for callers that must not suspend between reading their own
        state and drawing an ID, as ``AsyncSequencer``."""
        return self._buffer.next_id_nowait()

    async def ready(self) -> None:
        """Return once an ID can be had without waiting; raises what ``next_id`` would."""
        await self._buffer.ready()

    @property
    def floor(self) -> int:
        """Every ID this generator hands out from now on is above this value."""
        return self._buffer.floor

    @property
    def fetches(self) -> int:
        """Segments fetched so far."""
        return self._buffer.fetches

    @property
    def waits(self) -> int:
        """Times a caller found both segments used up and had to wait for a fetch."""
        return self._buffer.waits

    async def skip_past(self, floor: int) -> Segment:
        """Hand out only IDs above ``floor`` from now on (``LocalGenerator.skip_past``)."""
        return await self._buffer.skip_past(floor)

    async def skip_past_all(self) -> Segment:
        """Hand out only IDs above every ID any database allocated for the biz type before
        this call, by any process (``LocalGenerator.skip_past_all``)."""
        client, biz_type = self._client, self.biz_type

        async def above_all(floor: int) -> Segment:
            return await client.next_segment(biz_type, floor, above_all=True)

        return await self._buffer.skip_past(0, fetch=above_all)

    async def aclose(self) -> None:
        """Cancel the fetch in flight and close the channels this generator opened."""
        await self._buffer.aclose()
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> AsyncLocalGenerator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
