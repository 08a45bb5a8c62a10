"""The asyncio sequencer: message seqs per chat group, stamped on an event loop.

``AsyncSequencer`` is ``Sequencer`` with every wait awaited: its generator is an
``AsyncLocalGenerator``, its loader may be a coroutine function (a query on an asyncio
database driver), and a stamp that has to wait for a segment, a load or a take-over
suspends instead of blocking the loop.

It does not re-implement the sequencer: every rule (a group's seqs increase, retried
messages get their first stamp, forgotten groups start above the horizon, only a lease's
holder stamps) stays in ``idgen_client.sequencer``, once. It runs that sequencer over a
generator and a loader that never block (``_Resumable``): where the sequencer would wait,
they raise ``_Suspended`` with what is to be awaited; the stamp awaits it and runs again,
and this time finds the segment buffered, the group's load at hand, the generator moved.
Running again is safe because a stamp changes nothing until it succeeds: a seq drawn by
an attempt that then suspends is never handed out (wasted, like any buffered ID).

Nothing awaits while one of the sequencer's locks is held, so within one loop they are
never contended. In the steady state a stamp suspends nothing: it is the sequencer's own
``stamp`` inside one coroutine call (benchmarks/RESULTS.md has the cost).
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Protocol

from idgen_client.sequencer import (
    DEFAULT_MAX_GROUPS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_WINDOW,
    GroupId,
    LeaseTerm,
    Sequencer,
    Stamp,
)
from idgen_core.async_buffer import WouldWait
from idgen_core.errors import ConfigError, ServiceUnavailable
from idgen_core.segment import Segment

__all__ = ["AsyncIdSource", "AsyncLoader", "AsyncSequencer"]

AsyncLoader = Callable[[GroupId], "int | Awaitable[int]"]
"""``loader(group_id)``: the highest seq the group is known to have (0 if none), or an
awaitable of it (a coroutine function is the usual loader)."""

_MAX_SUSPENSIONS = 16
"""Waits one stamp may make (a segment, a load, a skip, a take-over each count one; a stamp
needs at most four) before it is called stuck: a generator that keeps running dry."""


class AsyncIdSource(Protocol):
    """What the asyncio sequencer needs of a generator (``AsyncLocalGenerator`` has it)."""

    def next_id_nowait(self) -> int: ...

    async def ready(self) -> None: ...

    async def skip_past(self, floor: int) -> Segment: ...

    async def skip_past_all(self) -> Segment: ...

    @property
    def floor(self) -> int: ...


class _Pending:
    """What the waits of one stamp brought: the groups' loads, each with the lease's epoch
    when it began (a load is good only for a stamp under that epoch: ``Sequencer._stamp``)."""

    __slots__ = ("loaded",)

    def __init__(self) -> None:
        self.loaded: dict[GroupId, tuple[int, object]] = {}


class _Suspended(Exception):
    """Raised through the sequencer where a stamp must wait: ``wait(pending)`` is the
    awaiting to do, which leaves its result in ``pending`` for the next attempt."""

    def __init__(self, wait: Callable[[_Pending], Awaitable[None]]) -> None:
        super().__init__()
        self.wait = wait


class _Resumable:
    """The generator and loader the sequencer sees: they never block (module notes)."""

    def __init__(self, generator: AsyncIdSource, loader: AsyncLoader | None,
                 lease: LeaseTerm | None) -> None:
        self._generator = generator
        self._loader = loader
        self._lease = lease
        self.pending: _Pending | None = None  # the running attempt's, while it runs
        # The segment fetched above all for an epoch, shared by every stamp that waits for
        # the take-over of that epoch (or for start(), epoch 0): one fetch, not one each.
        self._above: tuple[int, Segment] | None = None
        self._above_lock = asyncio.Lock()

    def next_id(self) -> int:
        try:
            return self._generator.next_id_nowait()
        except WouldWait:
            raise _Suspended(self._ready) from None

    async def _ready(self, pending: _Pending) -> None:
        await self._generator.ready()

    @property
    def floor(self) -> int:
        return self._generator.floor

    def skip_past(self, floor: int) -> Segment:
        async def skip(pending: _Pending) -> None:
            await self._generator.skip_past(floor)

        raise _Suspended(skip)

    def _epoch(self) -> int:
        return self._lease.term[0] if self._lease is not None else 0

    def skip_past_all(self) -> Segment:
        """The segment fetched above all for the lease's epoch now, once awaited. Fetched
        after the epoch was read, so after its grant (``Sequencer._take_over``)."""
        epoch = self._epoch()
        if self._above is not None and self._above[0] == epoch:
            return self._above[1]

        async def above_all(pending: _Pending) -> None:
            async with self._above_lock:
                if self._above is None or self._above[0] != epoch:
                    self._above = (epoch, await self._generator.skip_past_all())

        raise _Suspended(above_all)

    def load(self, group_id: GroupId) -> int:
        pending, epoch = self.pending, self._epoch()
        if pending is not None:
            loaded = pending.loaded.get(group_id)
            if loaded is not None and loaded[0] == epoch:
                return loaded[1]  # type: ignore[return-value] # checked by Sequencer

        async def load(pending: _Pending) -> None:
            assert self._loader is not None
            value = self._loader(group_id)
            pending.loaded[group_id] = (epoch, await value if inspect.isawaitable(value) else value)

        raise _Suspended(load)


class AsyncSequencer:
    """Stamps messages of chat groups with increasing seqs, on an event loop.

    The arguments, guarantees and errors are ``Sequencer``'s; ``generator`` is an
    ``AsyncLocalGenerator`` (which the sequencer does not close), ``loader`` a coroutine
    function or a plain one (called on the loop: it must not block), ``lease`` an
    ``idgen_client.Lease`` (it renews in its own thread; its ``wait`` and ``close`` block,
    so await them with ``asyncio.to_thread``). ``async with`` (or
    ``await start()``) moves the generator above every seq stamped before, as
    ``Sequencer``'s constructor does; the first stamp does it otherwise. Use it from one
    event loop.
    """

    def __init__(
        self,
        generator: AsyncIdSource,
        *,
        loader: AsyncLoader | None = None,
        lease: LeaseTerm | None = None,
        max_groups: int = DEFAULT_MAX_GROUPS,
        retry_window: float = DEFAULT_RETRY_WINDOW,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        if not all(callable(getattr(generator, name, None))
                   for name in ("next_id_nowait", "ready", "skip_past", "skip_past_all")):
            raise ConfigError(
                f"an AsyncSequencer needs an AsyncLocalGenerator, not {type(generator).__name__}"
                " (a Sequencer takes a LocalGenerator)")
        Sequencer._check_settings(loader=loader, lease=lease, max_groups=max_groups,
                                  retry_window=retry_window, max_retries=max_retries)
        self._resumable = _Resumable(generator, loader, lease)
        self._settings = {"loader": None if loader is None else self._resumable.load,
                          "lease": lease, "max_groups": max_groups,
                          "retry_window": retry_window, "max_retries": max_retries}
        self._core: Sequencer | None = None

    async def start(self) -> None:
        """Move the generator above every seq stamped before (without a lease; with one,
        the first stamp of each epoch does). Awaits one ``NextSegment``; idempotent."""
        while self._core is None:
            pending = _Pending()
            while True:
                self._resumable.pending = pending
                try:
                    core = Sequencer(self._resumable, **self._settings)  # type: ignore[arg-type]
                    break
                except _Suspended as suspended:
                    wait = suspended.wait
                finally:
                    self._resumable.pending = None
                await wait(pending)
            if self._core is None:  # not started meanwhile by another task's first stamp
                self._core = core

    async def stamp(self, group_id: GroupId, client_msg_id: str | None = None) -> Stamp:
        """The next ``Stamp`` of the group (``Sequencer.stamp``); awaits a segment, the
        loader or a take-over when it must, and raises what they raise."""
        core = self._core
        if core is not None:
            try:
                return core.stamp(group_id, client_msg_id)
            except _Suspended as suspended:
                return await self._resume(core, suspended, group_id, client_msg_id)
        await self.start()
        return await self.stamp(group_id, client_msg_id)

    async def _resume(self, core: Sequencer, suspended: _Suspended, group_id: GroupId,
                      client_msg_id: str | None) -> Stamp:
        pending = _Pending()
        for _ in range(_MAX_SUSPENSIONS):
            await suspended.wait(pending)
            self._resumable.pending = pending
            try:
                return core.stamp(group_id, client_msg_id)
            except _Suspended as again:
                suspended = again
            finally:
                self._resumable.pending = None
        raise ServiceUnavailable(
            f"stamping a message of group {group_id!r} had to wait {_MAX_SUSPENSIONS} times "
            "for the ID generator: it keeps running dry; retry later")

    @property
    def horizon(self) -> int:
        """``Sequencer.horizon`` (0 before ``start``)."""
        return self._core.horizon if self._core is not None else 0

    @property
    def skips(self) -> int:
        """``Sequencer.skips``."""
        return self._core.skips if self._core is not None else 0

    def __contains__(self, group_id: object) -> bool:
        return self._core is not None and group_id in self._core

    def __len__(self) -> int:
        return len(self._core) if self._core is not None else 0

    async def __aenter__(self) -> AsyncSequencer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Nothing to close: the generator and the lease are their owners' to close."""
