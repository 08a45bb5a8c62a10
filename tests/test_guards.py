"""Guards against operators' mistakes and damaged rows, on real servers (SQLite and MariaDB),
and, at the end, in-process: what a server process would hide from mutation testing.

Each test starts from a mistake a team can make with the documented commands or
a plain SQL client, and checks that no ID is handed out twice because of it.
"""
from __future__ import annotations

import logging

import pytest

from idgen_client import BizTypeMisconfigured, BizTypeMoving, InvalidRequest, LocalGenerator, RemoteClient
from idgen_core.errors import StorageUnavailable
from idgen_core.segment import MAX_STEP_MULTIPLIER
from idgen_server import rowset as rowset_module
from idgen_server.allocator import Allocator
from idgen_server.highwater import HighWater
from idgen_server.registry import register
from idgen_server.rows import (
    MAX_ROW_STEP, PENDING, BizRow, check_residue_set, check_row, new_registration, residue_class)
from idgen_server.rowset import LOUD_EVERY
from idgen_server.store import SegmentStore
from tests.support.fakes import Clock, spy
from tests.support.cli import add_biz, db_args, idgen, init_db
from tests.support.databases import database_kinds, database_maker
from tests.support.proxy import behind_proxy
from tests.support.stores import edit_row, open_stores, read_row, register_as, registered
from tests.support.threads import run_threads
from tests.support.waiting import eventually, wait_until


@pytest.fixture(params=database_kinds("sqlite", "mariadb"))
def make_db(request, tmp_path):
    """Makes fresh empty databases of one kind: ``make_db()`` returns a URL."""
    return database_maker(request, request.param, tmp_path)


def registered_by_cli(url: str, biz_type: str) -> str:
    """``url``, after ``idgen init-db`` and ``idgen add-biz BIZ_TYPE --step 100`` on it."""
    init_db(url)
    add_biz(biz_type, url, step=100)
    return url


# -- rows registered apart ------------------------------------------------------------

def test_a_biz_type_registered_apart_in_two_databases_is_refused_and_others_are_served(
        make_db, start_server):
    a, b = make_db(), make_db()
    init_db(a, b)
    for one in (a, b):  # "later, a second database for availability", the wrong way
        add_biz("pay", one)
    add_biz("order", a, b)
    servers = [start_server([a, b]) for _ in range(2)]
    for server in servers:
        with RemoteClient(server.address, retries=0) as client:
            for call in (lambda: client.next_ids("pay", 10), lambda: client.next_segment("pay")):
                with pytest.raises(BizTypeMisconfigured) as info:
                    call()
                message = str(info.value)
                assert "'pay' is refused" in message and "delta is 1" in message
                # Callers see the databases by label; only the log has their URLs.
                assert "db0" in message and "db1" in message
                assert SegmentStore(a).name not in message and SegmentStore(b).name not in message
            assert len(set(client.next_ids("order", 100))) == 100
        with LocalGenerator("pay", server.address) as generator, \
                pytest.raises(BizTypeMisconfigured):
            generator.next_id()
    assert read_row(a, "pay").max_id == read_row(b, "pay").max_id == 0  # nothing was handed out
    assert any("ERROR" in line and "'pay' is refused" in line and SegmentStore(a).name in line
               for line in servers[0].output)


def test_rows_of_two_registrations_are_refused_even_when_their_classes_look_right(
        make_db, start_server):
    a, b, c, d = (make_db() for _ in range(4))
    init_db(a, b, c, d)
    add_biz("x", a, b)  # even in a, odd in b
    add_biz("x", c, d)  # even in c, odd in d
    server = start_server([a, d])  # even and odd: yet c hands out a's IDs, b d's
    with RemoteClient(server.address, retries=0) as client:
        with pytest.raises(BizTypeMisconfigured, match="registered apart"):
            client.next_ids("x", 1)


def test_add_biz_refuses_to_spread_a_registered_biz_type_and_says_how_to_add_a_database(make_db):
    a, b = make_db(), make_db()
    init_db(a, b)
    add_biz("pay", a)
    result = idgen("add-biz", "pay", *db_args([a, b]))
    assert result.returncode == 1
    assert "registered for 1 database(s)" in result.stderr
    assert "idgen add-db pay --db" in result.stderr
    assert read_row(b, "pay") is None


def test_add_biz_refuses_rows_in_only_some_of_the_databases(make_db):
    a, b = make_db(), make_db()
    init_db(a, b)
    first = SegmentStore(a)  # half of a registration: a stopped run, or a database lost since
    register_as(first, "half", step=100, index=0, count=2, registration="0123456789abcdef" * 2)
    first.close()
    result = idgen("add-biz", "half", "--step", "100", *db_args([a, b]))
    assert result.returncode == 1 and "has no row of it" in result.stderr, result.stderr
    assert read_row(b, "half") is None


# -- a max_id moved back ----------------------------------------------------------------

def test_a_lowered_max_id_is_never_handed_out_again_by_a_server_that_saw_it(make_db,
                                                                             start_server):
    url = registered_by_cli(make_db(), "back")
    server = start_server([url])
    with RemoteClient(server.address) as client:
        before = [i for _ in range(5) for i in client.next_ids("back", 100)]
        before += list(client.next_segment("back").ids())
        high = read_row(url, "back").max_id
        edit_row(url, "back", "max_id = 0")  # a backup restored, or a hand edit
        fresh = list(client.next_segment("back").ids())  # floor 0, as from a fresh client
        buffered = client.next_ids("back", 1000)  # from before the edit, then fresh segments
    assert min(fresh) > high and buffered[-1] > high
    every = before + fresh + buffered
    assert len(every) == len(set(every))
    assert read_row(url, "back").max_id > high
    assert any("ERROR" in line and "reported max_id 0 for 'back', below what this server had "
               "seen" in line for line in server.output)


def test_a_lowered_max_id_is_moved_back_up_before_any_server_allocates(make_db, start_server):
    url = registered_by_cli(make_db(), "back")
    server = start_server([url])
    with RemoteClient(server.address) as client:
        client.next_segment("back")
    high = read_row(url, "back").max_id
    edit_row(url, "back", f"max_id = {high // 2}")
    # No call at all: the server's watch finds the row below what it saw and moves it.
    wait_until(lambda: read_row(url, "back").max_id >= high, 20, "the row moved back up",
               interval=0.1, ignoring=Exception)
    assert any(f"reported max_id {high // 2} for 'back', below what this server had seen"
               in line and f"moved it back up to {high}." in line for line in server.output)


def test_a_server_that_only_read_a_row_guards_what_it_read(db_url):
    """What the watch reads counts as seen: a server that never allocated from a row
    still refuses to go below it, and moves it back up."""
    [store] = registered([db_url], "watched", step=10)
    writer = SegmentStore(db_url)
    high = max(writer.allocate("watched").end for _ in range(3))  # another server's allocations
    writer.close()
    with Allocator([store], watch_interval=0.05, probe_interval=0.02) as allocator:
        assert not allocator.exists("nothing")  # starts the watch
        wait_until(lambda: store.high_water("watched") == high, 20, "the watch to read the row",
                   interval=0.1)
        edit_row(db_url, "watched", "max_id = 1")
        wait_until(lambda: read_row(db_url, "watched").max_id == high, 20, "the row moved back up",
                   interval=0.1, ignoring=Exception)
        assert allocator.allocate("watched").start == high + 1


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
    url = registered_by_cli(make_db(), "dmg")
    edit_row(url, "dmg", damage)
    server = start_server([url])
    with RemoteClient(server.address, retries=0) as client:
        for call in (lambda: client.next_ids("dmg", 1), lambda: client.next_segment("dmg")):
            with pytest.raises(BizTypeMisconfigured) as info:
                call()
            assert f"'dmg' has a damaged row in db0: {named}" in str(info.value)
        edit_row(url, "dmg", repair)
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
        assert f"database 0 (db0): sqlite:///{data_dir}/idgen.db (embedded)" in "".join(server.output)
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
    init_db(a, b, c)
    add_biz("x", a, b, step=10)
    store = SegmentStore(b)
    store.allocate("x")  # b hands out odd IDs, then is lost; c is to take its place
    store.close()
    result = idgen("add-biz", "x", "--step", "10", *db_args([a, c]))
    assert result.returncode == 1 and "has no row of it" in result.stderr
    assert read_row(c, "x") is None


@pytest.mark.parametrize("value", ["'abc'", "9e999", "1.5", "NULL"])
def test_a_sqlite_row_holding_what_is_not_a_whole_number_is_damaged(sqlite_url, value):
    [store] = open_stores([sqlite_url])
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
        wait_until(lambda: allocator.healthy() == [True], 20, "the database to be healthy",
                   interval=0.1)


def test_a_clash_stays_refused_while_the_clashing_database_cannot_be_read(mariadb_url,
                                                                           make_mariadb):
    proxy, via_proxy = behind_proxy(make_mariadb())
    urls = [mariadb_url, via_proxy]
    stores = registered(urls, "x", step=10, timeout=1)
    edit_row(urls[1], "x", "remainder = 0")  # both hand out even IDs
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
    assert read_row(urls[0], "x").max_id == 0


def test_a_database_whose_class_changes_while_serving_starts_above_everything_seen(db_url,
                                                                                    sqlite_url,
                                                                                    caplog):
    urls = [db_url, sqlite_url.replace("idgen.db", "other.db")]
    stores = registered(urls, "swap", step=10)
    with Allocator(stores) as allocator:
        before = [i for _ in range(6) for i in allocator.allocate("swap").ids()]
        before += [i for _ in range(5) for i in stores[1].allocate("swap").ids()]  # ahead
        # Two rows swapped by hand: still one valid set, but each database's next IDs are
        # of the class the other one handed out, up to where that one got.
        edit_row(urls[0], "swap", "remainder = 1")
        edit_row(urls[1], "swap", "remainder = 0")
        after = [i for _ in range(6) for i in allocator.allocate("swap").ids()]
    assert min(after) > max(before) and not set(after) & set(before)
    changes = [r.getMessage().split(" while")[0] for r in caplog.records
               if "while this server ran" in r.getMessage()]
    assert sorted(changes) == sorted([  # once for each database: its later segments follow on
        f"database {stores[0].name}: the row of 'swap' changed its residue class from 0 mod 2 "
        "to 1 mod 2",
        f"database {stores[1].name}: the row of 'swap' changed its residue class from 1 mod 2 "
        "to 0 mod 2"])


def test_concurrent_allocations_never_log_a_max_id_gone_back(db_url, caplog):
    with Allocator(registered([db_url], "busy", step=10)) as allocator:
        run_threads(lambda: [allocator.allocate("busy") for _ in range(50)], [()] * 8)
    assert read_row(db_url, "busy").max_id == 8 * 50 * 10
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_a_max_id_set_back_by_hand_is_never_reissued_by_a_server_that_saw_less(db_url):
    """A hand edit leaves the version alone: a server that missed the last allocations
    knows how many it missed, and starts above anything they could have claimed."""
    [store] = registered([db_url], "edited", step=10)
    lagging, busy = SegmentStore(db_url), SegmentStore(db_url)  # two servers, no watch
    seen = list(lagging.allocate("edited").ids())
    seen += [i for _ in range(4) for i in busy.allocate("edited", steps=3).ids()]
    edit_row(db_url, "edited", "max_id = 0")
    again = list(lagging.allocate("edited").ids())
    assert min(again) > max(seen)
    for s in (store, lagging, busy):
        s.close()


def test_a_row_that_appears_while_serving_starts_above_everything_seen(make_db, caplog):
    a, b, c = make_db(), make_db(), make_db()
    init_db(a, b, c)
    stores = [SegmentStore(u) for u in (a, b, c)]
    registration = "fedcba9876543210" * 2
    for k in (0, 1):  # the rows of a, b and c, but c's is not written yet
        register_as(stores[k], "grow", step=10, index=k, count=3, registration=registration)
    other = SegmentStore(a)  # another server, busy on a
    high = max(other.allocate("grow", steps=50).end for _ in range(3))
    other.close()
    with Allocator(stores, watch_interval=0.05, probe_interval=0.02) as allocator:
        allocator.allocate("grow")  # reads every database: c has no row
        wait_until(lambda: stores[0].high_water("grow") >= high, 20, "the watch to read a's row",
                   interval=0.1)
        fresh = SegmentStore(c)  # the third database's row, added by hand meanwhile
        register_as(fresh, "grow", step=10, index=2, count=3, registration=registration)
        fresh.close()
        segments = [allocator.allocate("grow") for _ in range(6)]
    from_c = [s for s in segments if s.remainder == 2]
    assert from_c and min(s.start for s in from_c) > high
    [appeared] = [r.getMessage() for r in caplog.records if "appeared" in r.getMessage()]
    assert appeared.startswith(f"database {stores[2].name}: the row of 'grow' appeared while "
                               "this server ran: its next segment is cut above ")


# == The same guards in-process: the repair, the high water, refusals in the log ===============

DEAD = "mysql+pymysql://root@127.0.0.1:1/nothing"  # refuses every connection at once


@pytest.fixture
def store(sqlite_url):
    [store] = open_stores([sqlite_url])
    yield store
    store.close()


# -- SegmentStore.raise_to: the repair, a compare-and-set on the version ----------------------

def test_raise_to_moves_max_id_up_and_the_version_on_by_one(store):
    store.register("order", step=10)
    row = store.read("order")
    assert store.raise_to(row, 150)
    after = store.read("order")
    assert (after.max_id, after.version) == (150, row.version + 1)


def test_raise_to_never_moves_max_id_down_nor_to_where_it_is(store):
    store.register("order", step=10)
    store.allocate("order")
    row = store.read("order")
    assert not store.raise_to(row, row.max_id)
    assert not store.raise_to(row, row.max_id - 5)
    assert store.read("order") == row


def test_raise_to_a_row_changed_since_it_was_read_changes_nothing(store):
    store.register("order", step=10)
    stale = store.read("order")
    store.allocate("order")
    row = store.read("order")
    assert not store.raise_to(stale, 500)
    assert store.read("order") == row


def test_raise_to_touches_only_the_row_of_its_biz_type(store):
    store.register("order", step=10)
    store.register("user", step=10)
    other = store.read("user")
    assert store.raise_to(store.read("order"), 70)
    assert store.read("user") == other


def test_raise_to_logs_the_rollback_and_raises_the_high_water(store, caplog):
    store.register("order", step=10)
    row = store.read("order")
    assert store.raise_to(row, 90)
    assert store.high_water("order") == 90
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert f"database {store.name} reported max_id 0 for 'order'" in message
    assert "moved it back up to 90" in message


def test_raise_to_an_unreachable_database_is_storage_unavailable_naming_it():
    store = SegmentStore(DEAD, timeout=1)
    row = BizRow("order", max_id=0, step=10, delta=1, remainder=0, version=0)
    with pytest.raises(StorageUnavailable, match=r"127.0.0.1:1.* is unreachable or failing "
                       r"\(OperationalError\)"):
        store.raise_to(row, 10)
    store.close()


def test_after_a_repair_a_max_id_lowered_again_by_hand_is_marked_at_the_repair(store):
    store.register("order", step=10)
    assert store.raise_to(store.read("order"), 90)
    edit_row(store, "order", "max_id = 0")  # by hand: the version stays as the repair left it
    assert store.mark(store.read("order")) == 90  # not a step higher per version unseen


def test_the_high_water_of_a_biz_type_never_read_is_0(store):
    store.register("order", step=10)
    assert store.high_water("order") == 0
    store.allocate("order")
    store.read("order")
    assert store.high_water("order") == 10
    assert store.high_water("user") == 0


def test_a_max_id_moved_back_is_moved_up_again_by_the_watch(store, caplog):
    store.register("order", step=10)
    with Allocator([store], probe_interval=0.02, watch_interval=0.02) as allocator:
        handed_out = allocator.allocate("order")
        edit_row(store, "order", "max_id = 0")  # a backup restored, say
        allocator.start()
        wait_until(lambda: store.read("order").max_id >= handed_out.end, 10,
                   "the watch to move the row back up")
        assert allocator.allocate("order").start > handed_out.end
    assert any("moved it back up" in r.getMessage() for r in caplog.records)


def test_a_damaged_row_below_the_high_water_is_left_for_a_person(store):
    store.register("order", step=10)
    with Allocator([store], probe_interval=0.02, watch_interval=0.02) as allocator:
        allocator.allocate("order")
        edit_row(store, "order", "max_id = 0, delta = 0")  # lowered, and damaged
        raised = []
        store.raise_to = lambda row, max_id: raised.append(max_id) or False  # type: ignore[method-assign]
        allocator.start()
        wait_until(lambda: "order" in allocator.last_read(0)
                   and allocator.last_read(0)["order"].delta == 0, 10, "the watch to read the row")
        with pytest.raises(BizTypeMisconfigured, match=f"damaged row in {store.name}"):
            allocator.allocate("order")
    assert raised == []


# -- RowSet.refuse: loud once a minute per refusal ----------------------------------------------

def _refusals(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "idgen_server.rowset" and r.levelno == level]


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(1000.0)
    monkeypatch.setattr(rowset_module.time, "monotonic", clock)
    return clock


def test_a_refusal_is_logged_once_a_minute_as_an_error(store, caplog, clock):
    store.register("order", step=10)
    edit_row(store, "order", "delta = 0")
    with Allocator([store]) as allocator:
        for _ in range(3):
            with pytest.raises(BizTypeMisconfigured):
                allocator.allocate("order")
        assert len(_refusals(caplog, logging.ERROR)) == 1
        clock.now += LOUD_EVERY - 1
        with pytest.raises(BizTypeMisconfigured):
            allocator.allocate("order")
        assert len(_refusals(caplog, logging.ERROR)) == 1
        clock.now += 1
        with pytest.raises(BizTypeMisconfigured):
            allocator.allocate("order")
    [first, second] = _refusals(caplog, logging.ERROR)
    assert first == second and "biz type 'order' has a damaged row" in first


def test_a_refusal_for_another_reason_is_logged_at_once(store, caplog, clock):
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        for assignment, damage in (("delta = 0", "delta is 0"), ("delta = 1, step = 0", "step is 0")):
            edit_row(store, "order", assignment)
            with pytest.raises(BizTypeMisconfigured, match=damage):
                allocator.allocate("order")
    assert [damage in message for message, damage in zip(
        _refusals(caplog, logging.ERROR), ("delta is 0", "step is 0"), strict=True)] == [True, True]


def test_each_biz_type_refused_is_logged_once(store, caplog, clock):
    for biz_type in ("a", "b"):
        store.register(biz_type, step=10)
        edit_row(store, biz_type, "delta = 0")
    with Allocator([store]) as allocator:
        for biz_type in ("a", "b", "a", "b"):
            with pytest.raises(BizTypeMisconfigured):
                allocator.allocate(biz_type)
    assert [m.split(" has")[0] for m in _refusals(caplog, logging.ERROR)] == [
        "biz type 'a'", "biz type 'b'"]


def test_a_pause_met_in_each_frozen_database_is_logged_once(tmp_path, caplog, clock):
    stores = open_stores([f"sqlite:///{tmp_path}/{name}.db" for name in ("a", "b")])
    register(stores, "order", step=10)
    for store in stores:
        edit_row(store, "order", f"registration = '{PENDING}1'")
    with Allocator(stores) as allocator:
        for _ in range(4):  # allocations take the frozen databases in turn
            with pytest.raises(BizTypeMoving):
                allocator.allocate("order")
    assert len(_refusals(caplog, logging.WARNING)) == 1
    for store in stores:
        store.close()


def test_a_pause_is_a_warning_not_an_error(store, caplog, clock):
    store.register("order", step=10)
    edit_row(store, "order", f"registration = '{PENDING}1'")
    with Allocator([store]) as allocator:
        with pytest.raises(BizTypeMoving):
            allocator.allocate("order")
    assert _refusals(caplog, logging.ERROR) == []
    [warning] = _refusals(caplog, logging.WARNING)
    assert warning.startswith("biz type 'order' is being moved")



# -- RowSet: the watch, the reads of every database, what is surely unknown ---------------------

def test_the_watch_benches_a_database_it_cannot_read_naming_the_failure(store):
    with Allocator([store, SegmentStore(DEAD, timeout=1)]) as allocator:
        allocator._rows.watch(1)
        assert allocator.healthy() == [True, False]
        assert "is unreachable or failing (OperationalError)" in allocator.health()[1].last_error


def test_the_watch_puts_a_benched_database_that_answers_back_in_turn(store):
    with Allocator([store], probe_interval=60) as allocator:
        allocator.bench(0, StorageUnavailable("down a moment ago"))
        allocator._rows.watch(0)
        assert allocator.healthy() == [True]


def test_the_watch_benches_a_database_whose_repair_fails(store):
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        allocator.allocate("order")
        edit_row(store, "order", "max_id = 0")  # a backup restored, say

        def fail(row: BizRow, max_id: int) -> bool:
            raise StorageUnavailable("the repair did not reach the database")

        store.raise_to = fail  # type: ignore[method-assign]
        allocator._rows.watch(0)
        assert allocator.healthy() == [False]
        assert allocator.health()[0].last_error == "the repair did not reach the database"


def test_the_watch_writes_no_row_that_is_at_its_high_water(store):
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        allocator.allocate("order")
        repairs = spy(store, "raise_to")
        allocator._rows.watch(0)
    assert repairs == []


def test_the_watch_forgets_a_row_deleted_and_keeps_the_last_of_one_damaged(store):
    for biz_type in ("kept", "gone", "broken"):
        store.register(biz_type, step=10)
    with Allocator([store]) as allocator:
        for biz_type in ("kept", "gone", "broken"):
            allocator.allocate(biz_type)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM idgen_segment WHERE biz_type = 'gone'")
        edit_row(store, "broken", "delta = 'x'")
        allocator._rows.watch(0)
        assert sorted(allocator.last_read(0)) == ["broken", "kept"]
        assert allocator.last_read(0)["broken"].delta == 1  # as last read whole


def test_read_all_names_the_damaged_rows_apart_and_reads_every_other(store):
    for biz_type in ("a", "b", "c"):
        store.register(biz_type, step=10)
    edit_row(store, "a", "step = 'x'")
    rows, damaged = store.read_all()
    assert sorted(rows) == ["b", "c"]
    assert damaged == frozenset({"a"})


def test_a_name_is_surely_unknown_for_two_watch_intervals_after_its_table_was_read(store, clock):
    with Allocator([store], watch_interval=0.5) as allocator:
        allocator._rows.watch(0)  # at 1000.0
        clock.now = 1001.0
        assert allocator._rows.surely_unknown("nosuch")
        clock.now = 1001.25
        assert not allocator._rows.surely_unknown("nosuch")  # stale: the database is asked


def test_a_read_of_every_database_goes_on_past_one_that_fails(store):
    store.register("order", step=10, delta=2, remainder=1)
    with Allocator([SegmentStore(DEAD, timeout=1), store]) as allocator:
        with pytest.raises(StorageUnavailable, match=r"for 'order' \(db0 unreachable\), so"):
            allocator.highest("order")
        assert allocator.healthy() == [False, True]
        assert "is unreachable or failing (OperationalError)" in allocator.health()[0].last_error


def test_the_check_at_an_allocation_reads_only_the_databases_not_read_yet(tmp_path):
    stores = open_stores([f"sqlite:///{tmp_path}/{name}.db" for name in ("a", "b")])
    register(stores, "order", step=10)
    reads = [spy(s, "read") for s in stores]
    with Allocator(stores) as allocator:
        assert allocator.allocate("order").remainder == 0
    assert [len(r) for r in reads] == [0, 1]  # db0's own row comes with its allocation


def test_a_registration_changed_by_hand_while_serving_is_logged_and_cut_above_all(store, caplog):
    register([store], "order", step=10)
    with Allocator([store]) as allocator:
        first = allocator.allocate("order")
        edit_row(store, "order", "registration = '" + "0f" * 16 + "'")
        after = allocator.allocate("order")
    assert after.start > first.end
    [changed] = [r.getMessage() for r in caplog.records if "while this server ran" in r.getMessage()]
    assert changed == (f"database {store.name}: the row of 'order' changed its registration while "
                       f"this server ran: its next segment is cut above {first.end}, the highest "
                       "max_id this server has seen in any database")


# -- the lease table ------------------------------------------------------------------------------

def test_a_lease_table_that_cannot_be_reached_is_storage_unavailable_naming_the_database():
    store = SegmentStore(DEAD, timeout=1)
    with pytest.raises(StorageUnavailable, match=r"127.0.0.1:1.* is unreachable or failing "
                       r"\(OperationalError\)") as info:
        store.leases.read("order", "chat")
    assert not isinstance(info.value, BizTypeMisconfigured)
    store.close()



# -- the high water ---------------------------------------------------------------------------------

def test_a_row_below_a_mark_of_nothing_seen_counts_every_version_it_has_as_unseen():
    row = BizRow("order", max_id=-1, step=10, delta=1, remainder=0, version=3)
    assert HighWater("db0").mark(row) == 3 * 10 * MAX_STEP_MULTIPLIER


def test_the_first_row_seen_raises_a_mark_of_nothing_to_its_max_id():
    high_water = HighWater("db0")
    high_water.observe(BizRow("order", max_id=1, step=10, delta=1, remainder=0, version=1))
    assert high_water.level("order") == 1


def test_a_row_seen_again_at_the_same_max_id_leaves_the_mark_and_its_version_as_they_were():
    high_water = HighWater("db0")
    for version in (5, 7):  # e.g. a set-step moved the version on, not max_id
        high_water.observe(BizRow("order", max_id=100, step=10, delta=1, remainder=0, version=version))
    back = BizRow("order", max_id=50, step=10, delta=1, remainder=0, version=8)
    assert high_water.mark(back) == 100 + 3 * 10 * MAX_STEP_MULTIPLIER  # versions 6..8 unseen


# -- rows.check_residue_set: the set's rules, and what each refusal says ---------------------------

def _row(delta: int, remainder: int, registration: str = "0123456789abcdef", **fields: int) -> BizRow:
    values = {"max_id": 0, "step": 100, "version": 1, **fields}
    return BizRow("pay", delta=delta, remainder=remainder, registration=registration, **values)


def _refusal(rows: dict[str, BizRow], databases: int) -> str:
    with pytest.raises(BizTypeMisconfigured) as info:
        check_residue_set("pay", rows, databases)
    return str(info.value)


_REFUSED = ("biz type 'pay' is refused: its rows do not form one set of distinct residue classes "
            "({}); nothing is handed out for it until the rows are repaired (README: what the "
            "server checks)")


def test_one_registration_of_distinct_classes_wide_enough_passes():
    check_residue_set("pay", {"a": _row(3, 0), "b": _row(3, 2)}, 3)
    check_residue_set("pay", {"a": _row(3, 1)}, 2)  # wider than the databases served: fine
    check_residue_set("pay", {}, 2)  # nothing read yet: nothing to refuse


def test_rows_of_two_deltas_are_refused_naming_each_delta_and_database():
    assert _refusal({"a": _row(2, 0), "b": _row(3, 1)}, 2) == _REFUSED.format(
        "their delta differs: delta 2 in a, delta 3 in b")


def test_a_delta_below_the_databases_served_is_refused_saying_what_to_run():
    assert _refusal({"a": _row(2, 0)}, 3) == _REFUSED.format(
        "delta is 2, but this server uses 3 databases: each needs delta 3 or more, or two of "
        "them could hand out the same IDs (to add a database to a biz type in use, run idgen "
        "add-db; else give the server the databases the biz type was registered for)")


def test_rows_registered_apart_are_refused_naming_each_registration_by_its_first_8_digits():
    rows = {"a": _row(2, 0, "0123456789abcdef"), "b": _row(2, 1, "")}
    assert _refusal(rows, 2) == _REFUSED.format(
        "they were registered apart: registration 01234567 in a, registration (none) in b")


def test_two_rows_of_one_class_are_refused_naming_both_databases_and_the_class():
    rows = {"a": _row(2, 1), "b": _row(2, 0), "c": _row(2, 1)}
    assert _refusal(rows, 2) == _REFUSED.format("a and c hand out the same IDs, those = 1 (mod 2)")


def test_every_problem_of_a_set_is_named_in_one_refusal():
    rows = {"a": _row(2, 0, "0123456789abcdef"), "b": _row(3, 0, "fedcba9876543210")}
    assert _refusal(rows, 2) == _REFUSED.format(
        "their delta differs: delta 2 in a, delta 3 in b; they were registered apart: "
        "registration 01234567 in a, registration fedcba98 in b")


def test_a_damaged_row_in_a_set_is_refused_naming_its_database():
    rows = {"a": _row(2, 0), "b": _row(2, 1, max_id=-5)}
    assert _refusal(rows, 2) == ("biz type 'pay' has a damaged row in b: max_id is -5 (must be at "
                                 "least 0); nothing is handed out for it until the rows are "
                                 "repaired (README: what the server checks)")


# -- rows.check_row, residue_class, new_registration ----------------------------------------------

@pytest.mark.parametrize("fields, told", [
    ({"max_id": -1}, "max_id is -1 (must be at least 0)"),
    ({"step": 0}, "step is 0 (must be in 1..1000000000000)"),
    ({"step": MAX_ROW_STEP + 1}, "step is 1000000000001 (must be in 1..1000000000000)"),
    ({"delta": 0, "remainder": 0}, "delta is 0 (must be at least 1)"),
    ({"remainder": -1}, "remainder is -1 (must be in 0..1, below delta)"),
    ({"remainder": 2}, "remainder is 2 (must be in 0..1, below delta)"),
    ({"step": 1}, "step is 1, below delta 2 (segments would hold no ID)"),
])
def test_a_damaged_row_is_refused_naming_its_database_and_field(fields, told):
    row = _row(**{"delta": 2, "remainder": 1, **fields})
    with pytest.raises(BizTypeMisconfigured) as info:
        check_row("db1", row)
    assert str(info.value) == (f"biz type 'pay' has a damaged row in db1: {told}; nothing is "
                               "handed out for it until the rows are repaired (README: what the "
                               "server checks)")


@pytest.mark.parametrize("fields", [
    {"max_id": 0}, {"step": MAX_ROW_STEP}, {"delta": 1, "remainder": 0, "step": 1},
    {"remainder": 0}, {"step": 2},
])
def test_a_row_at_each_bound_is_sound(fields):
    check_row("db1", _row(**{"delta": 2, "remainder": 1, **fields}))


def test_a_row_frozen_by_a_move_is_a_pause_naming_its_database():
    with pytest.raises(BizTypeMoving) as info:
        check_row("db1", _row(2, 1, PENDING + "0123"))
    assert str(info.value) == (
        "biz type 'pay' is being moved to another set of databases (idgen add-db): db1 cuts no "
        "segment of it until the move is finished, in moments; retry shortly, and if the command "
        "stopped halfway, run it again")


def test_database_k_of_n_gets_delta_n_and_remainder_k():
    assert [residue_class(k, 3) for k in range(3)] == [(3, 0), (3, 1), (3, 2)]
    assert residue_class(0, 1) == (1, 0)


@pytest.mark.parametrize("index", [-1, 3])
def test_a_database_index_outside_the_count_is_refused(index):
    with pytest.raises(InvalidRequest, match=rf"^database index {index} is not in 0\.\.2$"):
        residue_class(index, 3)


def test_each_registration_is_32_fresh_hex_digits():
    first, second = new_registration(), new_registration()
    assert len(first) == 32 and int(first, 16) >= 0 and first != second


# -- RowSet.remember: what is kept, and a step changed while serving --------------------------------

def _steps_logged(store: SegmentStore, caplog: pytest.LogCaptureFixture,
                  *reads: tuple[int, int]) -> list[logging.LogRecord]:
    """The step changes logged when ``store``'s row of 'pay' is read as each (step, version)."""
    caplog.set_level(logging.INFO, logger=rowset_module.__name__)
    with Allocator([store], probe_interval=60, watch_interval=60) as allocator:
        for step, version in reads:
            allocator._rows.remember("pay", {0: _row(1, 0, step=step, version=version)})
    return [r for r in caplog.records
            if r.name == rowset_module.__name__ and "the step of" in r.getMessage()]


def test_a_step_changed_while_serving_is_logged_once_naming_the_database_and_both_steps(
        store, caplog):
    # Read, allocated from (same step), idgen set-step, allocated from again.
    [record] = _steps_logged(store, caplog, (100, 3), (100, 4), (250, 5), (250, 6))
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"database {store.name}: the step of 'pay' changed from 100 to 250"
    assert (record.db, record.biz_type, record.step, record.previous) == (store.name, "pay", 250, 100)


def test_a_step_changed_by_hand_at_the_same_version_is_logged_and_an_older_read_is_not(
        store, caplog):
    # Read; edited by hand (the version as it was); then a slower read of an older version.
    records = _steps_logged(store, caplog, (100, 3), (300, 3), (100, 2))
    assert [r.getMessage() for r in records] == [
        f"database {store.name}: the step of 'pay' changed from 100 to 300"]


def test_names_no_database_holds_are_not_kept_however_many_are_asked_for(store):
    with Allocator([store], probe_interval=60, watch_interval=60) as allocator:
        for n in range(100):
            allocator._rows.remember(f"nosuch-{n}", {0: None})
        assert allocator._rows._rows == {}  # bounded by the tables, never by what clients send


def test_a_row_deleted_is_forgotten_and_one_that_comes_back_counts_as_appeared(store, caplog):
    with Allocator([store], probe_interval=60, watch_interval=60) as allocator:
        rows = allocator._rows
        rows.remember("pay", {0: _row(1, 0)})
        rows.remember("pay", {0: None})  # deleted
        assert allocator.last_read(0) == {}
        rows.remember("pay", {0: _row(1, 0)})  # registered again
        rows._class_floor("pay", 0, _row(1, 0))
    assert any(f"database {store.name}: the row of 'pay' appeared while this server ran"
               in r.getMessage() for r in caplog.records)


def test_the_class_a_row_was_first_read_in_is_what_a_change_is_told_against(store, caplog):
    with Allocator([store], probe_interval=60, watch_interval=60) as allocator:
        rows = allocator._rows
        rows.remember("pay", {0: _row(2, 0)})  # read by the watch, nothing cut from it yet
        rows.remember("pay", {0: _row(2, 1)})
        rows._class_floor("pay", 0, _row(2, 1))
    assert any(f"database {store.name}: the row of 'pay' changed its residue class from 0 mod 2 "
               "to 1 mod 2 while this server ran" in r.getMessage() for r in caplog.records)
