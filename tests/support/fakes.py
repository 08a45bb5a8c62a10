"""Stand-ins with no network and no database: a segment source, a clock, a spy."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from idgen_core.segment import Segment
from idgen_server.rows import residue_class

__all__ = ["AsyncSource", "Clock", "Source", "residue_sources", "spy"]


class Source:
    """A fetch function over an in-memory ``max_id``, like one database's row.

    Each call claims ``step`` numbers above ``max(max_id, floor)`` and returns the
    segment of its residue class. It records the floor and the calling thread's name;
    ``gate`` (an Event) holds calls until it is set, ``fail`` is raised when set (by the
    next ``failing`` calls only, if that is set).
    """

    def __init__(self, step: int = 100, delta: int = 1, remainder: int = 0) -> None:
        self.max_id = 0
        self.step, self.delta, self.remainder = step, delta, remainder
        self.threads: list[str] = []
        self.floors: list[int] = []
        self.fail: Exception | None = None
        self.failing: int | None = None
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def __call__(self, floor: int) -> Segment:
        with self.lock:
            self.threads.append(threading.current_thread().name)
            self.floors.append(floor)
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            fail = self.fail
            if fail is not None and self.failing is not None:
                self.failing -= 1
                if self.failing <= 0:
                    self.fail = self.failing = None
        if fail is not None:
            raise fail
        with self.lock:
            low = max(self.max_id, floor)
            self.max_id = low + self.step
            return Segment.claimed(low, self.max_id, self.delta, self.remainder)


class AsyncSource:
    """``Source`` as a coroutine function, for the asyncio buffer. It records the name of
    the task each call ran in; ``gate`` (an ``asyncio.Event``) holds calls until it is set,
    and ``delay`` makes each call take that many seconds, without blocking the loop."""

    def __init__(self, step: int = 100, delta: int = 1, remainder: int = 0) -> None:
        self.source = Source(step, delta, remainder)
        self.tasks: list[str] = []
        self.gate: asyncio.Event | None = None
        self.delay = 0.0

    @property
    def floors(self) -> list[int]:
        return self.source.floors

    @property
    def fail(self) -> Exception | None:
        return self.source.fail

    @fail.setter
    def fail(self, error: Exception | None) -> None:
        self.source.fail = error

    @property
    def failing(self) -> int | None:
        return self.source.failing

    @failing.setter
    def failing(self, calls: int | None) -> None:
        self.source.failing = calls

    async def __call__(self, floor: int) -> Segment:
        task = asyncio.current_task()
        self.tasks.append(task.get_name() if task is not None else "")
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.source(floor)


def residue_sources(count: int, step: int) -> list[Source]:
    """The rows of one biz type in ``count`` databases: source k in residue class k of count."""
    return [Source(step, *residue_class(k, count)) for k in range(count)]


class Clock:
    """A clock that moves only when a test sets ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spy(obj: object, method: str) -> list[str]:
    """Wrap ``obj.method``: each call goes through and is recorded, by the name of the
    thread that made it, in the list returned."""
    calls: list[str] = []
    original: Callable[..., Any] = getattr(obj, method)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread().name)
        return original(*args, **kwargs)

    setattr(obj, method, recorded)
    return calls
