"""Allocation across several databases, with failover and the guards on their rows.

n databases serve a biz type; database k hands out only IDs ``≡ k (mod n)``,
so they can never collide, and any one of them alive keeps the service alive.
The allocator takes each segment from the next healthy database in turn. A
database that fails is benched: it is tried only after every healthy one has
failed, so callers do not pay its timeouts again and again. Benching only
orders the attempts, it never refuses to try: when every database is benched,
they are all tried.

The rows are checked at every allocation (``idgen_server.rows``): the row the
segment is cut from, fresh, against the rows of the other databases as last
read. A set that does not hold is read again from every database that answers
before the biz type is refused (``BizTypeMisconfigured``, logged as an error),
so a repair is seen at once. Other biz types are served meanwhile.

A background thread (``idgen-db-watch``) pings benched databases every
``probe_interval`` seconds and puts back each one that answers, and every
``watch_interval`` seconds reads the whole segment table of the healthy ones.
That keeps the rows the set check compares with fresh, and gives each store's
high water (``idgen_server.store``) every ``max_id`` that was committed, by any
server, more than an interval before it was moved back; a row found below its
high water is moved back up at once, before any server cuts a segment from it.

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
import itertools
import logging
import threading
import time
from collections.abc import Collection, Sequence

from idgen_client.errors import (
    BizTypeMisconfigured,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    StorageUnavailable,
    UnknownBizType,
)
from idgen_client.segment import INT64_MAX, Segment
from idgen_client.sizing import MAX_STEPS
from idgen_server.rows import BizRow, check_residue_set, check_row
from idgen_server.store import SegmentStore

__all__ = ["Allocator", "unknown_biz_type"]

log = logging.getLogger(__name__)

_LOUD_EVERY = 60.0
"""Seconds before the same refusal of a biz type is logged again."""


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
    that knows it has used up its int64 range, ``BizTypeMisconfigured`` when its
    rows are damaged or do not form one residue set, and ``StorageUnavailable``
    when none of them could answer. Close it to stop its background thread.
    """

    def __init__(
        self,
        stores: Sequence[SegmentStore],
        *,
        probe_interval: float = 0.5,
        watch_interval: float = 1.0,
    ) -> None:
        if not stores:
            raise InvalidRequest("at least one database is needed")
        self.stores = tuple(stores)
        self._probe_interval = probe_interval
        self._watch_interval = watch_interval
        self._lock = threading.Lock()
        self._benched = [False] * len(self.stores)
        self._failures = [0] * len(self.stores)
        self._watch: threading.Thread | None = None
        self._closed = threading.Event()
        # Keyed by biz types some database holds a row of: bounded by the tables, not
        # by what clients send.
        self._high: dict[str, int] = {}  # highest segment end or max_id seen per biz type
        # Per biz type, per database index: its row as last read, or None for "read, no row".
        self._rows: dict[str, dict[int, BizRow | None]] = {}
        self._refused: dict[str, tuple[str, float]] = {}  # last refusal logged, and when
        self._tables: dict[int, tuple[float, frozenset[str]]] = {}  # per database: when its
        # whole table was last read, and the biz types it held
        self._turn = itertools.count()

    # -- database health ----------------------------------------------------------

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
        self._start_watch()

    def healthy(self) -> list[bool]:
        """Per database, whether it is currently in turn (not benched)."""
        with self._lock:
            return [not b for b in self._benched]

    def _start_watch(self) -> None:
        with self._lock:
            if self._watch is not None or self._closed.is_set():
                return
            self._watch = threading.Thread(target=self._run_watch, name="idgen-db-watch",
                                           daemon=True)
            self._watch.start()

    def _run_watch(self) -> None:
        """Until closed: put back benched databases that answer; read the healthy ones' rows."""
        due = 0.0
        while not self._closed.wait(self._probe_interval):
            with self._lock:
                benched = [i for i, b in enumerate(self._benched) if b]
            for index in benched:
                if self.stores[index].ping():
                    self._record(index, ok=True)
            if time.monotonic() >= due:
                due = time.monotonic() + self._watch_interval
                for index in (i for i in range(len(self.stores)) if i not in benched):
                    if self._closed.is_set():
                        return
                    self._watch_rows(index)

    def _watch_rows(self, index: int) -> None:
        """Read one database's table; move any row found below its high water back up."""
        store = self.stores[index]
        started = time.monotonic()
        try:
            rows = store.read_all()
        except StorageUnavailable:
            self._record(index, ok=False)
            return
        self._record(index, ok=True)
        with self._lock:
            self._tables[index] = (started, frozenset(rows))
            for biz_type, known in self._rows.items():
                if biz_type not in rows:
                    known[index] = None
            for biz_type, row in rows.items():
                self._rows.setdefault(biz_type, {})[index] = row
        for row in rows.values():
            high = store.high_water(row.biz_type)
            if row.max_id < high and _intact(store, row):
                try:
                    store.raise_to(row, high)
                except StorageUnavailable:
                    self._record(index, ok=False)
                    return

    # -- the set of rows ------------------------------------------------------------

    def _surely_unknown(self, biz_type: str) -> bool:
        """True if every database's whole table, read within the last two watch intervals,
        lacks the biz type: a name no one registered costs no query (a client sending
        random names must not load the databases). A biz type registered meanwhile is
        found by the next read."""
        oldest = time.monotonic() - 2 * self._watch_interval
        with self._lock:
            return all((table := self._tables.get(i)) is not None and table[0] >= oldest
                       and biz_type not in table[1] for i in range(len(self.stores)))

    def _remember(self, biz_type: str, rows: dict[int, BizRow | None]) -> None:
        """Keep rows just read (None: that database has no row for the biz type). A biz
        type no database has a row of is not kept: clients' names must not fill memory."""
        with self._lock:
            if biz_type in self._rows or any(row is not None for row in rows.values()):
                self._rows.setdefault(biz_type, {}).update(rows)

    def _named(self, rows: dict[int, BizRow | None]) -> dict[str, BizRow]:
        return {self.stores[i].name: row for i, row in sorted(rows.items()) if row is not None}

    def _read_every(self, biz_type: str, indexes: Sequence[int] | None = None
                    ) -> tuple[dict[int, BizRow | None], list[StorageUnavailable]]:
        """Read the biz type in every database (or those of ``indexes``) now: what each
        that answered holds (None for no row), and the failures."""
        rows: dict[int, BizRow | None] = {}
        failed: list[StorageUnavailable] = []
        for index in range(len(self.stores)) if indexes is None else indexes:
            try:
                rows[index] = self.stores[index].read(biz_type)
            except StorageUnavailable as exc:
                self._record(index, ok=False)
                failed.append(exc)
                continue
            self._record(index, ok=True)
        self._remember(biz_type, rows)
        return rows, failed

    def _check_set(self, biz_type: str, index: int, row: BizRow) -> None:
        """The check the store runs on the fresh row of database ``index`` before cutting:
        against the other databases' rows as last read (read now if never read, unless
        benched: a database that hangs must not hold up every allocation)."""
        with self._lock:
            known = dict(self._rows.get(biz_type, {}))
            unread = [i for i in range(len(self.stores))
                      if i != index and i not in known and not self._benched[i]]
        if unread:
            known.update(self._read_every(biz_type, unread)[0])
        known[index] = row
        try:
            check_residue_set(biz_type, self._named(known), len(self.stores))
        except BizTypeMisconfigured:
            # What it was compared with may be stale: decide on what the databases say now.
            fresh, _ = self._read_every(biz_type)
            fresh[index] = row
            check_residue_set(biz_type, self._named(fresh), len(self.stores))
        self._remember(biz_type, {index: row})

    def _refuse(self, biz_type: str, error: BizTypeMisconfigured) -> BizTypeMisconfigured:
        """Log a refusal loudly (the same one at most once a minute); returns it to raise."""
        message, now = str(error), time.monotonic()
        with self._lock:
            last = self._refused.get(biz_type)
            loud = last is None or last[0] != message or now - last[1] >= _LOUD_EVERY
            if loud:
                self._refused[biz_type] = (message, now)
        if loud:
            log.error("%s", message)
        return error

    def _served(self, biz_type: str, segment: Segment) -> None:
        with self._lock:
            if segment.end > self._high.get(biz_type, 0):
                self._high[biz_type] = segment.end
            refused = self._refused.pop(biz_type, None)
        if refused is not None:
            log.warning("biz type %r is served again: its rows were repaired", biz_type)

    # -- allocation -----------------------------------------------------------------

    def allocate(self, biz_type: str, floor: int = 0, steps: int = 1, *,
                 above_all: bool = False) -> Segment:
        """A new segment of ``biz_type``, ``steps`` steps long, with IDs all above ``floor``.

        With ``above_all`` its IDs are also above every ID any database allocated
        before the call (``highest``): ``StorageUnavailable`` if one cannot be read.
        """
        if not 0 <= floor <= INT64_MAX:
            raise InvalidRequest(f"floor must be in 0..2^63-1, got {floor}")
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidRequest(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        self._start_watch()
        if self._surely_unknown(biz_type):
            raise unknown_biz_type(biz_type)
        if above_all:
            floor = max(floor, self.highest(biz_type))
        if floor > self._high.get(biz_type, 0):
            self._check_floor(biz_type, floor)
        errors: list[IdGenError] = []
        for index in self._order():
            store = self.stores[index]
            try:
                segment = store.allocate(biz_type, floor, steps,
                                         check=functools.partial(self._check_set, biz_type, index))
            except StorageUnavailable as exc:
                self._record(index, ok=False)
                errors.append(exc)
                continue
            except BizTypeMisconfigured as exc:
                self._record(index, ok=True)
                raise self._refuse(biz_type, exc) from None
            except (UnknownBizType, IdSpaceExhausted) as exc:
                self._record(index, ok=True)
                if isinstance(exc, UnknownBizType):
                    self._remember(biz_type, {index: None})
                errors.append(exc)
                continue
            self._record(index, ok=True)
            self._served(biz_type, segment)
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
        if self._surely_unknown(biz_type):
            raise unknown_biz_type(biz_type)
        found, failed = self._read_every(biz_type)
        if failed:
            raise StorageUnavailable(
                f"cannot read every database's max_id for {biz_type!r}, so cannot promise "
                f"IDs above all of them: retry later; {failed[0]}"
            )
        rows = {i: row for i, row in found.items() if row is not None}
        if not rows:
            raise unknown_biz_type(biz_type)
        try:
            check_residue_set(biz_type, self._named(rows), len(self.stores))
        except BizTypeMisconfigured as exc:
            raise self._refuse(biz_type, exc) from None
        return self._raise_high(biz_type, rows.keys())

    def _raise_high(self, biz_type: str, rows: Collection[int]) -> int:
        """The highest high water of the databases ``rows`` (indexes); remembered."""
        high = max(self.stores[i].high_water(biz_type) for i in rows)
        with self._lock:
            self._high[biz_type] = max(high, self._high.get(biz_type, 0))
        return high

    def _check_floor(self, biz_type: str, floor: int) -> None:
        """Refuse a floor above every ID allocated for the biz type."""
        found, failed = self._read_every(biz_type)
        rows = [i for i, row in found.items() if row is not None]
        high = self._raise_high(biz_type, rows) if rows else 0
        if floor <= high:
            return
        if failed:
            raise StorageUnavailable(
                f"cannot check floor {floor} for {biz_type!r}: {len(failed)} database(s) "
                f"unreachable; {failed[0]}"
            )
        if not rows:
            raise unknown_biz_type(biz_type)
        raise InvalidRequest(
            f"floor {floor} is above every ID allocated for {biz_type!r} (at most {high}): "
            "a floor must be an ID this service handed out"
        )

    def exists(self, biz_type: str) -> bool:
        """Whether any database has the biz type (``StorageUnavailable`` if none answers)."""
        self._start_watch()
        if self._surely_unknown(biz_type):
            return False
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
                self._remember(biz_type, {index: row})
                return True
        if not answered:
            raise StorageUnavailable(
                f"no database answered whether {biz_type!r} exists: retry later"
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


def _intact(store: SegmentStore, row: BizRow) -> bool:
    """Whether ``row`` is undamaged (a damaged one is left for a person to repair)."""
    try:
        check_row(store.name, row)
    except BizTypeMisconfigured:
        return False
    return True
