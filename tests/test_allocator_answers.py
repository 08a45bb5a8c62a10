"""What an allocator answers when databases fail, lack the biz type or are used up, and how
it checks a floor: in-process, against SQLite files and a database that refuses connections."""
from __future__ import annotations

import logging

import pytest

from idgen_client import (
    INT64_MAX,
    BizTypeMisconfigured,
    BizTypeMoving,
    IdSpaceExhausted,
    InvalidRequest,
    UnknownBizType,
)
from idgen_core.errors import StorageUnavailable
from idgen_core.segment import MAX_STEP_MULTIPLIER
from idgen_server import allocator as allocator_module
from idgen_server.allocator import Allocator
from idgen_server.registry import register
from idgen_server.rows import PENDING
from idgen_server.store import SegmentStore
from tests.support.fakes import spy
from tests.support.stores import edit_row, open_stores, register_as
from tests.support.waiting import wait_until



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


def test_a_biz_type_used_up_in_every_database_is_exhausted_not_unknown(files):
    stores = files(2)
    register(stores, "order", step=10)
    for store in stores:
        edit_row(store, "order", f"max_id = {INT64_MAX}")
    with Allocator(stores) as allocator:
        with pytest.raises(IdSpaceExhausted, match="'order' has used up the int64 range in "
                           "every database: no further IDs can be issued; register a new"):
            allocator.allocate("order")


def test_a_biz_type_no_database_has_is_unknown_with_the_command_that_adds_it(files):
    with Allocator(files(2)) as allocator:
        with pytest.raises(UnknownBizType) as info:
            allocator.allocate("order")
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
