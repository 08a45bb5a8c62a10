"""Leases for the sequencer, granted from the same databases as the segments.

A lease (biz type, name) is held by one holder at a time: the process that
stamps the messages of a shard of chat groups (``idgen_client.lease``). It is
kept in every database of the biz type, under the same rules as its segments:
a database counts only while its segment row passes the checks an allocation
makes (``Allocator.verified_row``), and is known by its residue class. A grant
needs a majority of the biz type's ``delta`` databases, so any two grants meet
in one database, and a database's row changes only by compare-and-set on its
version: two holders can never both have a majority.

- A **new holder** is granted epoch ``E`` = one above the highest epoch of the
  rows it read; since its majority meets the previous holder's in one database,
  epochs only grow, holder after holder.
- It may take a database's row at once if it is free (none, released, or its
  own), else only once this server has seen that row at the same version for
  ``takeover_seconds(row.ttl_ms)`` of its own monotonic clock: every renewal
  changes the version and starts the count again (``idgen_core.leases`` has
  why that outlasts the holder's own count).
- A **renewal** (``epoch`` given) keeps the epoch; it is refused once a row of
  the majority shows another grant.
- A **release** frees the holder's rows, so the next holder need not wait.

What this server has seen is kept per row under contention only, and forgotten
once stale; a server that restarts starts counting again, which only delays a
takeover.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from idgen_core.errors import BizTypeMisconfigured, StorageUnavailable
from idgen_core.leases import (
    takeover_seconds,
    validate_epoch,
    validate_holder,
    validate_lease_name,
    validate_ttl_ms,
)
from idgen_core.segment import INT64_MAX, validate_biz_type
from idgen_server.allocator import Allocator, unknown_biz_type
from idgen_server.leasetable import LeaseRow

__all__ = ["LeaseGrant", "Leases"]

log = logging.getLogger(__name__)

_REMEMBERED = 10_000  # rows under contention whose first sighting is kept
_RETRY_FLOOR = 0.05  # seconds: the shortest wait suggested to a contender
_POLL = 0.25  # seconds: the longest (one read of each database per contender and poll)


@dataclass(frozen=True)
class LeaseGrant:
    """The answer to a request for a lease: granted with ``epoch``, or not yet (then
    ``retry_after`` seconds is when asking again may succeed)."""

    granted: bool
    epoch: int = 0
    retry_after: float = 0.0


_Seen = tuple[int, float, float]  # a row's version, when first seen at it, the wait it needs


class Leases:
    """Grants, renews and releases leases over an allocator's databases. Thread-safe."""

    def __init__(self, allocator: Allocator, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._allocator = allocator
        self._stores = allocator.stores
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, str, str], _Seen] = {}

    def acquire(self, biz_type: str, name: str, holder: str, ttl_ms: int,
                epoch: int = 0) -> LeaseGrant:
        """Grant (``epoch`` 0) or renew (the ``epoch`` held) the lease for ``holder``.

        ``StorageUnavailable`` if fewer than a majority of the biz type's databases
        answer, ``UnknownBizType`` if none has it, ``BizTypeMisconfigured`` if its
        rows fail the checks of an allocation."""
        validate_biz_type(biz_type)
        validate_lease_name(name)
        validate_holder(holder)
        validate_ttl_ms(ttl_ms)
        validate_epoch(epoch)
        rows, databases = self._read(biz_type, name)
        need = databases // 2 + 1
        if epoch and not any(row is not None and row.holder == holder and row.epoch == epoch
                             for _, row in rows.values()):
            # Not a grant of this holder's (over, or never made): it asks anew.
            return LeaseGrant(False, retry_after=max(_RETRY_FLOOR, ttl_ms / 4000))
        target = epoch or max((row.epoch for _, row in rows.values() if row), default=0) + 1
        if target > INT64_MAX:
            raise BizTypeMisconfigured(
                f"the lease {name!r} of {biz_type!r} has reached the highest epoch: delete its "
                "rows (idgen_lease) once no process stamps under it")
        takeable: list[int] = []
        waits: list[float] = []
        for index, (_, row) in rows.items():
            wait = self._wait(index, biz_type, name, row, holder, epoch)
            if wait <= 0:
                takeable.append(index)
            else:
                waits.append(wait)
        if len(takeable) < need:
            # When enough rows may be taken; a renewal refused for good is told a quarter
            # of its ttl, by when its holder asks anew.
            # Polled at least every _POLL: a lease released meanwhile is taken within it.
            wait = sorted(waits)[need - len(takeable) - 1]
            wait = min(wait, ttl_ms / 4000, _POLL)
            return LeaseGrant(False, retry_after=max(_RETRY_FLOOR, wait))
        won: set[int] = set()  # residue classes
        for index in takeable:
            remainder, row = rows[index]
            try:
                if self._stores[index].leases.write(biz_type, name, row, holder=holder,
                                                    epoch=target, ttl_ms=ttl_ms):
                    won.add(remainder)
            except StorageUnavailable:
                continue
        if len(won) < need:
            return LeaseGrant(False, retry_after=_RETRY_FLOOR)
        if not epoch:
            log.info("lease %r of %r granted, epoch %d", name, biz_type, target,
                     extra={"biz_type": biz_type, "lease": name, "epoch": target})
        return LeaseGrant(True, target)

    def release(self, biz_type: str, name: str, holder: str, epoch: int) -> int:
        """Free the rows ``holder`` holds under ``epoch`` (it must have stopped stamping);
        how many databases freed it. Rows that cannot be reached expire by themselves."""
        validate_biz_type(biz_type)
        validate_lease_name(name)
        validate_holder(holder)
        validate_epoch(epoch)
        freed = 0
        for store in self._stores:
            try:
                row = store.leases.read(biz_type, name)
                if row is not None and row.holder == holder and row.epoch == epoch:
                    freed += store.leases.write(biz_type, name, row, holder="", epoch=epoch,
                                                ttl_ms=row.ttl_ms)
            except StorageUnavailable:
                continue
        if freed:
            log.info("lease %r of %r released, epoch %d", name, biz_type, epoch,
                     extra={"biz_type": biz_type, "lease": name, "epoch": epoch})
        return freed

    def _read(self, biz_type: str, name: str
              ) -> tuple[dict[int, tuple[int, LeaseRow | None]], int]:
        """Per database that answered and counts: its residue class and the lease's row
        there; and how many databases the biz type has (its delta)."""
        rows: dict[int, tuple[int, LeaseRow | None]] = {}
        databases, failed = 0, 0
        for index, store in enumerate(self._stores):
            try:
                segment_row = self._allocator.verified_row(biz_type, index)
                if segment_row is None:
                    continue
                rows[index] = (segment_row.remainder, store.leases.read(biz_type, name))
            except StorageUnavailable:
                failed += 1
                continue
            databases = segment_row.delta
        if not rows and not failed:
            raise unknown_biz_type(biz_type)
        if databases:
            # A new holder's first seqs must be above every database (skip_past_all), which a
            # server given only some of them cannot promise.
            self._allocator.check_complete(biz_type, databases)
        need = databases // 2 + 1 if databases else len(self._stores) // 2 + 1
        if len(rows) < need:
            raise StorageUnavailable(
                f"a lease of {biz_type!r} needs {need} of its databases, and "
                f"{len(rows)} answered{self._allocator.unreachable()}: retry shortly")
        return rows, databases

    def _wait(self, index: int, biz_type: str, name: str, row: LeaseRow | None,
              holder: str, epoch: int) -> float:
        """Seconds before ``holder`` may write ``row`` under ``epoch`` (0: a new grant);
        0 for now, infinity for never."""
        if row is None:
            return 0.0
        if epoch and row.epoch > epoch:
            return float("inf")  # a later grant: the one renewed is over
        if row.holder in ("", holder):
            return 0.0  # free, or its own (the grant renewed, or one whose answer was lost)
        return self._observed(index, biz_type, name, row)

    def _observed(self, index: int, biz_type: str, name: str, row: LeaseRow) -> float:
        """Seconds left before ``row``, held by another, may be taken over: it must be
        seen at this same version for ``takeover_seconds`` of this server's clock."""
        now = self._clock()  # after the read: the row was written before now
        key = (index, biz_type, name)
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or seen[0] != row.version:
                seen = self._seen[key] = (row.version, now, takeover_seconds(row.ttl_ms))
                if len(self._seen) > _REMEMBERED:
                    self._forget(now)
        return seen[1] + seen[2] - now

    def _forget(self, now: float) -> None:
        """Keep at most half of ``_REMEMBERED`` sightings (the lock is held): first those
        whose wait is over (taken or takeable), then the oldest. Forgetting one only delays
        a takeover: it is counted again from the next sighting. Amortized: runs once per
        ``_REMEMBERED / 2`` new sightings at most."""
        seen = self._seen
        for key in [k for k, (_, at, wait) in seen.items() if now - at >= wait]:
            del seen[key]
        if len(seen) > _REMEMBERED // 2:
            for key in sorted(seen, key=lambda k: seen[k][1])[:len(seen) - _REMEMBERED // 2]:
                del seen[key]

