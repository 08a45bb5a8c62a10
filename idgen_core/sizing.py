"""Dynamic step: how many steps the next allocation should claim.

A segment has to outlast the fetch of the next one, or callers wait. With a
fixed step that holds only up to some rate: a local generator in a tight loop
uses 10,000 IDs in under a millisecond, less than a ``NextSegment`` round trip.
So, as Leaf does on its server, the size adapts: when a segment lasted less than
``target`` seconds the next request claims twice as many steps; when it lasted
more than ``8 * target`` it claims half as many; between 1 and ``MAX_STEP_MULTIPLIER``.
Why only twice: while a buffer is starved (its fetches finish after the segment
they replace ran out), the time between fetches covers just the part of a
segment before its preload threshold, a fifth of its life. Growing to what
"would have lasted the target" then overshoots fivefold on top of any burst, and
made segments that lasted a minute (growing up to eightfold did).
One allocation is still one compare-and-set, whatever its size; a process that
dies wastes at most its two buffered segments.

The time between two successful fetches measures how long a segment lasted:
each fetch starts at the same point (the preload threshold) of its segment. The
first interval is not measured: the first fetch happens before any segment is
in use, so the second comes a mere preload threshold later.

Each change of the multiplier is logged (INFO, ``idgen_core.sizing``): it only ever
doubles or halves, at most once per fetch, so the lines stay few.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from idgen_core.segment import MAX_STEP_MULTIPLIER, Segment

__all__ = ["AdaptiveSteps"]

log = logging.getLogger(__name__)


class AdaptiveSteps:
    """Wraps ``fetch(floor, steps)`` into a ``fetch(floor)`` that sizes itself. Thread-safe.
    ``name`` (the biz type) names it in the log. Without a ``fetch`` (a coroutine's caller),
    fetch ``steps`` steps and call ``arrived()`` once the segment is here."""

    def __init__(
        self,
        fetch: Callable[[int, int], Segment] | None = None,
        *,
        target: float = 1.0,
        max_steps: int = MAX_STEP_MULTIPLIER,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self._fetch = fetch
        self._name = name  # the biz type, for the log
        self._target = target
        self._max = max_steps
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._fetched = 0
        self.steps = 1
        """How many steps the next fetch claims."""

    def __call__(self, floor: int) -> Segment:
        if self._fetch is None:
            raise TypeError("AdaptiveSteps was made without a fetch: call arrived() instead")
        segment = self._fetch(floor, self.steps)
        self.arrived()
        return segment

    def arrived(self) -> None:
        """A segment fetched with ``steps`` steps arrived now: size the next one."""
        now = self._clock()
        with self._lock:
            self._fetched += 1
            before, lasted = self.steps, 0.0
            if self._last is not None and self._fetched > 2:
                lasted = now - self._last
                if lasted < self._target:
                    self.steps = min(self.steps * 2, self._max)
                elif lasted > 8 * self._target:
                    self.steps = max(self.steps // 2, 1)
            self._last = now
            after = self.steps
        if after != before:
            log.info("step multiplier of %r: %d -> %d (a segment lasted %.3gs)", self._name,
                     before, after, lasted,
                     extra={"biz_type": self._name, "step_multiplier": after, "previous": before,
                            "lasted_seconds": round(lasted, 3)})
