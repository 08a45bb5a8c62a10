"""The sequencer's memory of recent stamps, so that a retried message gets its stamp back.

Keyed by ``(group, client_msg_id)``, bounded in time (``window`` seconds) and in
size (``max_entries``), apart from the groups, so that forgetting a group does
not shorten it. Not kept across restarts: receivers still drop duplicates by
message ID.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["RetryLog"]


class RetryLog:
    """Stamps by key, oldest first. ``record`` is thread-safe; a lookup is one
    ``OrderedDict.get``, atomic under the GIL, so the sequencer reads ``entries``
    without a lock on its hot path."""

    def __init__(self, window: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._window = window
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry = 0.0  # no entry expires before this
        self.entries: OrderedDict[Hashable, tuple[float, int, int]] = OrderedDict()
        """key -> (expires at, seq, prev_seq), oldest first."""

    def get(self, key: Hashable) -> tuple[int, int] | None:
        """``(seq, prev_seq)`` stamped for ``key`` within the window, else None."""
        entry = self.entries.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1], entry[2]

    def clear(self) -> None:
        """Forget every stamp (a new owner's term: stamps of an old one are not handed back)."""
        with self._lock:
            self.entries.clear()

    def record(self, key: Hashable, seq: int, prev_seq: int) -> None:
        """Remember a stamp; drop expired entries and those beyond the bound.

        The entry is a flat tuple of ints and a float, which the garbage collector
        stops tracking: with ``(expires, Stamp)`` a full log made collections cost
        a third of the stamp rate. The front is looked at only once it may have
        expired (``_expiry``), not on every stamp.
        """
        now = self._clock()
        with self._lock:
            entries = self.entries
            entries.pop(key, None)  # an expired entry: the new one goes to the end
            entries[key] = (now + self._window, seq, prev_seq)
            if len(entries) > self._max:
                entries.popitem(last=False)
            if now >= self._expiry:
                while entries:
                    expires = next(iter(entries.values()))[0]
                    if expires > now:
                        self._expiry = expires
                        break
                    entries.popitem(last=False)
