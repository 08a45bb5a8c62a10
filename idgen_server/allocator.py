"""Allocation across several databases, with failover and the guards on their rows.

n databases serve a biz type; database k hands out only IDs ``≡ k (mod n)``,
so they can never collide, and any one of them alive keeps the service alive.
The allocator takes each segment from the next healthy database in turn
(``idgen_server.health``), and checks the rows at every allocation
(``idgen_server.rowset``): a biz type whose rows are damaged or clash is
refused (``BizTypeMisconfigured``, logged as an error) while the others are
served.

A background thread (``idgen-db-watch``) pings benched databases every
``probe_interval`` seconds and puts back each one that answers, and every
``watch_interval`` seconds reads the whole table of the healthy ones
(``RowSet.watch``).

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

import functools
import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence

from idgen_core.errors import (
    BizTypeMisconfigured,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    ServiceUnavailable,
    StorageUnavailable,
    UnknownBizType,
)
from idgen_core.retry import Backoff
from idgen_core.segment import MAX_STEP_MULTIPLIER, Segment, validate_floor, validate_steps
from idgen_server.defaults import DEFAULT_ABOVE_ALL_LIMIT
from idgen_server.health import DatabaseHealth, Health
from idgen_server.rows import BizRow, check_residue_set, check_row
from idgen_server.rowset import RowSet
from idgen_server.stats import Tally
from idgen_server.store import SegmentStore
from idgen_server.urls import check_distinct

__all__ = ["Allocator", "unknown_biz_type"]

log = logging.getLogger(__name__)

_FLOOR_PATIENCE = 2.0
"""Seconds a floor above every ID read is read again before it is refused (``_check_floor``):
ample for a database replica to apply an allocation already committed elsewhere."""
_FLOOR_RETRY = Backoff(0.02, 0.5)
_LAG_ALLOCATIONS = 16
"""How many of the largest allocations (``MAX_STEP_MULTIPLIER`` steps) a replica may lag."""


def unknown_biz_type(biz_type: str) -> UnknownBizType:
    """The error for a biz type that no database knows."""
    return UnknownBizType(
        f"biz type {biz_type!r} is not registered: add it with `idgen add-biz {biz_type} "
        "--db URL [--db URL ...]`, giving all of this server's databases at once"
    )


class Allocator:
    """Segments for any biz type, from the first database that can give one.

    Thread-safe. Raises ``UnknownBizType`` when every database answered that
    it does not know the biz type, ``IdSpaceExhausted`` when every database
    that knows it has used up its int64 range, ``BizTypeMisconfigured`` when its
    rows are damaged or do not form one residue set, and ``StorageUnavailable``
    when none of them could answer. A context manager: closing stops its thread.
    """

    def __init__(
        self,
        stores: Sequence[SegmentStore],
        *,
        probe_interval: float = 0.5,
        watch_interval: float = 1.0,
        above_all_limit: int = DEFAULT_ABOVE_ALL_LIMIT,
    ) -> None:
        check_distinct([store.name for store in stores])
        self.stores = tuple(stores)
        self._health = Health([s.name for s in self.stores])
        self._rows = RowSet(self.stores, self._health, watch_interval=watch_interval)
        self._probe_interval = probe_interval
        self._watch_interval = watch_interval
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None
        self._closed = threading.Event()
        self._high: dict[str, int] = {}  # per registered biz type: highest max_id seen
        self.served = Tally()
        """IDs handed out in whole segments (``NextSegment``, to clients that generate IDs
        themselves), by biz type: counted by the servicer, read by the metrics."""
        # Reading every database is the one costly request a caller can make at will: at most
        # this many at once, so that a flood of them cannot hold every RPC thread.
        self._above_all = threading.BoundedSemaphore(above_all_limit)
        self._above_all_limit = above_all_limit

    def bench(self, index: int, error: StorageUnavailable) -> None:
        """Take database ``index`` out of turn as if a call to it had just failed with
        ``error`` (what a server does with one that did not answer at start-up, which it has
        logged already); the watch thread puts it back once it answers."""
        self._health.record(index, ok=False, error=error, announce=False)

    def healthy(self) -> list[bool]:
        """Per database, whether it is currently in turn (not benched)."""
        return self._health.healthy()

    def health(self) -> list[DatabaseHealth]:
        """Per database: reachable or benched, since when, its last failure."""
        return self._health.states()

    def last_read(self, index: int) -> dict[str, BizRow]:
        """Database ``index``'s rows as the server last read them (no query), by biz type."""
        return self._rows.last_read(index)

    @property
    def labels(self) -> list[str]:
        """Per database, what callers and metrics see of it: its label, else ``db<k>``."""
        return [store.label or f"db{k}" for k, store in enumerate(self.stores)]

    # -- the watch thread ---------------------------------------------------------

    def start(self) -> None:
        """Start watching the databases now, rather than at the first allocation: a server's
        health must notice a database lost while nobody asks for IDs."""
        self._start_watch()

    def _start_watch(self) -> None:
        with self._lock:
            if self._watch is not None or self._closed.is_set():
                return
            self._watch = threading.Thread(target=self._run_watch, name="idgen-db-watch",
                                           daemon=True)
            self._watch.start()

    def _run_watch(self) -> None:
        """Until closed: put back benched databases that answer; read the healthy ones."""
        due = 0.0
        while not self._closed.wait(self._probe_interval):
            try:
                benched = self._health.benched()
                for index in benched:
                    if self.stores[index].ping():
                        self._health.record(index, ok=True)
                if time.monotonic() >= due:
                    due = time.monotonic() + self._watch_interval
                    for index in range(len(self.stores)):
                        if index not in benched and not self._closed.is_set():
                            self._rows.watch(index)
            except Exception:  # a bug must not end the guard for good
                log.exception("watching the databases failed; trying again")

    # -- allocation -----------------------------------------------------------------

    def allocate(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                 above_all: bool = False) -> Segment:
        """A new segment of ``biz_type``, ``steps`` steps long, with IDs all above ``floor``.

        With ``above_all`` its IDs are also above every ID any database allocated
        before the call (``highest``): ``StorageUnavailable`` if one cannot be read.
        """
        validate_floor(floor)
        validate_steps(steps)
        self._start_watch()
        try:
            return self._allocate(biz_type, floor, steps, above_all)
        except BizTypeMisconfigured as exc:
            raise self._rows.refuse(biz_type, exc) from None

    def _allocate(self, biz_type: str, floor: int, steps: int, above_all: bool) -> Segment:
        if self._rows.surely_unknown(biz_type):
            raise unknown_biz_type(biz_type)
        if above_all:
            if not self._above_all.acquire(blocking=False):
                raise ServiceUnavailable(
                    "this server serves requests for IDs above every database "
                    f"{self._above_all_limit} at a time, and that many are being served: "
                    "retry shortly")
            try:
                floor = max(floor, self._highest(biz_type))
            finally:
                self._above_all.release()
        if floor > self._high.get(biz_type, 0):
            self._check_floor(biz_type, floor)
        errors: list[IdGenError] = []
        for index in self._health.order():
            try:
                segment = self.stores[index].allocate(
                    biz_type, floor, steps, check=functools.partial(self._rows.check, biz_type, index))
            except StorageUnavailable as exc:
                self._health.record(index, ok=False, error=exc)
                errors.append(exc)
                continue
            except BizTypeMisconfigured:
                self._health.record(index, ok=True)
                raise
            except (UnknownBizType, IdSpaceExhausted) as exc:
                self._health.record(index, ok=True)
                if isinstance(exc, UnknownBizType):
                    self._rows.remember(biz_type, {index: None})
                errors.append(exc)
                continue
            self._health.record(index, ok=True)
            self._rows.cut(biz_type, index, segment.delta, segment.remainder)
            with self._lock:
                self._high[biz_type] = max(segment.end, self._high.get(biz_type, 0))
            return segment
        raise self._summarize(biz_type, errors)

    def _summarize(self, biz_type: str, errors: list[IdGenError]) -> IdGenError:
        unavailable = [e for e in errors if isinstance(e, StorageUnavailable)]
        exhausted = [e for e in errors if isinstance(e, IdSpaceExhausted)]
        if unavailable:
            # What a caller is told names databases by label, never by URL, and holds no driver
            # text: the log has both (``Database.unavailable``).
            return StorageUnavailable(
                f"no database could allocate for {biz_type!r}{self.unreachable()}: retry later")
        if exhausted:
            return IdSpaceExhausted(
                f"biz type {biz_type!r} has used up the int64 range in every database: "
                "no further IDs can be issued; register a new biz type"
            )
        return unknown_biz_type(biz_type)

    def unreachable(self, answered: Collection[int] | None = None) -> str:
        """`` (db1 unreachable)``: the labels of the databases that did not answer (those
        not in ``answered``; else those benched)."""
        if answered is None:
            down = [label for label, ok in zip(self.labels, self.healthy(), strict=True) if not ok]
        else:
            down = [label for k, label in enumerate(self.labels) if k not in answered]
        return f" ({', '.join(down)} unreachable)" if down else ""

    def highest(self, biz_type: str) -> int:
        """The highest ``max_id`` of the biz type over every database (and every high water).

        Every ID any database handed out before this call is at or below it: a
        segment is handed out only after its ``max_id`` committed, and ``max_id``
        only grows (the high water covers a database moved back). So a segment
        allocated above it is above everything issued before, whichever databases
        lag. It needs every database: one that cannot be read might hold the
        highest, so that is ``StorageUnavailable``, never a guess.
        ``UnknownBizType`` if no database has the biz type.
        """
        self._start_watch()
        try:
            return self._highest(biz_type)
        except BizTypeMisconfigured as exc:
            raise self._rows.refuse(biz_type, exc) from None

    def _highest(self, biz_type: str) -> int:
        if self._rows.surely_unknown(biz_type):
            raise unknown_biz_type(biz_type)
        found, failed = self._rows.read_every(biz_type)
        if failed:
            raise StorageUnavailable(
                f"cannot read every database's max_id for {biz_type!r}{self.unreachable(found)}, "
                "so cannot promise IDs above all of them: retry later"
            )
        rows = {i: row for i, row in found.items() if row is not None}
        if not rows:
            raise unknown_biz_type(biz_type)
        check_residue_set(biz_type, self._rows.named(rows), len(self.stores))
        self.check_complete(biz_type, max(row.delta for row in rows.values()))
        return self._raise_high(biz_type, rows)

    def check_complete(self, biz_type: str, databases: int) -> None:
        """``BizTypeMisconfigured`` unless this server has all ``databases`` databases of
        the biz type: what is above every database, and a lease, cannot be known from some."""
        if databases > len(self.stores):
            raise BizTypeMisconfigured(
                f"biz type {biz_type!r} is served by {databases} databases and this server is "
                f"given {len(self.stores)}: IDs above every database, and leases, need a server "
                "given all of them (plain IDs are served all the same)")

    def _raise_high(self, biz_type: str, rows: Mapping[int, BizRow]) -> int:
        """The highest mark (``SegmentStore.mark``) of the rows just read; remembered."""
        high = max(self.stores[i].mark(row) for i, row in rows.items())
        with self._lock:
            self._high[biz_type] = max(high, self._high.get(biz_type, 0))
        return high

    def _check_floor(self, biz_type: str, floor: int) -> None:
        """Refuse a floor above every ID allocated for the biz type.

        A floor above what this server read may still be an ID handed out: by another
        server, from a database node whose replica here has not applied that allocation
        yet (a Galera node that lags, or one just rejoined). Refusing it would be a
        permanent error for a client that did nothing wrong, so a floor within
        ``_LAG_ALLOCATIONS`` of the largest allocations above what was read is read again,
        for up to ``_FLOOR_PATIENCE`` seconds, before it is called wrong. One farther above
        (a made-up number) is refused at once.
        """
        deadline = time.monotonic() + _FLOOR_PATIENCE
        attempt = 0
        while True:
            found, failed = self._rows.read_every(biz_type)
            rows = {i: row for i, row in found.items() if row is not None}
            high = self._raise_high(biz_type, rows) if rows else 0
            if floor <= high:
                return
            if failed or not rows:
                break
            reach = _LAG_ALLOCATIONS * MAX_STEP_MULTIPLIER * max(row.step for row in rows.values())
            attempt += 1
            delay = _FLOOR_RETRY.delay(attempt)
            if floor > high + reach or time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
        if failed:
            raise StorageUnavailable(
                f"cannot check floor {floor} for {biz_type!r}{self.unreachable(found)}: "
                "retry later"
            )
        if not rows:
            raise unknown_biz_type(biz_type)
        raise InvalidRequest(
            f"floor {floor} is above every ID allocated for {biz_type!r} (at most {high}): "
            "a floor must be an ID this service handed out"
        )

    def verified_row(self, biz_type: str, index: int) -> BizRow | None:
        """Database ``index``'s row of the biz type, read now and checked as an allocation
        checks the row it cuts from (damage, a move under way, the residue set): None if
        it has none, ``BizTypeMisconfigured`` (logged) if the checks fail,
        ``StorageUnavailable`` if it does not answer. What leases stand on."""
        self._start_watch()
        try:
            row = self.stores[index].read(biz_type)
        except StorageUnavailable as exc:
            self._health.record(index, ok=False, error=exc)
            raise
        self._health.record(index, ok=True)
        if row is None:
            self._rows.remember(biz_type, {index: None})
            return None
        try:
            check_row(self.stores[index].name, row)
            self._rows.check(biz_type, index, row)
        except BizTypeMisconfigured as exc:
            raise self._rows.refuse(biz_type, exc) from None
        return row

    def exists(self, biz_type: str) -> bool:
        """Whether any database has the biz type (``StorageUnavailable`` if none answers)."""
        self._start_watch()
        if self._rows.surely_unknown(biz_type):
            return False
        answered = False
        for index in self._health.order():
            try:
                row = self.stores[index].read(biz_type)
            except StorageUnavailable as exc:
                self._health.record(index, ok=False, error=exc)
                continue
            except BizTypeMisconfigured:  # a row too damaged to read is still a row
                self._health.record(index, ok=True)
                return True
            self._health.record(index, ok=True)
            answered = True
            if row is not None:
                self._rows.remember(biz_type, {index: row})
                return True
        if not answered:
            raise StorageUnavailable(
                f"no database answered whether {biz_type!r} exists{self.unreachable()}: retry later"
            )
        return False

    def close(self) -> None:
        """Stop the background thread and close every database's connection pool."""
        self._closed.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.join(10)
        for store in self.stores:
            store.close()

    def __enter__(self) -> Allocator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
