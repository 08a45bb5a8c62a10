"""idgen's client library for asyncio, on ``grpc.aio``.

- ``AsyncRemoteClient``: ``NextId``/``NextSegment`` over gRPC with failover.
- ``AsyncLocalGenerator``: IDs in-process, segments refilled by tasks on the loop.
- ``AsyncSequencer``: per-group message seqs; its loader may be a coroutine function.

The same guarantees, errors (``idgen_client``'s), failover and retries as the synchronous
classes, awaited: nothing here blocks the event loop. Each is used from one event loop and
closed with ``async with`` (or ``aclose()``/``close()``), which leaves no task behind.
"""
from __future__ import annotations

from idgen_client.aio.local import AsyncLocalGenerator
from idgen_client.aio.remote import AsyncRemoteClient
from idgen_client.aio.sequencer import AsyncSequencer

__all__ = ["AsyncLocalGenerator", "AsyncRemoteClient", "AsyncSequencer"]
