"""The high water: what one store has seen of each biz type's ``max_id``.

A ``max_id`` only grows, unless someone moves it back: a backup restored, a
replica promoted before it received the last allocations, a hand edit. Its next
segments would then repeat IDs already handed out. So a store remembers, per biz
type, the highest ``max_id`` it has seen (read or claimed); a row that reports
less is logged as an error, and segments are cut above the mark, which moves the
database forward past it in the same compare-and-set. This protects every ID
this process saw allocated; it cannot protect IDs that no running process has
seen (README: what the server checks).
"""
from __future__ import annotations

import logging
import threading

from idgen_core.segment import INT64_MAX, MAX_STEP_MULTIPLIER
from idgen_server.rows import BizRow

__all__ = ["HighWater"]

log = logging.getLogger(__name__)


class HighWater:
    """The highest ``max_id`` seen per biz type in one database, with the version it had.
    Thread-safe."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, int]] = {}

    def level(self, biz_type: str) -> int:
        """The highest ``max_id`` seen for the biz type (0 if none)."""
        with self._lock:
            return self._seen.get(biz_type, (0, 0))[0]

    def observe(self, row: BizRow) -> BizRow:
        """Raise the mark to ``row``'s ``max_id``; returns ``row``."""
        with self._lock:
            if row.max_id > self._seen.get(row.biz_type, (0, 0))[0]:
                self._seen[row.biz_type] = (row.max_id, row.version)
        return row

    def mark(self, row: BizRow) -> int:
        """What every ID cut from ``row`` must lie above: its ``max_id``, or the mark if
        that is higher. When the row went back although its version moved on since the
        mark was seen (a hand edit, which leaves the version alone), the allocations not
        seen moved ``max_id`` on by at most ``step * MAX_STEP_MULTIPLIER`` each: the
        result is that much higher, wasting IDs, never reissuing any. That bound takes the
        unseen versions for allocations at the row's current step: a ``set-step`` that
        lowered the step, or a ``skip-to``, among them (each also moves the version on) can
        exceed it, so a hand edit that lowers ``max_id`` after one of those is beyond it."""
        with self._lock:
            seen, version = self._seen.get(row.biz_type, (0, 0))
        if row.max_id >= seen:
            return row.max_id
        unseen = row.version - version
        return min(INT64_MAX, seen + max(0, unseen) * row.step * MAX_STEP_MULTIPLIER)

    def report_rollback(self, row: BizRow, moved_to: int) -> None:
        """Log, loudly, that ``row`` was found below the mark and was moved past it."""
        log.error("database %s reported max_id %d for %r, below what this server had seen "
                  "(restored from a backup, failed over to a replica that lagged, or edited "
                  "by hand?): moved it back up to %d. Other servers that allocated from it "
                  "meanwhile may have handed out IDs again",
                  self._database, row.max_id, row.biz_type, moved_to)
