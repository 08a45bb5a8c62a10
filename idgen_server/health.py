"""Which of a server's databases are in turn.

A database that fails is benched: it is tried only after every healthy one has
failed, so callers do not pay its timeouts again and again. Benching only
orders the attempts, it never refuses to try: when every database is benched,
they are all tried. Something must ping the benched ones to put them back
(the allocator's watch thread does, every ``probe_interval``).
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence

__all__ = ["Health"]

log = logging.getLogger(__name__)


class Health:
    """The turn and health of n databases, named for the log. Thread-safe."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._lock = threading.Lock()
        self._benched = [False] * len(self._names)
        self._failures = [0] * len(self._names)
        self._turn = itertools.count()

    def order(self) -> list[int]:
        """Healthy databases first, round robin; then benched ones, fewest failures first."""
        n = len(self._names)
        first = next(self._turn) % n
        rotated = [(first + i) % n for i in range(n)]
        with self._lock:
            healthy = [i for i in rotated if not self._benched[i]]
            benched = sorted((i for i in rotated if self._benched[i]),
                             key=self._failures.__getitem__)
        return healthy + benched

    def record(self, index: int, ok: bool) -> None:
        """Database ``index`` answered (``ok``) or failed (it is benched)."""
        with self._lock:
            if not ok:
                self._failures[index] += 1
                self._benched[index] = True
                return
            back = self._failures[index] > 0
            self._failures[index] = 0
            self._benched[index] = False
        if back:
            log.info("database %s is back", self._names[index])

    def benched(self) -> list[int]:
        """The indexes of the benched databases."""
        with self._lock:
            return [i for i, b in enumerate(self._benched) if b]

    def healthy(self) -> list[bool]:
        """Per database, whether it is in turn (not benched)."""
        with self._lock:
            return [not b for b in self._benched]
