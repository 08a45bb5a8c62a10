"""Guards against operators' mistakes and damaged rows, on real servers (SQLite and MariaDB).

Each test starts from a mistake a team can make with the documented commands or
a plain SQL client, and checks that no ID is handed out twice because of it.
"""
from __future__ import annotations

import time

import pytest

from idgen_client import BizTypeMisconfigured, LocalGenerator, RemoteClient
from idgen_server.allocator import Allocator
from idgen_server.registry import register
from idgen_server.store import SegmentStore
from tests.support.cli import idgen


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def make_db(request, tmp_path):
    """Makes fresh empty databases of one kind: ``make_db()`` returns a URL."""
    if request.param == "mariadb":
        return request.getfixturevalue("mariadb_server").create
    names = iter(range(100))
    return lambda: f"sqlite:///{tmp_path}/db{next(names)}.db"


def init(*urls: str) -> None:
    result = idgen("init-db", *dbs(urls))
    assert result.returncode == 0, result.stderr


def dbs(urls) -> list[str]:
    return [arg for url in urls for arg in ("--db", url)]


def edit(url: str, assignment: str, biz: str) -> None:
    """Change a row by hand, as an operator with a SQL client would."""
    store = SegmentStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE idgen_segment SET {assignment} WHERE biz_type = '{biz}'")
    store.close()


def row(url: str, biz: str):
    store = SegmentStore(url)
    try:
        return store.read(biz)
    finally:
        store.close()


def eventually(call, timeout: float = 20.0):
    """``call()``'s result once it stops raising, polling until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- rows registered apart ------------------------------------------------------------

def test_a_biz_type_registered_apart_in_two_databases_is_refused_and_others_are_served(
        make_db, start_server):
    a, b = make_db(), make_db()
    init(a, b)
    for one in (a, b):  # "later, a second database for availability", the wrong way
        assert idgen("add-biz", "pay", "--db", one).returncode == 0
    assert idgen("add-biz", "order", *dbs([a, b])).returncode == 0
    servers = [start_server([a, b]) for _ in range(2)]
    for server in servers:
        with RemoteClient(server.address, retries=0) as client:
            for call in (lambda: client.next_ids("pay", 10), lambda: client.next_segment("pay")):
                with pytest.raises(BizTypeMisconfigured) as info:
                    call()
                message = str(info.value)
                assert "'pay' is refused" in message and "delta is 1" in message
                assert SegmentStore(a).name in message and SegmentStore(b).name in message
            assert len(set(client.next_ids("order", 100))) == 100
        with LocalGenerator("pay", server.address) as generator, \
                pytest.raises(BizTypeMisconfigured):
            generator.next_id()
    assert row(a, "pay").max_id == row(b, "pay").max_id == 0  # nothing was handed out
    assert any("ERROR" in line and "'pay' is refused" in line for line in servers[0].output)


def test_rows_of_two_registrations_are_refused_even_when_their_classes_look_right(
        make_db, start_server):
    a, b, c, d = (make_db() for _ in range(4))
    init(a, b, c, d)
    assert idgen("add-biz", "x", *dbs([a, b])).returncode == 0  # even in a, odd in b
    assert idgen("add-biz", "x", *dbs([c, d])).returncode == 0  # even in c, odd in d
    server = start_server([a, d])  # even and odd: yet c hands out a's IDs, b d's
    with RemoteClient(server.address, retries=0) as client:
        with pytest.raises(BizTypeMisconfigured, match="registered apart"):
            client.next_ids("x", 1)


def test_add_biz_refuses_to_spread_a_registered_biz_type_and_says_how_to_add_a_database(make_db):
    a, b = make_db(), make_db()
    init(a, b)
    assert idgen("add-biz", "pay", "--db", a).returncode == 0
    result = idgen("add-biz", "pay", *dbs([a, b]))
    assert result.returncode == 1
    assert "registered for 1 database(s)" in result.stderr
    assert "Adding a database" in result.stderr
    assert row(b, "pay") is None


def test_add_biz_refuses_rows_in_only_some_of_the_databases(make_db):
    a, b = make_db(), make_db()
    init(a, b)
    first = SegmentStore(a)  # half of a registration: a stopped run, or a database lost since
    first.register("half", step=100, delta=2, remainder=0, registration="0123456789abcdef" * 2)
    first.close()
    result = idgen("add-biz", "half", "--step", "100", *dbs([a, b]))
    assert result.returncode == 1 and "has no row of it" in result.stderr, result.stderr
    assert row(b, "half") is None


# -- a max_id moved back ----------------------------------------------------------------

def test_a_lowered_max_id_is_never_handed_out_again_by_a_server_that_saw_it(make_db,
                                                                             start_server):
    url = make_db()
    init(url)
    assert idgen("add-biz", "back", "--step", "100", "--db", url).returncode == 0
    server = start_server([url])
    with RemoteClient(server.address) as client:
        before = [i for _ in range(5) for i in client.next_ids("back", 100)]
        before += list(client.next_segment("back").ids())
        high = row(url, "back").max_id
        edit(url, "max_id = 0", "back")  # a backup restored, or a hand edit
        fresh = list(client.next_segment("back").ids())  # floor 0, as from a fresh client
        buffered = client.next_ids("back", 1000)  # from before the edit, then fresh segments
    assert min(fresh) > high and buffered[-1] > high
    every = before + fresh + buffered
    assert len(every) == len(set(every))
    assert row(url, "back").max_id > high
    assert any("ERROR" in line and "reported max_id 0 for 'back', below what this server had "
               "seen" in line for line in server.output)


def test_a_lowered_max_id_is_moved_back_up_before_any_server_allocates(make_db, start_server):
    url = make_db()
    init(url)
    assert idgen("add-biz", "back", "--step", "100", "--db", url).returncode == 0
    server = start_server([url])
    with RemoteClient(server.address) as client:
        client.next_segment("back")
    high = row(url, "back").max_id
    edit(url, f"max_id = {high // 2}", "back")
    # No call at all: the server's watch finds the row below what it saw and moves it.
    eventually(lambda: _assert(row(url, "back").max_id >= high))
    assert any(f"reported max_id {high // 2} for 'back', below what this server had seen"
               in line and f"moved it back up to {high}." in line for line in server.output)


def test_a_server_that_only_read_a_row_guards_what_it_read(db_url):
    """What the watch reads counts as seen: a server that never allocated from a row
    still refuses to go below it, and moves it back up."""
    store = SegmentStore(db_url)
    store.create_schema()
    store.register("watched", step=10)
    writer = SegmentStore(db_url)
    high = max(writer.allocate("watched").end for _ in range(3))  # another server's allocations
    writer.close()
    with Allocator([store], watch_interval=0.05, probe_interval=0.02) as allocator:
        assert not allocator.exists("nothing")  # starts the watch
        eventually(lambda: _assert(store.high_water("watched") == high))
        edit(db_url, "max_id = 1", "watched")
        eventually(lambda: _assert(row(db_url, "watched").max_id == high))
        assert allocator.allocate("watched").start == high + 1


def _assert(condition: bool) -> bool:
    assert condition
    return condition


# -- damaged rows ---------------------------------------------------------------------

@pytest.mark.parametrize("damage, repair, named", [
    ("max_id = -7", "max_id = 0", "max_id is -7"),
    ("step = 0", "step = 100", "step is 0"),
    ("step = -5", "step = 100", "step is -5"),
    ("step = 4611686018427387904", "step = 100", "step is 4611686018427387904 (must be in 1.."),
    ("delta = 0", "delta = 1", "delta is 0"),
    ("remainder = 1", "remainder = 0", "remainder is 1"),
    ("delta = 200, step = 100", "delta = 1, step = 100", "step is 100, below delta 200"),
])
def test_a_damaged_row_is_named_and_served_again_once_repaired(make_db, start_server,
                                                               damage, repair, named):
    url = make_db()
    init(url)
    assert idgen("add-biz", "dmg", "--step", "100", "--db", url).returncode == 0
    edit(url, damage, "dmg")
    server = start_server([url])
    with RemoteClient(server.address, retries=0) as client:
        for call in (lambda: client.next_ids("dmg", 1), lambda: client.next_segment("dmg")):
            with pytest.raises(BizTypeMisconfigured) as info:
                call()
            assert f"'dmg' has a damaged row in {SegmentStore(url).name}: {named}" \
                in str(info.value)
        edit(url, repair, "dmg")
        ids = eventually(lambda: client.next_ids("dmg", 5))  # no restart
        segment = eventually(lambda: client.next_segment("dmg"))
    assert ids == sorted(set(ids)) and ids[0] >= 1 and segment.start > ids[-1]


# -- the embedded database ------------------------------------------------------------

def test_the_embedded_database_is_the_same_whatever_directory_the_server_runs_in(
        tmp_path, data_dir, start_server):
    seen = []
    for directory in ("one", "two"):
        (tmp_path / directory).mkdir()
        server = start_server([], cwd=str(tmp_path / directory))
        result = idgen("next", "default", "--count", "5", "--target", server.address)
        assert result.returncode == 0, result.stderr
        seen += [int(i) for i in result.stdout.split()]
        assert f"database 0: sqlite:///{data_dir}/idgen.db (embedded)" in "".join(server.output)
        server.stop()
    assert seen == sorted(set(seen)) and len(seen) == 10


def test_an_embedded_database_left_in_the_working_directory_is_not_silently_replaced(
        tmp_path, start_server):
    (tmp_path / "idgen.db").write_bytes(b"")
    with pytest.raises(RuntimeError, match="found .*idgen.db, the embedded database of an earlier"):
        start_server([], cwd=str(tmp_path))


def test_add_biz_refuses_to_complete_a_registration_some_database_already_allocated_from(
        make_db):
    a, b, c = make_db(), make_db(), make_db()
    init(a, b, c)
    assert idgen("add-biz", "x", "--step", "10", *dbs([a, b])).returncode == 0
    store = SegmentStore(b)
    store.allocate("x")  # b hands out odd IDs, then is lost; c is to take its place
    store.close()
    result = idgen("add-biz", "x", "--step", "10", *dbs([a, c]))
    assert result.returncode == 1 and "has no row of it" in result.stderr
    assert row(c, "x") is None


@pytest.mark.parametrize("value", ["'abc'", "9e999", "1.5", "NULL"])
def test_a_sqlite_row_holding_what_is_not_a_whole_number_is_damaged(sqlite_url, value):
    store = SegmentStore(sqlite_url)
    store.create_schema()
    store.register("typed", step=10)
    store.register("other", step=10)
    with store.engine.begin() as conn:  # SQLite keeps what a hand edit puts in
        conn.exec_driver_sql("CREATE TABLE t AS SELECT * FROM idgen_segment")
        conn.exec_driver_sql("DROP TABLE idgen_segment")
        conn.exec_driver_sql("CREATE TABLE idgen_segment AS SELECT * FROM t")  # no NOT NULL
        conn.exec_driver_sql(f"UPDATE idgen_segment SET max_id = {value} WHERE biz_type = 'typed'")
    with Allocator([store], watch_interval=0.05, probe_interval=0.02) as allocator:
        with pytest.raises(BizTypeMisconfigured, match="damaged row .* max_id is .*not a whole"):
            allocator.allocate("typed")
        assert allocator.allocate("other").start == 1  # the rest of the table is served
        assert allocator.exists("typed")
        eventually(lambda: _assert(allocator.healthy() == [True]))


def test_a_clash_stays_refused_while_the_clashing_database_cannot_be_read(mariadb_url,
                                                                           make_mariadb):
    from tests.support.databases import MARIADB_HOST, MARIADB_PORT
    from tests.support.proxy import TcpProxy

    proxy = TcpProxy(MARIADB_HOST, MARIADB_PORT)
    urls = [mariadb_url, proxy.url(make_mariadb())]
    stores = [SegmentStore(u, timeout=1) for u in urls]
    for store in stores:
        store.create_schema()
    register(stores, "x", step=10)
    edit(urls[1], "remainder = 0", "x")  # both hand out even IDs
    try:
        with Allocator(stores) as allocator:
            for _ in range(2):
                with pytest.raises(BizTypeMisconfigured, match="hand out the same IDs"):
                    allocator.allocate("x")
            proxy.refuse()  # the database whose row clashes goes away
            for _ in range(4):
                with pytest.raises(BizTypeMisconfigured, match="hand out the same IDs"):
                    allocator.allocate("x")
    finally:
        proxy.close()
    assert row(urls[0], "x").max_id == 0


def test_a_database_whose_class_changes_while_serving_starts_above_everything_seen(db_url,
                                                                                    sqlite_url):
    urls = [db_url, sqlite_url.replace("idgen.db", "other.db")]
    stores = [SegmentStore(u) for u in urls]
    for store in stores:
        store.create_schema()
    register(stores, "swap", step=10)
    with Allocator(stores) as allocator:
        before = [i for _ in range(6) for i in allocator.allocate("swap").ids()]
        before += [i for _ in range(5) for i in stores[1].allocate("swap").ids()]  # ahead
        # Two rows swapped by hand: still one valid set, but each database's next IDs are
        # of the class the other one handed out, up to where that one got.
        edit(urls[0], "remainder = 1", "swap")
        edit(urls[1], "remainder = 0", "swap")
        after = [i for _ in range(6) for i in allocator.allocate("swap").ids()]
    assert min(after) > max(before) and not set(after) & set(before)


def test_concurrent_allocations_never_log_a_max_id_gone_back(db_url, caplog):
    import threading

    store = SegmentStore(db_url)
    store.create_schema()
    store.register("busy", step=10)
    with Allocator([store]) as allocator:
        threads = [threading.Thread(target=lambda: [allocator.allocate("busy") for _ in range(50)])
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert row(db_url, "busy").max_id == 8 * 50 * 10
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_a_max_id_set_back_by_hand_is_never_reissued_by_a_server_that_saw_less(db_url):
    """A hand edit leaves the version alone: a server that missed the last allocations
    knows how many it missed, and starts above anything they could have claimed."""
    store = SegmentStore(db_url)
    store.create_schema()
    store.register("edited", step=10)
    lagging, busy = SegmentStore(db_url), SegmentStore(db_url)  # two servers, no watch
    seen = list(lagging.allocate("edited").ids())
    seen += [i for _ in range(4) for i in busy.allocate("edited", steps=3).ids()]
    edit(db_url, "max_id = 0", "edited")
    again = list(lagging.allocate("edited").ids())
    assert min(again) > max(seen)
    for s in (store, lagging, busy):
        s.close()


def test_a_row_that_appears_while_serving_starts_above_everything_seen(make_db):
    a, b, c = make_db(), make_db(), make_db()
    init(a, b, c)
    stores = [SegmentStore(u) for u in (a, b, c)]
    registration = "fedcba9876543210" * 2
    for k in (0, 1):
        stores[k].register("grow", step=10, delta=3, remainder=k, registration=registration)
    other = SegmentStore(a)  # another server, busy on a
    high = max(other.allocate("grow", steps=50).end for _ in range(3))
    other.close()
    with Allocator(stores, watch_interval=0.05, probe_interval=0.02) as allocator:
        allocator.allocate("grow")  # reads every database: c has no row
        eventually(lambda: _assert(stores[0].high_water("grow") >= high))
        fresh = SegmentStore(c)  # the third database's row, added by hand meanwhile
        fresh.register("grow", step=10, delta=3, remainder=2, registration=registration)
        fresh.close()
        segments = [allocator.allocate("grow") for _ in range(6)]
    from_c = [s for s in segments if s.remainder == 2]
    assert from_c and min(s.start for s in from_c) > high
