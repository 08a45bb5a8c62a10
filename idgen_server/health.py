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
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DatabaseHealth", "Health"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatabaseHealth:
    """One database's health as last seen, for status and metrics."""

    reachable: bool
    """False while it is benched: its last call failed."""
    since: float
    """When it last turned reachable or benched (``time.time()``), or when watching began."""
    last_error: str
    """Its last failure, one line without password or SQL; empty if none yet."""


class Health:
    """The turn and health of n databases, named for the log. Thread-safe."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._lock = threading.Lock()
        self._benched = [False] * len(self._names)
        self._failures = [0] * len(self._names)
        self._since = [time.time()] * len(self._names)
        self._errors = [""] * len(self._names)
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

    def record(self, index: int, ok: bool, error: BaseException | str | None = None, *,
               announce: bool = True) -> None:
        """Database ``index`` answered (``ok``) or failed (it is benched), with ``error``
        (an ``IdGenError`` or its text: never a driver's exception, which may hold SQL).
        A database lost or back is logged, unless ``announce`` is false."""
        with self._lock:
            if not ok:
                self._failures[index] += 1
                lost = not self._benched[index]
                self._benched[index] = True
                if error is not None:
                    self._errors[index] = str(error).splitlines()[0][:300] if str(error) else ""
                if lost:
                    self._since[index] = time.time()
            else:
                lost = False
                back = self._benched[index]
                self._failures[index] = 0
                self._benched[index] = False
                if back:
                    self._since[index] = time.time()
        if not announce:
            return
        if lost:
            log.warning("database %s is lost: serving from the others until it answers again%s",
                        self._names[index], f" ({error})" if error else "",
                        extra={"db": self._names[index], "reachable": False,
                               "error": self._errors[index]})
        elif ok and back:
            log.info("database %s is back", self._names[index],
                     extra={"db": self._names[index], "reachable": True})

    def states(self) -> list[DatabaseHealth]:
        """Per database: reachable or benched, since when, and its last failure."""
        with self._lock:
            return [DatabaseHealth(not benched, since, error) for benched, since, error
                    in zip(self._benched, self._since, self._errors, strict=True)]

    def benched(self) -> list[int]:
        """The indexes of the benched databases."""
        with self._lock:
            return [i for i, b in enumerate(self._benched) if b]

    def healthy(self) -> list[bool]:
        """Per database, whether it is in turn (not benched)."""
        with self._lock:
            return [not b for b in self._benched]
