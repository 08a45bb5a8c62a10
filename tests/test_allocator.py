"""Allocation from real databases: SQLite, MariaDB and PostgreSQL."""
from __future__ import annotations

import pytest

from idgen_client import (
    INT64_MAX,
    BizTypeConflict,
    ConfigError,
    IdSpaceExhausted,
    InvalidRequest,
    UnknownBizType,
)
from idgen_core.errors import StorageUnavailable
from idgen_server.allocator import Allocator
from idgen_server.registry import register
from idgen_server.rows import BizRow, residue_class
from idgen_server.store import SegmentStore
from tests.support.fakes import spy
from tests.support.proxy import behind_proxy
from tests.support.stores import edit_row, open_stores, registered
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
