"""The one retry policy: how long to wait before the next attempt.

Every loop in idgen that retries (a client failing over between servers, a
double buffer refetching after a failed fetch, a store losing an optimistic-lock
race) waits ``Backoff.delay(attempt)`` between attempts: exponential growth from
``initial`` up to ``maximum``, with *full jitter* (a uniform draw from zero to
that bound). Full jitter is what spreads out processes that failed together,
such as allocators that lost the same compare-and-set or clients of a server
that just restarted; with the bound itself, or half of it, they would retry in
step and collide again.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from idgen_core.errors import ConfigError

__all__ = ["Backoff"]

_MAX_DOUBLINGS = 60  # beyond this 2**n only overflows the float; maximum caps it anyway


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter; immutable and safe to share.

    ``attempts`` is the total number of attempts a bounded loop makes (``None``:
    until its owner stops it). Invalid settings raise ``ConfigError``.
    """

    initial: float
    maximum: float
    attempts: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConfigError(
                f"backoff must satisfy 0 < initial <= maximum, got {self.initial} and {self.maximum}")
        if self.attempts is not None and self.attempts < 1:
            raise ConfigError(f"attempts must be at least 1, got {self.attempts}")

    def bound(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt`` (1 for the first retry)."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        return min(self.maximum, self.initial * 2**doublings)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt``: uniform in ``[0, bound]``."""
        return random.uniform(0.0, self.bound(attempt))
