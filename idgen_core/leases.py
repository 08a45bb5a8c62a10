"""The rules of a lease that holder and contender must agree on.

A lease names a shard of chat groups (``"chat-7"``) of a biz type; one process
at a time holds it, and only the holder stamps the shard's messages. The
server grants it (``idgen_server.leases``); the holder keeps it by renewing
(``idgen_client.lease``). No clock is compared between machines: each side
measures only its own elapsed time, on its own monotonic clock.

- The holder counts its lease from *before* it sent the request that was
  granted: it is valid until ``sent + holder_seconds(ttl) - margin``.
- A contender (the server, on its behalf) takes a lease over only after it has
  seen the lease's rows unchanged for ``takeover_seconds(ttl)`` of its own time.

With clocks whose rates differ from real time by at most ``CLOCK_DRIFT``, the
holder's validity ends before a contender may take over: the holder's
``ttl * (1 - CLOCK_DRIFT)`` of its time are at most ``ttl`` of real time, a
contender's ``ttl * (1 + CLOCK_DRIFT)`` at least ``ttl``, and it starts
counting only after it read the rows the holder's request wrote. The margin
covers what happens between the holder's check and the use of a stamp.
docs/design.md, section 11, has the whole argument and what breaks it.
"""
from __future__ import annotations

import re

from idgen_core.errors import InvalidRequest, safe_repr

__all__ = [
    "CLOCK_DRIFT",
    "MAX_TTL_MS",
    "MIN_TTL_MS",
    "holder_seconds",
    "takeover_seconds",
    "validate_epoch",
    "validate_holder",
    "validate_lease_name",
    "validate_ttl_ms",
]

CLOCK_DRIFT = 0.01
"""The largest rate error assumed of any clock that measures a lease: 1%, a hundred
times what quartz clocks drift (some 10^-4); a pause is not drift (design.md, 11)."""

MIN_TTL_MS = 200
MAX_TTL_MS = 600_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def _validate(kind: str, value: object, example: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{kind} must be a string, not {type(value).__name__}")
    if not _NAME.fullmatch(value):
        raise InvalidRequest(
            f"{kind} {safe_repr(value[:64])} must be 1 to 64 characters of [A-Za-z0-9_.:-], "
            f"starting with a letter or digit (e.g. {example!r})")
    return value


def validate_lease_name(name: object) -> str:
    """``name`` if it is a well-formed lease name (the rules of a biz type), else ``InvalidRequest``."""
    return _validate("lease name", name, "chat-7")


def validate_holder(holder: object) -> str:
    """``holder`` if it is a well-formed holder id (what ``Lease`` draws at random)."""
    return _validate("lease holder", holder, "3f2a9c0e41d7b865")


def validate_ttl_ms(ttl_ms: object) -> int:
    """``ttl_ms`` if it is a lease's time to live in milliseconds within the bounds."""
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or not MIN_TTL_MS <= ttl_ms <= MAX_TTL_MS:
        raise InvalidRequest(
            f"a lease's ttl must be {MIN_TTL_MS} to {MAX_TTL_MS} ms, got {safe_repr(ttl_ms)}")
    return ttl_ms


def validate_epoch(epoch: object) -> int:
    """``epoch`` if it is 0 (a new grant) or a possible epoch (up to 2^63-1)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= 2**63 - 1:
        raise InvalidRequest(
            f"a lease's epoch is 0 to ask for a new grant, or the epoch held to renew or release "
            f"it, not {safe_repr(epoch)}")
    return epoch


def holder_seconds(ttl_ms: int) -> float:
    """How long after sending a granted request its holder may count the lease held
    (before its own margin)."""
    return ttl_ms / 1000 * (1 - CLOCK_DRIFT)


def takeover_seconds(ttl_ms: int) -> float:
    """How long a contender must see a lease's rows unchanged before it takes them."""
    return ttl_ms / 1000 * (1 + CLOCK_DRIFT)
