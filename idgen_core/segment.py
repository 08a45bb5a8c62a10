"""Segments: the ranges of IDs that one allocation claims.

A segment is the half-open range ``(low, end]`` that one compare-and-set on the
segment table claimed (``low`` was ``max_id`` before, ``end`` after). Of it only
the IDs ``id % delta == remainder`` are handed out: with n databases serving a
biz type, database k has ``delta = n, remainder = k``, so no two databases can
ever produce the same ID, whatever their ``max_id``s. A segment stores its first
such ID (``start``) rather than ``low``, so that it is exactly what a client
needs to generate its IDs: ``range(start, end + 1, delta)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from idgen_core.errors import IdSpaceExhausted, InvalidRequest, safe_repr

__all__ = ["INT64_MAX", "MAX_BIZ_TYPE_LENGTH", "MAX_COUNT", "MAX_STEP_MULTIPLIER", "Segment",
           "validate_biz_type", "validate_count", "validate_floor", "validate_steps"]

INT64_MAX = 2**63 - 1
MAX_BIZ_TYPE_LENGTH = 64
MAX_COUNT = 100_000
"""The most IDs one ``NextId`` call may ask for."""
MAX_STEP_MULTIPLIER = 1024
"""The most steps one allocation (one ``NextSegment``) may claim."""
_BIZ_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def validate_biz_type(biz_type: object) -> str:
    """Return ``biz_type`` if it is a well-formed name, else raise ``InvalidRequest``.

    A biz type is 1 to 64 characters of ``[A-Za-z0-9_.:-]`` that starts with a
    letter or digit: safe in SQL, logs, metrics labels and shell arguments.
    """
    if not isinstance(biz_type, str):
        raise InvalidRequest(f"biz type must be a string, not {type(biz_type).__name__}")
    if not biz_type:
        raise InvalidRequest("biz type is empty: name the ID space, e.g. 'order'")
    if len(biz_type) > MAX_BIZ_TYPE_LENGTH:
        raise InvalidRequest(
            f"biz type is {len(biz_type)} characters long; at most {MAX_BIZ_TYPE_LENGTH} are allowed"
        )
    if not _BIZ_TYPE.fullmatch(biz_type):
        raise InvalidRequest(
            f"biz type {safe_repr(biz_type[:MAX_BIZ_TYPE_LENGTH])} has characters outside [A-Za-z0-9_.:-] "
            "or does not start with a letter or digit"
        )
    return biz_type


def validate_count(count: object) -> int:
    """Return ``count`` if it is a whole number in ``1..MAX_COUNT``, else raise ``InvalidRequest``."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidRequest(f"count must be a whole number, not {type(count).__name__}")
    if not 1 <= count <= MAX_COUNT:
        raise InvalidRequest(f"count must be between 1 and {MAX_COUNT}, got {count}")
    return count


def validate_floor(floor: object) -> int:
    """Return ``floor`` if it is a whole number in ``0..INT64_MAX``, else raise ``InvalidRequest``."""
    if isinstance(floor, bool) or not isinstance(floor, int) or not 0 <= floor <= INT64_MAX:
        raise InvalidRequest(f"floor must be a whole number in 0..2^63-1, got {floor!r}")
    return floor


def validate_steps(steps: object) -> int:
    """Return ``steps`` if it is a whole number in ``1..MAX_STEP_MULTIPLIER``, else raise
    ``InvalidRequest``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEP_MULTIPLIER:
        raise InvalidRequest(
            f"steps must be a whole number in 1..{MAX_STEP_MULTIPLIER}, got {steps!r}")
    return steps


@dataclass(frozen=True, slots=True)
class Segment:
    """IDs ``start, start + delta, ...`` up to ``end`` inclusive; immutable.

    Construction validates the invariants (``InvalidRequest`` otherwise), so a
    segment that exists is one that can be handed out: non-empty, positive,
    within int64, aligned to its residue class.
    """

    start: int
    end: int
    delta: int = 1
    remainder: int = 0

    def __post_init__(self) -> None:
        if self.delta < 1:
            raise InvalidRequest(f"segment delta must be at least 1, got {self.delta}")
        if not 0 <= self.remainder < self.delta:
            raise InvalidRequest(
                f"segment remainder must be in [0, {self.delta}), got {self.remainder}"
            )
        if not 1 <= self.start <= self.end <= INT64_MAX:
            raise InvalidRequest(
                f"segment bounds must satisfy 1 <= start <= end <= 2^63-1, got [{self.start}, {self.end}]"
            )
        if self.start % self.delta != self.remainder:
            raise InvalidRequest(
                f"segment start {self.start} is not = {self.remainder} (mod {self.delta})"
            )

    @classmethod
    def claimed(cls, low: int, end: int, delta: int = 1, remainder: int = 0) -> Segment:
        """The segment of the IDs ``≡ remainder (mod delta)`` in ``(low, end]``.

        Raises ``IdSpaceExhausted`` when that range holds no such ID, which only
        happens at the top of the int64 range (a step is at least ``delta``).
        """
        start = low + 1 + (remainder - (low + 1)) % delta
        if start > end:
            raise IdSpaceExhausted(
                f"no ID = {remainder} (mod {delta}) is left in ({low}, {end}]: the int64 range is used up"
            )
        return cls(start, end, delta, remainder)

    def ids(self) -> range:
        """The segment's IDs, increasing."""
        return range(self.start, self.end + 1, self.delta)

    def __len__(self) -> int:
        return (self.end - self.start) // self.delta + 1

    @property
    def last(self) -> int:
        """The highest ID of the segment (``end`` itself only if it is aligned)."""
        return self.end - (self.end - self.start) % self.delta
