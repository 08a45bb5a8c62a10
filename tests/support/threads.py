"""Threads for tests: many callers at once, and callers that keep going in the background."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["Background", "run_threads", "unique_and_increasing"]


def run_threads(target: Callable[..., object], args: Iterable[Sequence[Any]]) -> None:
    """Run ``target(*a)`` for each ``a`` of ``args``, each in a thread of its own, all
    started before any is joined; returns once all have ended.

    What a thread raised is raised here (the first, by thread order), so that an
    assertion or an error inside a thread fails the test instead of being printed.
    """
    raised: list[BaseException | None] = []

    def guarded(index: int, *a: Any) -> None:
        try:
            target(*a)
        except BaseException as exc:  # noqa: BLE001 - raised again below
            raised[index] = exc

    threads = []
    for index, a in enumerate(args):
        raised.append(None)
        threads.append(threading.Thread(target=guarded, args=(index, *a)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for exc in raised:
        if exc is not None:
            raise exc


class Background:
    """``call()`` over and over, in ``threads`` threads of its own, until ``stop()``.

    Records each result with the monotonic time its call started (``calls``) and each
    error of the ``catch`` types (``errors``); any other error ends that thread and
    is raised by ``stop()``. A thread ends on its own once ``max_calls`` calls have
    succeeded in all; ``pause`` is how long each waits before each call.
    """

    def __init__(self, call: Callable[[], Sequence[int]], *, threads: int = 1,
                 catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                 max_calls: int | None = None, pause: float = 0.0,
                 name: str = "background") -> None:
        self.calls: list[tuple[float, Sequence[int]]] = []
        self.errors: list[BaseException] = []
        self._call = call
        self._catch = catch
        self._max_calls = max_calls
        self._pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._crashed: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{n}")
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._pause and self._stop.wait(self._pause):
                    break
                with self._lock:
                    if self._max_calls is not None and len(self.calls) >= self._max_calls:
                        break
                started = time.monotonic()
                try:
                    got = self._call()
                except self._catch as exc:
                    with self._lock:
                        self.errors.append(exc)
                    continue
                with self._lock:
                    self.calls.append((started, got))
        except BaseException as exc:  # noqa: BLE001 - raised again by stop()
            self._crashed.append(exc)

    def ids(self, since: int = 0) -> list[int]:
        """Every ID received so far after the first ``since``, in the order they came."""
        with self._lock:
            calls = list(self.calls)
        return [i for _, got in calls for i in got][since:]

    def ids_after(self, moment: float) -> list[int]:
        """The IDs of the calls that started after ``moment`` (a ``time.monotonic()``)."""
        with self._lock:
            calls = list(self.calls)
        return [i for started, got in calls if started > moment for i in got]

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._crashed:
            raise self._crashed[0]


def unique_and_increasing(callers: Sequence[Background]) -> list[int]:
    """Every ID the callers received; asserts that none came twice and that each
    caller's (one thread each) increased."""
    every = [i for caller in callers for i in caller.ids()]
    assert len(every) == len(set(every)), f"{len(every) - len(set(every))} duplicate IDs"
    for caller in callers:
        ids = caller.ids()
        assert ids == sorted(ids), "a caller's IDs went backwards"
    return every
