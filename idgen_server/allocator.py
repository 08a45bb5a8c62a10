"""Allocation across several databases, with failover.

n databases serve a biz type; database k hands out only IDs ``≡ k (mod n)``,
so they can never collide, and any one of them alive keeps the service alive.
The allocator takes each segment from the next healthy database in turn. A
database that fails is benched: it is tried only after every healthy one has
failed, so callers do not pay its timeouts again and again, and a background
probe (thread ``idgen-db-probe``) pings it every ``probe_interval`` seconds and
puts it back in turn as soon as it answers, so one that comes back is used
again without a restart. Benching only orders the attempts, it never refuses
to try: when every database is benched, they are all tried.

Floors. ``allocate(biz, floor)`` returns a segment above ``floor``; a database
whose ``max_id`` lags behind is moved past it. The server's double buffer passes
the end of its current segment, so a server's IDs increase even though the
databases' ``max_id``s drift apart. A floor may not exceed what has been
allocated for the biz type (checked against the databases when in doubt), so a
client cannot burn the ID space by asking for a huge one. ``above_all`` asks for
a segment above every database's ``max_id`` (``highest``): what a restarted
client needs in multi-DB mode to stay above every ID issued before it started.
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence

from idgen_client.errors import (
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    StorageUnavailable,
    UnknownBizType,
)
from idgen_client.segment import Segment
from idgen_client.sizing import MAX_STEPS
from idgen_server.store import SegmentStore

__all__ = ["Allocator", "unknown_biz_type"]

log = logging.getLogger(__name__)


def unknown_biz_type(biz_type: str) -> UnknownBizType:
    """The error for a biz type that no database knows."""
    return UnknownBizType(
        f"biz type {biz_type!r} is not registered: add it with "
        f"`idgen add-biz {biz_type} --db URL` (once per database of this server)"
    )


class Allocator:
    """Segments for any biz type, from the first database that can give one.

    Thread-safe. Raises ``UnknownBizType`` when every database answered that
    it does not know the biz type, ``IdSpaceExhausted`` when every database
    that knows it has used up its int64 range, and ``StorageUnavailable`` when
    none of them could answer.
    """

    def __init__(
        self,
        stores: Sequence[SegmentStore],
        *,
        probe_interval: float = 0.5,
    ) -> None:
        if not stores:
            raise InvalidRequest("at least one database is needed")
        self.stores = tuple(stores)
        self._probe_interval = probe_interval
        self._lock = threading.Lock()
        self._benched = [False] * len(self.stores)
        self._failures = [0] * len(self.stores)
        self._probe: threading.Thread | None = None
        self._closed = threading.Event()
        self._high: dict[str, int] = {}  # highest segment end seen per biz type
        self._turn = itertools.count()

    def _order(self) -> list[int]:
        """Healthy databases first, round robin; then benched ones, fewest failures first."""
        n = len(self.stores)
        first = next(self._turn) % n
        rotated = [(first + i) % n for i in range(n)]
        with self._lock:
            healthy = [i for i in rotated if not self._benched[i]]
            benched = sorted((i for i in rotated if self._benched[i]),
                             key=self._failures.__getitem__)
        return healthy + benched

    def _record(self, index: int, ok: bool) -> None:
        with self._lock:
            if ok:
                if self._failures[index]:
                    log.info("database %s is back", self.stores[index].name)
                self._failures[index] = 0
                self._benched[index] = False
                return
            self._failures[index] += 1
            self._benched[index] = True
            if self._probe is None and not self._closed.is_set():
                self._probe = threading.Thread(target=self._probe_benched,
                                               name="idgen-db-probe", daemon=True)
                self._probe.start()

    def _probe_benched(self) -> None:
        """Ping benched databases until closed; put back each one that answers."""
        while not self._closed.wait(self._probe_interval):
            with self._lock:
                benched = [i for i, b in enumerate(self._benched) if b]
            for index in benched:
                if self.stores[index].ping():
                    self._record(index, ok=True)

    def healthy(self) -> list[bool]:
        """Per database, whether it is currently in turn (not benched)."""
        with self._lock:
            return [not b for b in self._benched]

    def allocate(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                 above_all: bool = False) -> Segment:
        """A new segment of ``biz_type``, ``steps`` steps long, with IDs all above ``floor``.

        With ``above_all`` its IDs are also above every ID any database allocated
        before the call (``highest``): ``StorageUnavailable`` if one cannot be read.
        """
        if floor < 0:
            raise InvalidRequest(f"floor must be at least 0, got {floor}")
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidRequest(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        if above_all:
            floor = max(floor, self.highest(biz_type))
        if floor > self._high.get(biz_type, 0):
            self._check_floor(biz_type, floor)
        errors: list[IdGenError] = []
        for index in self._order():
            store = self.stores[index]
            try:
                segment = store.allocate(biz_type, floor, steps)
            except StorageUnavailable as exc:
                self._record(index, ok=False)
                errors.append(exc)
                continue
            except (UnknownBizType, IdSpaceExhausted) as exc:
                self._record(index, ok=True)
                errors.append(exc)
                continue
            self._record(index, ok=True)
            with self._lock:
                if segment.end > self._high.get(biz_type, 0):
                    self._high[biz_type] = segment.end
            return segment
        raise self._summarize(biz_type, errors)

    def _summarize(self, biz_type: str, errors: list[IdGenError]) -> IdGenError:
        unavailable = [e for e in errors if isinstance(e, StorageUnavailable)]
        exhausted = [e for e in errors if isinstance(e, IdSpaceExhausted)]
        if unavailable:
            n = len(self.stores)
            if len(unavailable) == 1 and n == 1:
                return unavailable[0]
            return StorageUnavailable(
                f"none of the {n} databases could allocate for {biz_type!r} "
                f"({len(unavailable)} unreachable): retry later; {unavailable[0]}"
            )
        if exhausted:
            return IdSpaceExhausted(
                f"biz type {biz_type!r} has used up the int64 range in every database: "
                "no further IDs can be issued; register a new biz type"
            )
        return unknown_biz_type(biz_type)

    def highest(self, biz_type: str) -> int:
        """The highest ``max_id`` of the biz type over every database.

        Every ID any database handed out before this call is at or below it: a
        segment is handed out only after its ``max_id`` committed, and ``max_id``
        only grows. So a segment allocated above it is above everything issued
        before, whichever databases lag. It needs every database: one that cannot
        be read might hold the highest, so that is ``StorageUnavailable``, never a
        guess. ``UnknownBizType`` if no database has the biz type.
        """
        high, known = 0, False
        for index, store in enumerate(self.stores):
            try:
                row = store.read(biz_type)
            except StorageUnavailable as exc:
                self._record(index, ok=False)
                raise StorageUnavailable(
                    f"cannot read every database's max_id for {biz_type!r}, so cannot promise "
                    f"IDs above all of them: retry later; {exc}"
                ) from None
            self._record(index, ok=True)
            if row is not None:
                known, high = True, max(high, row.max_id)
        if not known:
            raise unknown_biz_type(biz_type)
        with self._lock:
            self._high[biz_type] = max(high, self._high.get(biz_type, 0))
        return high

    def _check_floor(self, biz_type: str, floor: int) -> None:
        """Refuse a floor above every ID allocated for the biz type."""
        high, unreachable, known = 0, 0, False
        for store in self.stores:
            try:
                row = store.read(biz_type)
            except StorageUnavailable:
                unreachable += 1
                continue
            if row is not None:
                known = True
                high = max(high, row.max_id)
        with self._lock:
            self._high[biz_type] = max(high, self._high.get(biz_type, 0))
        if floor <= high:
            return
        if unreachable:
            raise StorageUnavailable(
                f"cannot check floor {floor} for {biz_type!r}: {unreachable} database(s) unreachable"
            )
        if not known:
            raise self._summarize(biz_type, [])
        raise InvalidRequest(
            f"floor {floor} is above every ID allocated for {biz_type!r} (at most {high}): "
            "a floor must be an ID this service handed out"
        )

    def exists(self, biz_type: str) -> bool:
        """Whether any database has the biz type (``StorageUnavailable`` if none answers)."""
        answered = False
        for index in self._order():
            try:
                row = self.stores[index].read(biz_type)
            except StorageUnavailable:
                self._record(index, ok=False)
                continue
            self._record(index, ok=True)
            answered = True
            if row is not None:
                return True
        if not answered:
            raise StorageUnavailable(
                f"no database answered whether {biz_type!r} exists: retry later"
            )
        return False

    @property
    def conflicts(self) -> int:
        """Optimistic-lock retries across all databases."""
        return sum(s.conflicts for s in self.stores)

    def close(self) -> None:
        """Stop the probe and close every database's connection pool."""
        self._closed.set()
        with self._lock:
            probe = self._probe
        if probe is not None:
            probe.join(10)
        for store in self.stores:
            store.close()
