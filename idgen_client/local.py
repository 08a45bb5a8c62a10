"""The local generator: IDs as an in-process call, fed by ``NextSegment``.

Like Tinyid's client, it takes whole segments from a server and hands out their
IDs itself, double-buffered: ``next_id()`` is a function call in the steady
state, and the generator keeps serving through a server outage for as long as
its buffered segments last. IDs it had buffered when its process dies are
never used by anyone: wasted, never reissued.
"""
from __future__ import annotations

from collections.abc import Sequence

from idgen_client.buffer import DEFAULT_PRELOAD_AT, DoubleBuffer
from idgen_client.remote import DEFAULT_TARGET, RemoteClient
from idgen_client.segment import Segment, validate_biz_type
from idgen_client.sizing import AdaptiveSteps

__all__ = ["LocalGenerator"]


class LocalGenerator(DoubleBuffer):
    """Unique IDs of one biz type, generated in-process. Thread-safe.

    A ``DoubleBuffer`` whose segments come from ``NextSegment``, so
    ``next_id()`` is the buffer's own lock-free hot path. The IDs one generator
    hands out always increase, across segments too: each ``NextSegment`` asks
    for a segment above the one in use. Segment sizes adapt to the rate of use
    (``idgen_client.sizing``), so that a fetch finishes before it is needed.
    Give it server addresses, or a ``RemoteClient`` to share (which it then
    leaves open). Close it, or use it as a context manager, to stop its
    background fetches.
    """

    def __init__(
        self,
        biz_type: str,
        targets: str | Sequence[str] | RemoteClient = DEFAULT_TARGET,
        *,
        preload_at: float = DEFAULT_PRELOAD_AT,
        floor: int = 0,
        wait_timeout: float = 30.0,
    ) -> None:
        self.biz_type = validate_biz_type(biz_type)
        if isinstance(targets, RemoteClient):
            self._client, self._owns_client = targets, False
        else:
            self._client, self._owns_client = RemoteClient(targets), True
        client = self._client
        super().__init__(
            AdaptiveSteps(lambda floor, steps: client.next_segment(biz_type, floor, steps)),
            name=biz_type,
            preload_at=preload_at,
            floor=floor,
            wait_timeout=wait_timeout,
        )

    def skip_past_all(self) -> Segment:
        """Hand out only IDs above every ID any database allocated for the biz type
        before this call, by any process; blocks on one ``NextSegment`` (``above_all``).

        With one database the generator's IDs are that anyway; with several, whose
        ``max_id``s lag each other, this is what lets a restarted process stay above
        everything issued before it. ``ServiceUnavailable`` while any database of the
        server cannot be read. Returns the new current segment (see ``skip_past``).
        """
        client, biz_type = self._client, self.biz_type
        return self.skip_past(
            0, fetch=lambda floor: client.next_segment(biz_type, floor, above_all=True))

    def close(self, timeout: float = 5.0) -> None:
        """Stop background fetches and close the channels this generator opened."""
        super().close(timeout)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> LocalGenerator:
        return self
