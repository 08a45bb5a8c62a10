"""Allocation from real databases: SQLite, MariaDB and PostgreSQL."""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import sqlalchemy.exc

from idgen_client import (
    INT64_MAX,
    BizTypeConflict,
    BizTypeMisconfigured,
    BizTypeMoving,
    ConfigError,
    IdSpaceExhausted,
    InvalidRequest,
    UnknownBizType,
)
from idgen_core.errors import ServiceUnavailable, StorageUnavailable
from idgen_core.segment import MAX_STEP_MULTIPLIER
from idgen_server import allocator as allocator_module
from idgen_server import store as store_module
from idgen_server.allocator import Allocator
from idgen_server.registry import register
from idgen_server.rows import MAX_ROW_STEP, PENDING, BizRow, residue_class
from idgen_server.store import SegmentStore
from tests.support.fakes import spy
from tests.support.proxy import behind_proxy
from tests.support.stores import edit_row, open_stores, register_as, registered
from tests.support.threads import run_threads
from tests.support.waiting import wait_until


@pytest.fixture
def store(db_url):
    [store] = open_stores([db_url])
    yield store
    store.close()


def test_schema_creation_upgrades_a_table_from_an_older_idgen_and_is_harmless_to_repeat(db_url):
    store = SegmentStore(db_url)
    with store.engine.begin() as conn:  # the table as idgen made it before registrations
        conn.exec_driver_sql(
            "CREATE TABLE idgen_segment (biz_type VARCHAR(64) NOT NULL PRIMARY KEY, "
            "max_id BIGINT NOT NULL, step BIGINT NOT NULL, delta INTEGER NOT NULL, "
            "remainder INTEGER NOT NULL, version BIGINT NOT NULL, "
            "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
            "updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        conn.exec_driver_sql("INSERT INTO idgen_segment (biz_type, max_id, step, delta, remainder, "
                             "version) VALUES ('old', 500, 10, 1, 0, 7)")
    with pytest.raises(ConfigError, match="older idgen.*no registration.*idgen init-db"):
        store.check_ready()
    store.create_schema()
    store.create_schema()
    store.check_ready()
    assert store.read("old").registration == ""
    assert store.allocate("old").start == 501
    store.close()


def test_segments_are_consecutive_claims_of_step(store):
    store.register("order", step=100)
    first, second = store.allocate("order"), store.allocate("order")
    assert (first.start, first.end) == (1, 100)
    assert (second.start, second.end) == (101, 200)


def test_registering_again_alike_is_harmless_and_differently_is_a_conflict(store):
    delta, remainder = residue_class(1, 2)  # the second database of two
    assert store.register("order", step=100, delta=delta, remainder=remainder) is True
    assert store.register("order", step=100, delta=delta, remainder=remainder) is False
    with pytest.raises(BizTypeConflict, match="step is 100, not 50"):
        store.register("order", step=50, delta=delta, remainder=remainder)


def test_unknown_biz_type_is_named_with_the_fix(store):
    with pytest.raises(UnknownBizType, match="idgen add-biz nope"):
        store.allocate("nope")


def test_floor_moves_a_lagging_row_forward(store):
    store.register("order", step=10)
    segment = store.allocate("order", floor=1000)
    assert (segment.start, segment.end) == (1001, 1010)
    assert store.read("order").max_id == 1010


def test_top_of_int64_ends_in_exhaustion_not_a_wrap(store):
    store.register("order", step=1000)
    edit_row(store, "order", f"max_id = {INT64_MAX - 1500}")
    first = store.allocate("order")
    last = store.allocate("order")
    assert (first.end, last.start, last.end) == (INT64_MAX - 500, INT64_MAX - 499, INT64_MAX)
    with pytest.raises(IdSpaceExhausted):
        store.allocate("order")
    assert store.read("order").max_id == INT64_MAX


def test_threads_racing_on_one_row_get_disjoint_segments(store):
    store.register("order", step=10)
    got: list[range] = []

    def work() -> None:
        for _ in range(25):
            got.append(store.allocate("order").ids())

    run_threads(work, [()] * 8)
    ids = [i for r in got for i in r]
    assert len(ids) == len(set(ids)) == 8 * 25 * 10
    assert store.read("order").max_id == 2000


def test_two_dbs_never_hand_out_the_same_id(db_url, sqlite_url):
    stores = registered([db_url, sqlite_url.replace("idgen.db", "other.db")], "order", step=10)
    allocator = Allocator(stores)
    ids = [i for _ in range(40) for i in allocator.allocate("order").ids()]
    assert len(ids) == len(set(ids))
    assert {i % 2 for i in ids} == {0, 1}
    allocator.close()


def test_a_floor_above_everything_allocated_is_refused(store):
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        allocator.allocate("order")
        with pytest.raises(InvalidRequest, match="above every ID"):
            allocator.allocate("order", floor=10**15)
        assert allocator.allocate("order", floor=10).start == 11


def test_unreachable_database_is_storage_unavailable_without_sql():
    store = SegmentStore("mysql+pymysql://root@127.0.0.1:1/nothing", timeout=1)
    with pytest.raises(StorageUnavailable) as info:
        store.allocate("order")
    message = str(info.value)
    assert "127.0.0.1:1" in message and "SELECT" not in message and "idgen_segment" in message
    store.close()


@pytest.mark.mariadb
def test_a_failed_db_is_benched_then_probed_back_into_turn(make_mariadb):
    proxy, via_proxy = behind_proxy(make_mariadb())
    stores = open_stores([make_mariadb()]) + open_stores([via_proxy], timeout=1)
    register(stores, "order", step=10)
    attempts = [spy(store, "allocate") for store in stores]
    allocator = Allocator(stores, probe_interval=0.05)
    try:
        proxy.hang()
        parities = {allocator.allocate("order").start % 2 for _ in range(20)}
        assert parities == {0}
        assert len(attempts[1]) <= 1, "a benched database is not tried while another one serves"
        assert allocator.healthy() == [True, False]
        proxy.restore()
        wait_until(lambda: allocator.healthy() == [True, True], 20,
                   "the benched database to be probed back into turn", interval=0.05)
        assert {allocator.allocate("order").start % 2 for _ in range(4)} == {0, 1}
    finally:
        allocator.close()
        proxy.close()


def test_biz_type_names_are_case_sensitive_on_every_database(store):
    store.register("order", step=10)
    store.register("ORDER", step=20)
    assert (store.allocate("order").end, store.allocate("ORDER").end) == (10, 20)
    assert store.read("Order") is None


class _Lagging(SegmentStore):
    """A database replica that has not applied the latest allocation yet: its first
    ``stale`` reads show the row as it was before (a Galera node behind the others)."""

    def __init__(self, url: str, before: BizRow, stale: int) -> None:
        super().__init__(url)
        self.before, self.stale = before, stale

    def read(self, biz_type: str) -> BizRow | None:
        if self.stale:
            self.stale -= 1
            return self.before  # unseen by this store's high water, as a replica's row is
        return super().read(biz_type)


def test_a_floor_a_lagging_replica_has_not_applied_yet_is_waited_for_not_refused(sqlite_url):
    [store] = open_stores([sqlite_url])
    # A step of 1000: the reach within which a floor is read again must count whole steps.
    store.register("order", step=1000)
    before = store.read("order")
    with Allocator([store]) as elsewhere:  # another server, on an up-to-date node
        handed_out = elsewhere.allocate("order")
    lagging = _Lagging(sqlite_url, before, stale=3)
    with Allocator([lagging]) as here:
        segment = here.allocate("order", floor=handed_out.end)  # what its client was given
    assert segment.start > handed_out.end
    store.close()


def test_a_floor_equal_to_the_highest_id_allocated_is_served_by_a_server_that_had_not_seen_it(
        sqlite_url):
    [store] = open_stores([sqlite_url])
    store.register("order", step=10)
    with Allocator([store]) as elsewhere:
        handed_out = elsewhere.allocate("order")
    [fresh] = open_stores([sqlite_url])  # another server: it never saw that allocation
    with Allocator([fresh]) as here:
        segment = here.allocate("order", floor=handed_out.end)  # exactly the highest ID
    assert segment.start == handed_out.end + 1
    store.close()
    fresh.close()


def test_exists_says_whether_any_database_has_the_biz_type(sqlite_url, tmp_path):
    other = f"sqlite:///{tmp_path}/other.db"
    stores = open_stores([sqlite_url, other])
    stores[1].register("order", step=10, delta=2, remainder=1)  # only the second has it
    with Allocator(stores) as allocator:
        assert allocator.exists("order")
        assert not allocator.exists("nosuch")
    for store in stores:
        store.close()


def test_exists_with_no_database_answering_is_storage_unavailable():
    store = SegmentStore("mysql+pymysql://root@127.0.0.1:1/nothing", timeout=1)
    with Allocator([store]) as allocator:
        with pytest.raises(StorageUnavailable):
            allocator.exists("order")


# == What an allocator answers when databases fail, lack the biz type or are used up ==========

@pytest.fixture
def files(tmp_path):
    """Stores on SQLite files ``a.db``, ``b.db`` … as many as asked; closed after the test."""
    made: list[SegmentStore] = []

    def make(count: int) -> list[SegmentStore]:
        stores = open_stores([f"sqlite:///{tmp_path}/{chr(97 + len(made) + k)}.db"
                              for k in range(count)])
        made.extend(stores)
        return stores

    yield make
    for store in made:
        store.close()


def dead(name: str = "nothing") -> SegmentStore:
    """A database that refuses every connection at once."""
    return SegmentStore(f"mysql+pymysql://root@127.0.0.1:1/{name}", timeout=1)


# -- errors when no database can serve ------------------------------------------------------

def test_no_database_answering_is_storage_unavailable_naming_each_by_label():
    with Allocator([dead(), dead("other")]) as allocator:
        with pytest.raises(StorageUnavailable) as info:
            allocator.allocate("order")
        assert str(info.value) == ("no database could allocate for 'order' "
                                   "(db0, db1 unreachable): retry later")
        assert allocator.healthy() == [False, False]


def test_each_database_that_fails_an_allocation_is_benched_with_its_error():
    # The watch would read them too: it is kept from running, so the allocation alone tells.
    with Allocator([dead(), dead("other")], probe_interval=60, watch_interval=60) as allocator:
        with pytest.raises(StorageUnavailable):
            allocator.allocate("order")
        assert all("is unreachable or failing" in h.last_error for h in allocator.health())


def test_a_biz_type_used_up_in_every_database_is_exhausted_not_unknown(files):
    stores = files(2)
    register(stores, "order", step=10)
    for store in stores:
        edit_row(store, "order", f"max_id = {INT64_MAX}")
    with Allocator(stores) as allocator:
        with pytest.raises(IdSpaceExhausted, match="'order' has used up the int64 range in "
                           "every database: no further IDs can be issued; register a new"):
            allocator.allocate("order")
        assert allocator.healthy() == [True, True]  # they answered


def test_a_database_whose_class_is_used_up_leaves_the_allocation_to_the_next(files):
    stores = files(2)
    register(stores, "order", step=10)
    edit_row(stores[0], "order", f"max_id = {INT64_MAX}")
    with Allocator(stores) as allocator:
        segments = [allocator.allocate("order") for _ in range(4)]  # whichever is tried first
    assert {(s.delta, s.remainder) for s in segments} == {(2, 1)}


def test_a_database_without_the_row_leaves_the_allocation_to_the_next(files):
    stores = files(2)
    register(stores, "order", step=10)
    with stores[0].engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM idgen_segment WHERE biz_type = 'order'")
    with Allocator(stores) as allocator:
        segments = [allocator.allocate("order") for _ in range(4)]
    assert {(s.delta, s.remainder) for s in segments} == {(2, 1)}


def test_a_biz_type_no_database_has_is_unknown_with_the_command_that_adds_it(files):
    with Allocator(files(2)) as allocator:
        with pytest.raises(UnknownBizType) as info:
            allocator.allocate("order")
        assert allocator.healthy() == [True, True]  # they answered
    assert str(info.value) == (
        "biz type 'order' is not registered: add it with `idgen add-biz order --db URL "
        "[--db URL ...]`, giving all of this server's databases at once")


def test_a_database_benched_at_start_is_out_of_turn_and_not_announced(files, caplog):
    caplog.set_level(logging.DEBUG)
    stores = files(2)
    register(stores, "order", step=10)
    with Allocator(stores, probe_interval=60) as allocator:
        allocator.bench(1, StorageUnavailable("db1 did not answer at start-up"))
        assert allocator.healthy() == [True, False]
        assert allocator.health()[1].last_error == "db1 did not answer at start-up"
        assert {allocator.allocate("order").remainder for _ in range(4)} == {0}
    assert not [r for r in caplog.records if r.name == "idgen_server.health"]


def test_the_rows_last_read_are_kept_per_database_without_a_query(files):
    [store] = files(1)
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        assert allocator.last_read(0) == {}
        allocator.allocate("order")
        reads = spy(store, "read")
        assert allocator.last_read(0)["order"].biz_type == "order"
        assert reads == []


# -- highest ---------------------------------------------------------------------------------

def test_highest_is_the_highest_max_id_of_every_database(files):
    stores = files(2)
    register(stores, "order", step=10)
    edit_row(stores[1], "order", "max_id = 70")
    with Allocator(stores) as allocator:
        assert allocator.highest("order") == 70
        assert allocator.allocate("order", above_all=True).start > 70


def test_a_floor_at_what_highest_returned_is_served_without_reading_every_database_again(files):
    [store] = files(1)
    store.register("order", step=10)
    edit_row(store, "order", "max_id = 40")
    with Allocator([store]) as allocator:
        high = allocator.highest("order")
        reads = spy(allocator._rows, "read_every")
        assert allocator.allocate("order", floor=high).start == 41
        assert reads == []


def test_highest_of_a_biz_type_no_database_has_names_it(files):
    with Allocator(files(2)) as allocator:
        for _ in range(2):  # once read, and once known to be missing
            with pytest.raises(UnknownBizType, match="biz type 'nosuch' is not registered"):
                allocator.highest("nosuch")


def test_a_biz_type_known_missing_from_every_table_is_unknown_and_one_there_is_served(files):
    [store] = files(1)
    store.register("order", step=10)
    with Allocator([store], probe_interval=0.02, watch_interval=0.02) as allocator:
        allocator.start()
        # The watch has read every table: names missing from all are refused without a query.
        wait_until(lambda: allocator._rows.surely_unknown("nosuch"), 10, "the watch to read the table")
        with pytest.raises(UnknownBizType, match="biz type 'nosuch' is not registered"):
            allocator.highest("nosuch")
        assert not allocator.exists("nosuch")
        assert allocator.exists("order")
        assert allocator.highest("order") == 0


def test_highest_with_a_database_down_is_storage_unavailable_naming_it(files):
    [store] = files(1)
    store.register("order", step=10, delta=2, remainder=0)
    with Allocator([store, dead()]) as allocator:
        with pytest.raises(StorageUnavailable) as info:
            allocator.highest("order")
    assert str(info.value) == ("cannot read every database's max_id for 'order' (db1 "
                               "unreachable), so cannot promise IDs above all of them: retry later")


def test_highest_of_rows_that_clash_is_refused_naming_the_biz_type(files):
    stores = files(2)
    for store in stores:  # both in class 0 of 2: they would hand out the same IDs
        store.register("order", step=10, delta=2, remainder=0)
    with Allocator(stores) as allocator:
        with pytest.raises(BizTypeMisconfigured, match="biz type 'order' is refused: .* hand "
                           "out the same IDs"):
            allocator.highest("order")


def test_highest_from_a_server_given_some_of_the_databases_is_refused_naming_the_biz_type(files):
    [store] = files(1)
    register_as(store, "order", step=10, index=0, count=2)
    with Allocator([store]) as allocator:
        with pytest.raises(BizTypeMisconfigured, match="biz type 'order' is served by 2 "
                           "databases and this server is given 1"):
            allocator.highest("order")
        assert allocator.allocate("order").remainder == 0  # plain IDs are served all the same


# -- floors ------------------------------------------------------------------------------------

def test_a_floor_for_a_biz_type_no_database_has_is_unknown_not_a_crash(files):
    with Allocator(files(1)) as allocator:
        with pytest.raises(UnknownBizType, match="biz type 'nosuch' is not registered"):
            allocator.allocate("nosuch", floor=5)


def test_a_floor_with_a_database_down_is_never_served_unchecked(files):
    [store] = files(1)
    store.register("order", step=10, delta=2, remainder=0)
    with Allocator([store, dead()]) as allocator:
        reads = spy(allocator._rows, "read_every")
        with pytest.raises(StorageUnavailable) as info:
            allocator.allocate("order", floor=10**15)
        assert str(info.value) == ("cannot check floor 1000000000000000 for 'order' "
                                   "(db1 unreachable): retry later")
        with pytest.raises(StorageUnavailable):
            allocator.allocate("order", floor=15)  # within reach: still not waited for
        assert len(reads) == 2, "a database down ends a floor's check at its first read"


def test_a_floor_within_reach_of_the_highest_id_is_read_again_and_one_beyond_refused_at_once(
        files, monkeypatch):
    monkeypatch.setattr(allocator_module, "_FLOOR_PATIENCE", 0.3)
    [store] = files(1)
    store.register("order", step=1000)
    with Allocator([store]) as allocator:
        high = allocator.allocate("order").end
        reach = allocator_module._LAG_ALLOCATIONS * MAX_STEP_MULTIPLIER * 1000
        reads = spy(allocator._rows, "read_every")
        with pytest.raises(InvalidRequest, match=f"floor {high + reach + 1} is above every ID "
                           f"allocated for 'order' \\(at most {high}\\): a floor must be an ID"):
            allocator.allocate("order", floor=high + reach + 1)
        assert len(reads) == 1, "a made-up floor is refused at the first read"
        with pytest.raises(InvalidRequest):
            allocator.allocate("order", floor=high + reach)
        assert len(reads) > 2, "a floor a lagging replica may not show yet is read again"


def test_a_floor_above_a_biz_type_nothing_was_allocated_from_is_refused(files, monkeypatch):
    monkeypatch.setattr(allocator_module, "_FLOOR_PATIENCE", 0.1)
    [store] = files(1)
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        assert allocator.highest("order") == 0
        with pytest.raises(InvalidRequest, match=r"floor 1 is above every ID allocated for "
                           r"'order' \(at most 0\)"):
            allocator.allocate("order", floor=1)


# -- exists ------------------------------------------------------------------------------------

def test_exists_looks_past_a_database_down_and_benches_it(files):
    [store] = files(1)
    store.register("order", step=10, delta=2, remainder=1)
    for stores in ([dead(), store], [store, dead()]):
        with Allocator(stores, probe_interval=60) as allocator:
            assert allocator.exists("order")
            assert not allocator.exists("nosuch")
            down = [k for k, s in enumerate(stores) if s is not store]
            assert allocator.healthy() == [k not in down for k in range(2)]
            assert allocator.health()[down[0]].last_error != ""


def test_exists_keeps_databases_that_answer_in_turn(files):
    stores = files(2)
    stores[1].register("order", step=10, delta=2, remainder=1)
    with Allocator(stores, probe_interval=60) as allocator:
        allocator.bench(0, StorageUnavailable("down a moment ago"))
        allocator.bench(1, StorageUnavailable("down a moment ago"))
        assert allocator.exists("order")
        assert allocator.healthy()[1]
        assert allocator.last_read(1)["order"].remainder == 1
        assert not allocator.exists("nosuch")
        assert allocator.healthy() == [True, True]


def test_a_row_too_damaged_to_read_still_exists_and_its_database_stays_in_turn(files):
    [store] = files(1)
    store.register("order", step=10)
    edit_row(store, "order", "max_id = 'abc'")
    with Allocator([store], probe_interval=60) as allocator:
        allocator.bench(0, StorageUnavailable("down a moment ago"))
        assert allocator.exists("order")
        assert allocator.healthy() == [True]


def test_exists_with_no_database_answering_names_the_biz_type_and_the_databases():
    with Allocator([dead()]) as allocator:
        with pytest.raises(StorageUnavailable) as info:
            allocator.exists("order")
    assert str(info.value) == ("no database answered whether 'order' exists (db0 unreachable): "
                               "retry later")


def test_two_biz_types_paused_at_once_are_each_logged_once(files, caplog):
    [store] = files(1)
    for biz_type in ("a", "b"):
        store.register(biz_type, step=10)
        edit_row(store, biz_type, f"registration = '{PENDING}1'")  # as idgen add-db leaves them
    with Allocator([store]) as allocator:
        for biz_type in ("a", "b", "a", "b"):
            with pytest.raises(BizTypeMoving, match=f"biz type '{biz_type}' is being moved"):
                allocator.highest(biz_type)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m.split(" is being")[0] for m in warned] == ["biz type 'a'", "biz type 'b'"]


def test_a_table_gone_mid_run_is_storage_unavailable_naming_the_database_and_the_fix(sqlite_url):
    [store] = open_stores([sqlite_url])
    store.register("order", step=10)
    store.allocate("order")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE idgen_segment")
    with pytest.raises(StorageUnavailable) as info:
        store.allocate("order")
    assert str(info.value).startswith(f"database {store.name} is unreachable or failing "
                                      "(OperationalError); check that it is up and that its "
                                      "idgen_segment table exists (idgen init-db)")
    store.close()


def test_verified_row_benches_a_database_down_and_keeps_one_that_answers_in_turn(files):
    [store] = files(1)
    store.register("order", step=10, delta=2, remainder=0)
    with Allocator([store, dead()], probe_interval=60) as allocator:
        with pytest.raises(StorageUnavailable):
            allocator.verified_row("order", 1)
        assert allocator.healthy() == [True, False]
        assert allocator.health()[1].last_error != ""
        allocator.bench(0, StorageUnavailable("down a moment ago"))
        assert allocator.verified_row("order", 0).remainder == 0
        assert allocator.healthy() == [True, False]


def test_verified_row_names_the_database_of_a_damaged_row(files):
    [store] = files(1)
    store.register("order", step=10)
    edit_row(store, "order", "delta = 0")
    with Allocator([store]) as allocator:
        with pytest.raises(BizTypeMisconfigured, match=f"damaged row in {store.name}"):
            allocator.verified_row("order", 0)


def test_verified_row_logs_each_paused_biz_type_once(files, caplog):
    [store] = files(1)
    for biz_type in ("a", "b"):
        store.register(biz_type, step=10)
        edit_row(store, biz_type, f"registration = '{PENDING}1'")
    with Allocator([store]) as allocator:
        for biz_type in ("a", "b", "a", "b"):
            with pytest.raises(BizTypeMoving):
                allocator.verified_row(biz_type, 0)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m.split(" is being")[0] for m in warned] == ["biz type 'a'", "biz type 'b'"]


# -- what a cut remembers -------------------------------------------------------------------

def test_segments_of_a_registered_biz_type_follow_on_without_a_class_change(files, caplog):
    stores = files(2)
    register(stores, "order", step=10)
    assert stores[0].read("order").registration != ""
    edit_row(stores[1], "order", "max_id = 501")  # db1 ahead: a class change would jump to it
    with Allocator(stores, probe_interval=60) as allocator:
        allocator.bench(1, StorageUnavailable("kept out of turn for the test"))
        starts = [allocator.allocate("order").start for _ in range(3)]
    assert starts == [2, 12, 22]  # class 0 mod 2, each segment where the last one ended
    assert not [r for r in caplog.records if "while this server ran" in r.getMessage()]


def test_a_biz_type_served_again_after_a_refusal_is_logged_once(files, caplog):
    [store] = files(1)
    register([store], "order", step=10)
    registration = store.read("order").registration
    with Allocator([store]) as allocator:
        allocator.allocate("order")
        edit_row(store, "order", f"registration = '{PENDING}1'")
        with pytest.raises(BizTypeMoving):
            allocator.allocate("order")
        assert allocator.healthy() == [True]  # it answered: the row is what stops it
        edit_row(store, "order", f"registration = '{registration}'")
        allocator.allocate("order")
        allocator.allocate("order")
    served = [r for r in caplog.records if "passes the checks again" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in served] == [
        (logging.WARNING, "biz type 'order' passes the checks again and is served")]


def test_a_floor_of_one_above_a_biz_type_nothing_was_allocated_from_is_refused_at_first_sight(
        files, monkeypatch):
    monkeypatch.setattr(allocator_module, "_FLOOR_PATIENCE", 0.1)
    [store] = files(1)
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        with pytest.raises(InvalidRequest, match=r"floor 1 is above every ID allocated"):
            allocator.allocate("order", floor=1)


def test_a_segment_of_several_steps_holds_that_many_steps(files):
    [store] = files(1)
    store.register("order", step=10)
    with Allocator([store]) as allocator:
        allocator.bench(0, StorageUnavailable("down a moment ago"))
        segment = allocator.allocate("order", steps=3)
        assert allocator.healthy() == [True]  # it answered: back in turn
    assert (segment.start, segment.end) == (1, 30)


def test_requests_above_every_database_beyond_the_limit_are_refused_at_once(files):
    [store] = files(1)
    store.register("order", step=10)
    reading, release = threading.Event(), threading.Event()
    read = store.read

    def slow_read(biz_type: str) -> BizRow | None:
        reading.set()
        release.wait(10)
        return read(biz_type)

    served: list[int] = []
    with Allocator([store], above_all_limit=1) as allocator:
        store.read = slow_read  # the first request waits in its read of every database
        first = threading.Thread(
            target=lambda: served.append(allocator.allocate("order", above_all=True).start))
        first.start()
        try:
            assert reading.wait(10)
            with pytest.raises(ServiceUnavailable) as info:
                allocator.allocate("order", above_all=True)
        finally:
            release.set()
            first.join(10)
    assert str(info.value) == ("this server serves requests for IDs above every database 1 at "
                               "a time, and that many are being served: retry shortly")
    assert served == [1]


def test_close_returns_once_the_watch_has_stopped(files):
    [store] = files(1)
    reading = threading.Event()
    read_all = store.read_all

    def slow_read_all() -> tuple[dict[str, BizRow], frozenset[str]]:
        reading.set()
        time.sleep(0.2)  # a slow database: close() comes while the watch reads
        return read_all()

    store.read_all = slow_read_all  # type: ignore[method-assign]
    allocator = Allocator([store], probe_interval=0.01, watch_interval=0.01)
    allocator.start()
    [watch] = [t for t in threading.enumerate() if t.name == "idgen-db-watch"]
    assert reading.wait(10)
    allocator.close()
    assert not watch.is_alive()


def test_an_allocation_for_a_name_missing_from_every_table_is_unknown_naming_it(files):
    [store] = files(1)
    with Allocator([store], probe_interval=0.02, watch_interval=0.02) as allocator:
        allocator.start()
        wait_until(lambda: allocator._rows.surely_unknown("nosuch"), 10, "the watch to read the table")
        reads = spy(store, "read")
        with pytest.raises(UnknownBizType, match="biz type 'nosuch' is not registered"):
            allocator.allocate("nosuch")
        assert reads == []  # known missing: no query


def _watched(allocator: Allocator) -> list[int]:
    """The indexes of the databases the watch reads, as it reads them."""
    read: list[int] = []
    watch = allocator._rows.watch

    def recorded(index: int) -> None:
        read.append(index)
        watch(index)

    allocator._rows.watch = recorded  # type: ignore[method-assign]
    return read


def _probes(allocator: Allocator) -> list[str]:
    """One entry per turn of the watch (each turn asks which databases are benched)."""
    return spy(allocator._health, "benched")


def test_the_watch_thread_is_a_daemon():
    # A server that is not closed (a crash in its main thread) must still be able to exit.
    with Allocator([dead()], probe_interval=60, watch_interval=60) as allocator:
        allocator.start()
        [watch] = [t for t in threading.enumerate() if t.name == "idgen-db-watch"]
        assert watch.daemon


def test_the_watch_reads_the_tables_once_a_watch_interval_however_often_it_probes(files):
    allocator = Allocator(files(2), probe_interval=0.005, watch_interval=60)
    read, turns = _watched(allocator), _probes(allocator)
    with allocator:
        allocator.start()
        wait_until(lambda: len(turns) >= 20, 10, "20 turns of the watch")
    assert read == [0, 1]  # at its first turn, then not before 60 s


def test_the_watch_reads_no_table_of_a_benched_database(files):
    [store] = files(1)
    allocator = Allocator([store, dead()], probe_interval=0.005, watch_interval=0.005)
    read = _watched(allocator)
    allocator._health.record(1, ok=False, error="refused")  # benched: its pings keep failing
    with allocator:
        allocator.start()
        wait_until(lambda: read.count(0) >= 5, 10, "5 reads of the database in turn")
    assert set(read) == {0} and allocator.healthy() == [True, False]


def test_a_new_allocator_has_a_tally_of_what_it_served_empty():
    # The service adds to it after each allocation; the metrics read it.
    with Allocator([dead()], probe_interval=60, watch_interval=60) as allocator:
        assert allocator.served.snapshot() == {}
        allocator.served.add("order", 10)
        assert allocator.served.snapshot() == {"order": 10}


def test_a_watch_turn_that_fails_is_logged_and_the_watch_goes_on(files, caplog):
    allocator = Allocator(files(1), probe_interval=0.005, watch_interval=0.005)
    turns: list[int] = []

    def broken(index: int) -> None:
        turns.append(index)
        raise RuntimeError("a bug in the watch")

    allocator._rows.watch = broken  # type: ignore[method-assign]
    with allocator:
        allocator.start()
        wait_until(lambda: len(turns) >= 3, 10, "3 turns of the watch")
    failures = [r for r in caplog.records if r.name == "idgen_server.allocator"
                and r.getMessage() == "watching the databases failed; trying again"]
    assert failures and failures[0].exc_info[0] is RuntimeError


def test_rows_registered_apart_are_refused_in_process_naming_the_biz_type_and_each_database(files):
    stores = files(2)
    for index, registration in enumerate(("a" * 32, "b" * 32)):
        register_as(stores[index], "pay", step=10, index=index, count=2, registration=registration)
    with Allocator(stores, probe_interval=60, watch_interval=60) as allocator:
        for _ in range(2):  # whichever database is tried first
            with pytest.raises(BizTypeMisconfigured) as info:
                allocator.allocate("pay")
            assert str(info.value).startswith(
                "biz type 'pay' is refused: its rows do not form one set of distinct residue "
                f"classes (they were registered apart: registration aaaaaaaa in {stores[0].name}, "
                f"registration bbbbbbbb in {stores[1].name})")


# -- SegmentStore.allocate: the row written, lost races, the range running out --------------------

def _updated_at(store: SegmentStore, biz_type: str) -> str:
    with store.engine.connect() as conn:
        return str(conn.exec_driver_sql(
            f"SELECT updated_at FROM idgen_segment WHERE biz_type = '{biz_type}'").scalar())


def test_each_allocation_moves_the_version_on_by_one_and_stamps_updated_at(files):
    [store] = files(1)
    store.register("order", step=10)
    edit_row(store, "order", "updated_at = '2000-01-01 00:00:00'")
    before = store.read("order")
    store.allocate("order")
    after = store.read("order")
    assert (after.version, after.max_id) == (before.version + 1, before.max_id + 10)
    assert not _updated_at(store, "order").startswith("2000-01-01")


def test_a_field_that_is_not_a_whole_number_is_refused_naming_the_database(files):
    [store] = files(1)
    store.register("order", step=10)
    edit_row(store, "order", "step = 'x'")  # SQLite keeps whatever a hand edit puts in
    with pytest.raises(BizTypeMisconfigured) as info:
        store.allocate("order")
    assert str(info.value).startswith(
        f"biz type 'order' has a damaged row in {store.name}: step is 'x', not a whole number")


def _losing_every_race(store: SegmentStore, monkeypatch: pytest.MonkeyPatch, *,
                       monotonic: Callable[[], float] = time.monotonic) -> list[int]:
    """Make every compare-and-set of ``store`` find the version moved on (another allocator
    won each race), with no wait between the races and ``monotonic`` as the store's clock;
    returns the list the races are counted in."""
    races: list[int] = []
    monkeypatch.setattr(store, "_compare_and_set",
                        lambda conn, row, new_max: races.append(row.version) or False)
    monkeypatch.setattr(store_module, "time", SimpleNamespace(
        monotonic=monotonic, perf_counter=time.perf_counter, sleep=lambda seconds: None))
    return races


@pytest.mark.parametrize("max_attempts", [1, 3, None])
def test_an_allocation_that_loses_every_race_gives_up_after_max_attempts(
        tmp_path, monkeypatch, max_attempts):
    options = {} if max_attempts is None else {"max_attempts": max_attempts}
    max_attempts = max_attempts or 100  # the default
    [store] = open_stores([f"sqlite:///{tmp_path}/a.db"], **options)
    store.register("order", step=10)
    tries = _losing_every_race(store, monkeypatch)
    with pytest.raises(StorageUnavailable) as info:
        store.allocate("order")
    store.close()
    assert len(tries) == max_attempts == store.conflicts
    assert str(info.value) == (
        f"gave up allocating for 'order' in {store.name} after {max_attempts} conflicting "
        "attempts: too many allocators race on one row; raise its step")


def test_an_allocation_that_loses_races_past_its_patience_gives_up_saying_why(
        tmp_path, monkeypatch):
    # Patience: at least 5 s, or 3 timeouts of the database, here 1 s each.
    [store] = open_stores([f"sqlite:///{tmp_path}/a.db"], timeout=1)
    store.register("order", step=10)
    readings = iter([0.0])  # the start; every later reading is past the patience
    tries = _losing_every_race(store, monkeypatch, monotonic=lambda: next(readings, 100.0))
    with pytest.raises(StorageUnavailable) as info:
        store.allocate("order")
    assert len(tries) == 1  # the first attempt is always made
    assert str(info.value) == (
        f"gave up allocating for 'order' in {store.name} after 5 s of lost races and lock "
        "waits: is a transaction holding its row?")
    store.close()


def _warnings_crossing(store: SegmentStore, caplog: pytest.LogCaptureFixture, biz_type: str,
                       *max_ids: int) -> list[logging.LogRecord]:
    """The running-out warnings logged by allocations that bring ``biz_type`` to each
    max_id in turn (each at least a step above the one before)."""
    store.register(biz_type, step=10)
    for max_id in max_ids:
        edit_row(store, biz_type, f"max_id = {max_id - 10}")
        assert store.allocate(biz_type).end == max_id
    return [r for r in caplog.records if r.name == "idgen_server.store"
            and f"biz type {biz_type!r} has used" in r.getMessage()]


def _running_out(share: int, store: SegmentStore, max_id: int) -> str:
    return (f"biz type 'order' has used {share}% of the int64 range in {store.name} "
            f"(max_id {max_id}): move it to a new biz type before it runs out")


def test_passing_half_of_the_int64_range_is_warned_once_at_the_allocation_that_passes_it(
        files, caplog):
    [store] = files(1)
    half = int(INT64_MAX * 0.5)
    assert _warnings_crossing(store, caplog, "short", half - 1) == []  # one ID short of it
    [record] = _warnings_crossing(store, caplog, "order", half, half + 1_000, half + 2_000)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == _running_out(50, store, half)
    assert (record.biz_type, record.db, record.threshold, record.max_id, record.range_used) == (
        "order", store.name, 0.5, half, 0.5)


def test_90_and_99_percent_are_each_warned_once_and_a_jump_past_two_warns_only_the_highest(
        files, caplog):
    [store] = files(1)
    ninety, past_99 = int(INT64_MAX * 0.9123456), int(INT64_MAX * 0.995)
    records = _warnings_crossing(store, caplog, "order", ninety, ninety + 10, past_99, past_99 + 10)
    assert [r.getMessage() for r in records] == [
        _running_out(90, store, ninety), _running_out(99, store, past_99)]
    assert [r.range_used for r in records] == [0.912346, 0.995]


# -- SegmentStore.register: what it refuses, and what a second registration is told ----------------

@pytest.mark.parametrize("settings, told", [
    ({"step": 0}, "step must be in 1..1000000000000, got 0"),
    ({"step": MAX_ROW_STEP + 1}, "step must be in 1..1000000000000, got 1000000000001"),
    ({"step": 1, "delta": 2}, "step 1 is smaller than delta 2: segments would be empty"),
    ({"step": 10, "delta": 2, "remainder": -1}, "remainder must be in [0, 2), got -1"),
    ({"step": 10, "delta": 2, "remainder": 2}, "remainder must be in [0, 2), got 2"),
])
def test_registering_settings_out_of_bounds_is_refused_saying_which(files, settings, told):
    [store] = files(1)
    with pytest.raises(InvalidRequest) as info:
        store.register("order", **settings)
    assert str(info.value) == told
    assert store.read("order") is None  # nothing written


@pytest.mark.parametrize("settings", [
    {"step": 1}, {"step": MAX_ROW_STEP}, {"step": 2, "delta": 2, "remainder": 1},
    {"step": 2, "delta": 2, "remainder": 0},
])
def test_registering_settings_at_each_bound_is_accepted(files, settings):
    [store] = files(1)
    assert store.register("order", **settings) is True
    row = store.read("order")
    assert (row.step, row.delta, row.remainder, row.max_id, row.version) == (
        settings["step"], settings.get("delta", 1), settings.get("remainder", 0), 0, 0)


def test_a_second_registration_otherwise_is_told_every_setting_that_differs(files):
    [store] = files(1)
    store.register("order", step=10, delta=2, remainder=0, registration="a" * 32)
    with pytest.raises(BizTypeConflict) as info:
        store.register("order", step=20, delta=2, remainder=1, registration="b" * 32)
    assert str(info.value) == (
        f"biz type 'order' is already registered in {store.name} with other settings: step is "
        f"10, not 20; remainder is 0, not 1; registration is '{'a' * 32}', not '{'b' * 32}'. Use "
        "another name, or the same --step and the same list of databases in the same order")
    # Without a registration to compare, any is accepted; each new row gets a fresh one.
    assert store.register("order", step=10, delta=2, remainder=0) is False
    store.register("other", step=10)
    assert len(store.read("other").registration) == 32
    assert store.read("other").registration != store.read("order").registration


# -- store._row: a row as read, every field a whole number -----------------------------------------

def _record(**fields: object) -> SimpleNamespace:
    values: dict[str, object] = {"biz_type": "order", "max_id": 5, "step": 10, "delta": 2,
                                 "remainder": 1, "version": 3, "registration": "r" * 32}
    return SimpleNamespace(**{**values, **fields})


def test_a_record_of_whole_numbers_is_read_as_a_row():
    assert store_module._row(_record(), "db1") == BizRow(
        "order", max_id=5, step=10, delta=2, remainder=1, version=3, registration="r" * 32)
    assert store_module._row(_record(registration=None), "db1").registration == ""  # older rows


@pytest.mark.parametrize("field, value, shown", [
    *((field, 1.5, "1.5") for field in ("max_id", "step", "delta", "remainder", "version")),
    ("step", True, "True"), ("step", "7", "'7'"), ("step", None, "None"),
    ("step", "x" * 100, repr("x" * 100)[:40]),  # a long value is cut short
])
def test_a_field_that_is_not_a_whole_number_is_named_with_its_value(field, value, shown):
    with pytest.raises(BizTypeMisconfigured) as info:
        store_module._row(_record(**{field: value}), "db1")
    assert str(info.value).startswith(
        f"biz type 'order' has a damaged row in db1: {field} is {shown}, not a whole number; ")


# -- SegmentStore: what a new one holds -----------------------------------------------------------

def test_a_new_store_has_its_label_tables_and_counts_and_names_failures_by_its_database(tmp_path):
    store = SegmentStore(f"sqlite:///{tmp_path}/a.db", label="main")
    store.create_schema()
    assert (store.label, store.allocations, store.conflicts) == ("main", 0, 0)
    assert store.tokens.name == store.name and store.tokens.read() == []  # no token: open
    failure = store.unavailable(OSError("connection reset"))
    assert isinstance(failure, StorageUnavailable) and store.name in str(failure)
    store.register("order", step=10)
    store.allocate("order")
    store.allocate("order")
    assert store.allocations == 2
    store.close()


def test_a_damaged_row_read_is_refused_naming_the_database(files):
    [store] = files(1)
    store.register("order", step=10)
    edit_row(store, "order", "step = 'x'")
    with pytest.raises(BizTypeMisconfigured, match=rf"damaged row in {re.escape(store.name)}: step"):
        store.read("order")


def test_the_last_id_of_the_int64_range_allocated_the_next_allocation_is_exhausted(files):
    [store] = files(1)
    store.register("order", step=10)
    edit_row(store, "order", f"max_id = {INT64_MAX - 10}")
    assert store.allocate("order").end == INT64_MAX
    with pytest.raises(IdSpaceExhausted) as info:
        store.allocate("order")
    assert str(info.value) == f"biz type 'order' has used up the int64 range in {store.name}"


def test_allocations_another_server_made_unseen_widen_the_mark_by_each_of_them(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    here, other = open_stores([url]), open_stores([url])
    [here], [other] = here, other
    here.register("order", step=10)
    here.allocate("order")  # (0, 10], version 1: seen here
    other.allocate("order")
    other.allocate("order")  # version 3, max_id 30: not seen here
    edit_row(url, "order", "max_id = 0")  # by hand: the version stays at 3
    row = other.read("order")
    assert here.mark(row) == 10 + 2 * 10 * MAX_STEP_MULTIPLIER  # two allocations unseen
    here.close()
    other.close()


def test_an_allocations_seconds_are_timed_from_its_start(files):
    [store] = files(1)
    store.register("order", step=10)
    started = time.perf_counter()
    store.allocate("order")
    took = time.perf_counter() - started
    timings = store.allocation_seconds.snapshot()
    assert sum(timings.counts) == 1 and 0 < timings.total <= took


def _losing_nodes(store: SegmentStore, monkeypatch: pytest.MonkeyPatch, nodes: int,
                  lost: int) -> list[int]:
    """Make ``store`` a database of ``nodes`` nodes whose first ``lost`` reads lose their
    node (then every read answers); returns the list the reads are counted in."""
    reads: list[int] = []
    read = store._read_for_update

    def read_for_update(conn, biz_type):  # type: ignore[no-untyped-def]
        reads.append(len(reads))
        assert len(reads) <= 20, "still trying nodes"
        if len(reads) <= lost:
            raise store_module._NodeLost(StorageUnavailable(f"node {len(reads)} lost"))
        return read(conn, biz_type)

    monkeypatch.setattr(store._db, "nodes", [f"node{k}" for k in range(nodes)])
    store._read_for_update = read_for_update  # type: ignore[method-assign]
    return reads


def test_an_allocation_tries_each_node_once_and_gives_the_last_ones_error(tmp_path, monkeypatch):
    # Losing a node is not a conflict: max_attempts does not count it.
    [store] = open_stores([f"sqlite:///{tmp_path}/a.db"], max_attempts=2)
    store.register("order", step=10)
    reads = _losing_nodes(store, monkeypatch, nodes=3, lost=3)
    with pytest.raises(StorageUnavailable, match="^node 3 lost$"):
        store.allocate("order")
    assert len(reads) == 3
    store.close()


def test_a_node_lost_costs_the_allocation_none_of_its_attempts_at_the_race(tmp_path, monkeypatch):
    [store] = open_stores([f"sqlite:///{tmp_path}/a.db"], max_attempts=3)
    store.register("order", step=10)
    reads = _losing_nodes(store, monkeypatch, nodes=2, lost=1)
    races = _losing_every_race(store, monkeypatch)
    with pytest.raises(StorageUnavailable, match="after 3 conflicting attempts"):
        store.allocate("order")
    assert (len(reads), len(races)) == (4, 3)  # the node lost, then 3 races lost
    store.close()


def _failing_inserts(store: SegmentStore, monkeypatch: pytest.MonkeyPatch,
                     error: Exception) -> list[str]:
    """Every insert of a registration fails with ``error``, and no row is ever read back;
    returns the list the inserts are counted in."""
    inserts: list[str] = []

    def begin() -> None:
        inserts.append("insert")
        raise error

    monkeypatch.setattr(store, "read", lambda biz_type: None)
    monkeypatch.setattr(store, "engine", SimpleNamespace(begin=begin))
    return inserts


@pytest.mark.parametrize("error", [
    sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
    sqlalchemy.exc.OperationalError("INSERT", {}, Exception(1213, "Deadlock found")),
], ids=["registered concurrently", "lost a race"])
def test_a_registration_that_loses_to_another_twice_asks_to_retry(files, monkeypatch, error):
    [store] = files(1)
    inserts = _failing_inserts(store, monkeypatch, error)
    with pytest.raises(StorageUnavailable) as info:
        store.register("order", step=10)
    assert len(inserts) == 2  # the row read again after each: still not there
    assert str(info.value) == f"could not register 'order' in {store.name}: retry"


def test_a_registration_the_database_fails_is_storage_unavailable_at_once(files, monkeypatch):
    [store] = files(1)
    inserts = _failing_inserts(store, monkeypatch, sqlalchemy.exc.OperationalError(
        "INSERT", {}, Exception(2013, "Lost connection to server during query")))
    with pytest.raises(StorageUnavailable, match=r"is unreachable or failing \(OperationalError\)"):
        store.register("order", step=10)
    assert len(inserts) == 1
