"""``idgen add-db``: a biz type moved from n to n + 1 databases while it is served."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from idgen_client import LocalGenerator, RemoteClient
from idgen_core import pair
from idgen_core.errors import BizTypeConflict, BizTypeMisconfigured, BizTypeMoving, StorageUnavailable
from idgen_server import moves
from idgen_server.allocator import Allocator
from idgen_server.moves import add_database
from idgen_server.store import SegmentStore
from tests.support.cli import idgen, init_db
from tests.support.proxy import behind_proxy
from tests.support.stores import open_stores, read_row, registered
from tests.support.threads import Background, unique_and_increasing
from tests.support.waiting import wait_until

BIZ = "order"


def ids_of(segments) -> list[int]:
    return [i for s in segments for i in range(s.start, s.end + 1, s.delta)]


def test_two_databases_become_three_above_every_id_handed_out_before(tmp_path):
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(3)]
    stores = registered(urls[:2], BIZ, step=100)
    new, = open_stores(urls[2:])
    try:
        before = [store.allocate(BIZ) for store in stores for _ in range(3)]
        moved = add_database(stores, new, BIZ)
        assert [(m.before, m.after) for m in moved] == [((2, 0), (3, 0)), ((2, 1), (3, 1)),
                                                        (None, (3, 2))]
        rows = [store.read(BIZ) for store in (*stores, new)]
        assert len({row.registration for row in rows}) == 1
        highest = max(s.end for s in before)
        after = [store.allocate(BIZ) for store in (*stores, new) for _ in range(3)]
        assert min(s.start for s in after) > highest
        every = ids_of(before) + ids_of(after)
        assert len(every) == len(set(every))
        again = add_database(stores, new, BIZ)  # finished: nothing changes
        assert [store.read(BIZ) for store in (*stores, new)] == [store.read(BIZ) for store in
                                                                (*stores, new)]
        assert [m.after for m in again] == [m.after for m in moved]
    finally:
        for store in (*stores, new):
            store.close()


@pytest.mark.parametrize("stop_at", range(6))
def test_stopped_anywhere_nothing_is_handed_out_twice_and_running_it_again_finishes(
        tmp_path, monkeypatch, stop_at):
    """The move dies at its ``stop_at``-th row write (a crash, a database lost). In
    the state it leaves, every store allocates what its own row allows, checking no
    other row (the worst case: a server that could read no other database); then the
    command runs again and finishes. No ID of any segment is handed out twice."""
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(3)]
    stores = registered(urls[:2], BIZ, step=100)
    new, = open_stores(urls[2:])
    real = moves._write
    writes = []

    def dying(*args, **kwargs):
        if len(writes) == stop_at:
            raise StorageUnavailable("the database went away")
        writes.append(args[0].name)
        return real(*args, **kwargs)

    segments = []

    def allocate_from_each() -> None:
        for store in (*stores, new):
            try:
                segments.extend(store.allocate(BIZ) for _ in range(2))
            except BizTypeMisconfigured as exc:  # frozen: refused by the row itself
                assert "being moved" in str(exc)
            except Exception as exc:  # noqa: BLE001 - the new database has no row yet
                assert store is new, exc

    try:
        allocate_from_each()
        monkeypatch.setattr(moves, "_write", dying)
        try:
            add_database(stores, new, BIZ)
        except StorageUnavailable as exc:  # says what to do: the same command again
            assert "stopped halfway" in str(exc) and "run again" in str(exc)
        allocate_from_each()  # in whatever state it stopped
        monkeypatch.setattr(moves, "_write", real)
        add_database(stores, new, BIZ)
        allocate_from_each()
        every = ids_of(segments)
        assert len(every) == len(set(every)), "an ID was handed out twice"
        assert [store.read(BIZ).delta for store in (*stores, new)] == [3, 3, 3]
    finally:
        for store in (*stores, new):
            store.close()


def test_databases_given_in_another_order_than_they_hold_are_refused_and_nothing_changes(tmp_path):
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(3)]
    stores = registered(urls[:2], BIZ, step=100)
    new, = open_stores(urls[2:])
    try:
        rows = [store.read(BIZ) for store in stores]
        with pytest.raises(BizTypeConflict, match=r"holds the class 1 \(mod 2\), so it is number 1 "
                           r".counting from 0. in the servers' list, not number 0"):
            add_database(stores[::-1], new, BIZ)
        with pytest.raises(BizTypeConflict, match="it is in 2 databases, but 1 was given"):
            add_database(stores[1:], new, BIZ)  # one of the databases left out
        assert [store.read(BIZ) for store in stores] == rows
        assert new.read(BIZ) is None
    finally:
        for store in (*stores, new):
            store.close()


def test_a_list_that_leaves_a_database_out_or_a_second_move_to_another_database_is_refused(
        tmp_path):
    """Taking a biz type of two databases for one, or adding a fourth database with the
    list of before the third was added, would give the new database a class in use."""
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(4)]
    stores = registered(urls[:2], BIZ, step=100)
    third, fourth = open_stores(urls[2:])
    try:
        with pytest.raises(BizTypeConflict, match="it is in 2 databases, but 1 was given"):
            add_database(stores[:1], third, BIZ)
        add_database(stores, third, BIZ)
        rows = [store.read(BIZ) for store in (*stores, third)]
        with pytest.raises(BizTypeConflict, match="it is in 3 databases, but 2 were given"):
            add_database(stores, fourth, BIZ)
        assert [store.read(BIZ) for store in (*stores, third)] == rows
        assert fourth.read(BIZ) is None
    finally:
        for store in (*stores, third, fourth):
            store.close()


def test_two_moves_to_different_new_databases_never_both_go_ahead(tmp_path, monkeypatch):
    """One move stops after freezing its first row; another, to another new database,
    is refused at that row (rows of another move), and nothing is served from a frozen
    row meanwhile; the first, run again, finishes."""
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(4)]
    stores = registered(urls[:2], BIZ, step=100)
    c, d = open_stores(urls[2:])
    real = moves._write
    calls = []

    def stop_after_one(*args, **kwargs):
        if calls:
            raise StorageUnavailable("the database went away")
        calls.append(1)
        return real(*args, **kwargs)

    try:
        monkeypatch.setattr(moves, "_write", stop_after_one)
        with pytest.raises(StorageUnavailable):
            add_database(stores, c, BIZ)
        monkeypatch.setattr(moves, "_write", real)
        with pytest.raises(BizTypeConflict, match="frozen by an idgen add-db to another database"):
            add_database(stores, d, BIZ)
        with pytest.raises(BizTypeMisconfigured, match="being moved"):
            stores[0].allocate(BIZ)
        add_database(stores, c, BIZ)
        assert [store.read(BIZ).delta for store in (*stores, c)] == [3, 3, 3]
    finally:
        for store in (*stores, c, d):
            store.close()


def test_a_new_database_that_holds_the_biz_type_already_is_refused(tmp_path):
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(2)]
    old, = registered(urls[:1], BIZ, step=100)
    new, = registered(urls[1:], BIZ, step=100)
    try:
        with pytest.raises(BizTypeConflict, match="already holds it, as the class 0"):
            add_database([old], new, BIZ)
    finally:
        old.close()
        new.close()


@pytest.mark.mariadb
def test_an_unreachable_database_is_refused_before_anything_is_written(make_mariadb):
    urls = [make_mariadb() for _ in range(3)]
    registered(urls[:2], BIZ, step=100)[0].close()
    proxy, through = behind_proxy(urls[1])
    stores = [SegmentStore(urls[0]), SegmentStore(through, timeout=1)]
    new = SegmentStore(urls[2])
    new.create_schema()
    try:
        rows = [read_row(url, BIZ) for url in urls[:2]]
        proxy.refuse()
        with pytest.raises(StorageUnavailable, match="every database must answer"):
            add_database(stores, new, BIZ)
        assert [read_row(url, BIZ) for url in urls[:2]] == rows
        assert new.read(BIZ) is None
    finally:
        proxy.close()
        for store in (*stores, new):
            store.close()


def test_idgen_add_db_says_what_each_database_hands_out_now(tmp_path):
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(2)]
    registered(urls[:1], BIZ, step=100)[0].close()
    init_db(urls[1])
    done = idgen("add-db", BIZ, "--db", urls[0], "--new-db", urls[1])
    assert done.returncode == 0, done.stderr
    assert "db0 (" in done.stdout and "IDs = 0 (mod 1) -> IDs = 0 (mod 2)" in done.stdout
    assert "db1 (" in done.stdout and "new -> IDs = 1 (mod 2)" in done.stdout
    again = idgen("add-db", BIZ, "--db", urls[0], "--new-db", urls[1])
    assert again.returncode == 0 and "moved already" in again.stdout
    assert "nothing to do" in again.stdout and "lies above" not in again.stdout
    wrong = idgen("add-db", BIZ, "--db", urls[1], "--new-db", urls[0])
    assert wrong.returncode == 1
    assert "holds the class" in wrong.stderr and "Nothing was changed" in wrong.stderr


# --- against real servers ---------------------------------------------------------------------

def frozen(monkeypatch, stores: list[SegmentStore], new: SegmentStore, rows: int = 1) -> None:
    """Run a move of BIZ that stops once it has frozen the first ``rows`` old rows."""
    real, calls = moves._write, []

    def stop_after_one(*args, **kwargs):
        if len(calls) == rows:
            raise StorageUnavailable("the database went away")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(moves, "_write", stop_after_one)
    with pytest.raises(StorageUnavailable):
        add_database(stores, new, BIZ)
    monkeypatch.setattr(moves, "_write", real)


def test_a_pause_is_logged_once_whichever_frozen_database_refused(tmp_path, monkeypatch, caplog):
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(3)]
    stores = registered(urls[:2], BIZ, step=100)
    new, = open_stores(urls[2:])
    try:
        frozen(monkeypatch, stores, new, rows=2)
        told = set()
        with Allocator(stores) as allocator:
            for _ in range(6):  # the databases in turn: db0, db1, db0, ...
                with pytest.raises(BizTypeMoving) as refused:
                    allocator.allocate(BIZ)
                told.add(str(refused.value))
        assert len(told) == 2  # each names the database that refused
        refusals = [r for r in caplog.records if "being moved" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelname == "WARNING"
    finally:
        for store in (*stores, new):
            store.close()


def test_a_paused_biz_type_is_waited_out_and_told_as_a_pause_not_as_damage(
        tmp_path, monkeypatch, start_server):
    """A move stopped after its freeze: a caller waits the pause out (PAUSE_WAIT on the server,
    its own in a local generator) and is then told ``BizTypeMoving``, retryable (UNAVAILABLE;
    503 with Retry-After over HTTP), never FAILED_PRECONDITION; a caller waiting when the move
    is finished gets its IDs, above every ID handed out before."""
    urls = [f"sqlite:///{tmp_path}/db{k}.db" for k in range(2)]
    stores = registered(urls[:1], BIZ, step=100)
    new, = open_stores(urls[1:])
    try:
        server = start_server(urls[:1], extra_args=["--http-listen", "127.0.0.1:0"])
        served: list[int] = []
        with RemoteClient(server.address, retries=0) as client:
            served += client.next_ids(BIZ, 10)
            frozen(monkeypatch, stores, new)
            with pytest.raises(BizTypeMoving, match="being moved.*run it again"):
                for _ in range(1000):  # what the server has buffered is served first
                    served += client.next_ids(BIZ, 100)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.http_url}/v1/ids/{BIZ}", timeout=30)
        body = json.loads(refused.value.read())
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        assert body["error"]["code"] == "UNAVAILABLE" and "being moved" in body["error"]["message"]
        monkeypatch.setattr(pair, "PAUSE_WAIT", 60.0)  # this process's waits; the server's stay
        # Closed in this order: the generator first, which wakes its waiting caller.
        with ThreadPoolExecutor(1) as pool, RemoteClient(server.address, retries=0) as client, \
                LocalGenerator(BIZ, client) as generator:
            waiting = pool.submit(generator.next_id)
            wait_until(lambda: generator._buffer.waits == 1
                       and isinstance(generator._buffer._fetcher.error, BizTypeMoving), 30,
                       "the generator's caller to wait out the pause")
            assert not waiting.done()
            add_database(stores, new, BIZ)  # the same command again finishes the move
            assert waiting.result(timeout=30) > max(served)
    finally:
        for store in (*stores, new):
            store.close()


# --- under load, against real servers ----------------------------------------------------------

@pytest.mark.mariadb
@pytest.mark.slow
def test_one_database_becomes_two_then_three_under_load(make_mariadb, start_server, capsys):
    """A server on one MariaDB database, a remote caller and a local generator; the biz type
    is moved to two databases, a second server started with both, then to three and a
    third server with all three, the first servers still running on their old lists and
    the load going on throughout: 0 duplicate IDs, each caller's IDs increasing."""
    urls = [make_mariadb() for _ in range(3)]
    registered(urls[:1], BIZ, step=1000)[0].close()
    for url in urls[1:]:
        open_stores([url])[0].close()
    servers = [start_server(urls[:1])]
    callers: list[Background] = []
    closing: list[RemoteClient | LocalGenerator] = []

    def load_on(server) -> None:
        client = RemoteClient(server.address)
        generator = LocalGenerator(BIZ, [server.address])
        closing.extend((client, generator))
        callers.append(Background(lambda: client.next_ids(BIZ, 50), max_calls=50_000, pause=0.001,
                                  name=f"remote-{len(callers)}"))
        callers.append(Background(lambda: [generator.next_id() for _ in range(50)],
                                  max_calls=50_000, pause=0.001, name=f"local-{len(callers)}"))

    def everyone_gets_ids_after(moment: float) -> None:
        wait_until(lambda: all(len(c.ids_after(moment)) > 0 for c in callers), 30,
                   "every caller to get IDs")

    try:
        load_on(servers[0])
        everyone_gets_ids_after(time.monotonic())
        for n in (1, 2):
            stores = open_stores(urls[:n])
            new, = open_stores(urls[n:n + 1])
            try:
                add_database(stores, new, BIZ)
            finally:
                for store in (*stores, new):
                    store.close()
            servers.append(start_server(urls[:n + 1]))
            load_on(servers[-1])
            everyone_gets_ids_after(time.monotonic())
    finally:
        for caller in callers:
            caller.stop(30)
        for each in closing:
            each.close()
    errors = [e for c in callers for e in c.errors]
    every = unique_and_increasing(callers)
    assert errors == [], f"callers saw {len(errors)} errors, the first: {errors[:1]}"
    rows = [read_row(url, BIZ) for url in urls]
    assert [(row.delta, row.remainder) for row in rows] == [(3, 0), (3, 1), (3, 2)]
    with capsys.disabled():
        print(f"\n[add-db] 1 -> 2 -> 3 databases under load: {len(every)} IDs from "
              f"{len(callers)} callers, 0 duplicates, {len(errors)} errors")
