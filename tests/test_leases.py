"""Leases granted from the databases: one holder at a time, epochs that only grow.

The server's ``Leases`` over real SQLite databases, with a clock the test moves:
what a contender waits for, what a renewal keeps, what a release frees, and a
majority of the biz type's databases for every grant.
"""
from __future__ import annotations

import itertools
import logging
import re
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from idgen_core.errors import BizTypeMisconfigured, InvalidRequest, StorageUnavailable, UnknownBizType
from idgen_core.leases import (
    CLOCK_DRIFT,
    holder_seconds,
    takeover_seconds,
    validate_epoch,
    validate_holder,
    validate_lease_name,
    validate_ttl_ms,
)
from idgen_core.segment import INT64_MAX
from idgen_server import leases as leases_module
from idgen_server.allocator import Allocator
from idgen_server.leases import LeaseGrant, Leases
from idgen_server.leasetable import LeaseRow
from idgen_server.store import SegmentStore
from tests.support.fakes import Clock
from tests.support.stores import registered

BIZ = "msg"
TTL_MS = 1000
NAMES = (f"shard-{n}" for n in itertools.count())


@pytest.fixture
def three_urls(tmp_path):
    return [f"sqlite:///{tmp_path}/db{k}.sqlite" for k in range(3)]


def leases_over(urls, clock, *, register=True):
    """A server's ``Leases`` over ``urls`` (the biz type registered over all of them)."""
    if register:
        for store in registered(urls, BIZ, step=100):
            store.close()
    allocator = Allocator([SegmentStore(url) for url in urls])
    return Leases(allocator, clock=clock), allocator


@pytest.fixture
def one_db(sqlite_url):
    clock = Clock()
    leases, allocator = leases_over([sqlite_url], clock)
    yield leases, clock
    allocator.close()


def test_a_lease_no_one_asked_for_is_granted_with_epoch_1_and_renewals_keep_it(one_db):
    leases, clock = one_db
    grant = leases.acquire(BIZ, "chat-1", "a", TTL_MS)
    assert grant.granted and grant.epoch == 1
    clock.now = 0.5
    assert leases.acquire(BIZ, "chat-1", "a", TTL_MS, epoch=1).epoch == 1
    assert leases.acquire(BIZ, "chat-2", "a", TTL_MS).epoch == 1  # another shard, its own


def test_a_contender_is_granted_only_once_the_holder_has_not_renewed_for_ttl_and_drift(one_db):
    leases, clock = one_db
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).granted
    refused = leases.acquire(BIZ, "chat", "b", TTL_MS)
    assert not refused.granted and refused.retry_after == pytest.approx(0.25)
    clock.now = 0.9
    assert leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1).granted  # a renewal restarts the count
    clock.now = 1.5
    assert not leases.acquire(BIZ, "chat", "b", TTL_MS).granted  # 1.5 s after the grant, 0.6 after the renewal
    clock.now = 0.9 + takeover_seconds(TTL_MS) - 0.001
    assert not leases.acquire(BIZ, "chat", "b", TTL_MS).granted  # seen since 1.5 only
    clock.now = 1.5 + takeover_seconds(TTL_MS) - 0.001
    assert not leases.acquire(BIZ, "chat", "b", TTL_MS).granted
    clock.now = 1.5 + takeover_seconds(TTL_MS)
    grant = leases.acquire(BIZ, "chat", "b", TTL_MS)
    assert grant.granted and grant.epoch == 2
    assert not leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1).granted  # a's is over for good


def test_the_holder_counts_less_than_a_contender_waits():
    assert holder_seconds(TTL_MS) < TTL_MS / 1000 < takeover_seconds(TTL_MS)
    assert takeover_seconds(TTL_MS) / holder_seconds(TTL_MS) == pytest.approx(
        (1 + CLOCK_DRIFT) / (1 - CLOCK_DRIFT))


def test_a_released_lease_is_granted_at_once_with_a_higher_epoch(one_db):
    leases, _ = one_db
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == 1
    assert leases.release(BIZ, "chat", "b", 1) == 0  # not b's to release
    assert not leases.acquire(BIZ, "chat", "b", TTL_MS).granted
    assert leases.release(BIZ, "chat", "a", 1) == 1
    assert leases.acquire(BIZ, "chat", "b", TTL_MS).epoch == 2
    assert not leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1).granted


def test_a_holder_asking_anew_after_a_lost_answer_gets_a_new_epoch(one_db):
    leases, _ = one_db
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == 1  # the answer was lost
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == 2
    assert not leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1).granted  # 1 is over


def test_bad_requests_and_unknown_biz_types_are_named(one_db):
    leases, _ = one_db
    with pytest.raises(InvalidRequest, match="lease name"):
        leases.acquire(BIZ, "", "a", TTL_MS)
    with pytest.raises(InvalidRequest, match="lease holder"):
        leases.acquire(BIZ, "chat", "a b", TTL_MS)
    with pytest.raises(InvalidRequest, match="200 to 600000 ms"):
        leases.acquire(BIZ, "chat", "a", 10)
    with pytest.raises(UnknownBizType, match="idgen add-biz nobody"):
        leases.acquire("nobody", "chat", "a", TTL_MS)


def _unreachable(store):
    """What the store's methods raise once its database stops answering."""
    def fail(*args, **kwargs):
        raise StorageUnavailable(f"database {store.name} is unreachable")
    return fail


def _down(store, monkeypatch):
    """The store's database stops answering (both its tables)."""
    fail = _unreachable(store)
    monkeypatch.setattr(store, "read", fail)
    monkeypatch.setattr(store.leases, "read", fail)
    monkeypatch.setattr(store.leases, "write", fail)


def test_a_grant_needs_a_majority_of_the_databases(three_urls, monkeypatch):
    clock = Clock()
    leases, allocator = leases_over(three_urls, clock)
    try:
        _down(allocator.stores[2], monkeypatch)
        assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == 1  # 2 of 3
        _down(allocator.stores[1], monkeypatch)
        with pytest.raises(StorageUnavailable, match="needs 2 of its databases, and 1 answered"):
            leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1)
    finally:
        allocator.close()


def test_a_server_given_some_of_the_databases_grants_no_lease(three_urls):
    """A new holder starts above every database: a server without all of them cannot
    promise that, neither for a lease nor for IDs above all."""
    for store in registered(three_urls, BIZ, step=100):
        store.close()
    leases, allocator = leases_over(three_urls[:2], Clock(), register=False)
    try:
        with pytest.raises(BizTypeMisconfigured, match="'msg' is served by 3 databases and this "
                                                       "server is given 2"):
            leases.acquire(BIZ, "chat", "a", TTL_MS)
        with pytest.raises(BizTypeMisconfigured, match="given all of them"):
            allocator.highest(BIZ)
        assert allocator.allocate(BIZ).delta == 3  # plain IDs: served all the same
    finally:
        allocator.close()


def test_rows_that_fail_the_checks_of_an_allocation_grant_nothing(three_urls):
    for store in registered(three_urls[:2], BIZ, step=100):
        with store.engine.begin() as conn:  # both in class 0: two databases could clash
            conn.exec_driver_sql("UPDATE idgen_segment SET remainder = 0")
        store.close()
    leases, allocator = leases_over(three_urls[:2], Clock(), register=False)
    try:
        with pytest.raises(BizTypeMisconfigured):
            leases.acquire(BIZ, "chat", "a", TTL_MS)
    finally:
        allocator.close()


# -- the property: one holder at a time, epochs that grow -------------------------------

_ACTION = st.tuples(
    st.sampled_from(["ask", "ask", "renew", "renew", "release"]),
    st.integers(0, 2),  # which holder
    st.sampled_from([0.0, 0.05, 0.3, 0.45, 0.7, 0.95]),  # seconds that pass first
    st.frozensets(st.integers(0, 2), max_size=1),  # databases down for this action
)


@pytest.fixture
def shared_leases(three_urls):
    """Shared by the examples of one test: each asks for a lease of its own name."""
    clock = Clock()
    leases, allocator = leases_over(three_urls, clock)
    yield leases, allocator, clock
    allocator.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(_ACTION, min_size=5, max_size=40))
def test_no_two_holders_ever_count_the_lease_held_at_once(shared_leases, actions):
    """Holders count as ``Lease`` does (from before each request, ttl less drift), on
    one clock; databases fail at random. Whenever two count it held, that is a bug."""
    leases, allocator, clock = shared_leases
    name = next(NAMES)
    held: dict[int, tuple[int, float]] = {}  # holder -> (epoch, valid until)
    epochs: list[int] = []  # of each new grant, in order
    stores = allocator.stores
    originals = [(s.read, s.leases.read, s.leases.write) for s in stores]
    try:
        for action, who, elapsed, down in actions:
            clock.now += elapsed
            for index, store in enumerate(stores):
                store.read, store.leases.read, store.leases.write = originals[index]
            for index in down:
                _break(stores[index])
            holder = f"h{who}"
            epoch, until = held.get(who, (0, 0.0))
            if epoch and clock.now >= until:
                epoch = 0
            sent = clock.now
            try:
                if action == "release":
                    if epoch:
                        del held[who]  # stops stamping first
                        leases.release(BIZ, name, holder, epoch)
                    continue
                grant = leases.acquire(BIZ, name, holder, TTL_MS, epoch if action == "renew" else 0)
            except StorageUnavailable:
                continue
            if grant.granted:
                if grant.epoch != epoch:
                    assert all(grant.epoch > e for e in epochs)
                    epochs.append(grant.epoch)
                held[who] = (grant.epoch, sent + holder_seconds(TTL_MS) - 0.1)
            valid = [w for w, (e, u) in held.items() if clock.now < u]
            assert len(valid) <= 1, f"two holders at {clock.now}: {held}"
    finally:
        for index, store in enumerate(stores):
            store.read, store.leases.read, store.leases.write = originals[index]


def _break(store):
    def fail(*args, **kwargs):
        raise StorageUnavailable(f"database {store.name} is unreachable")
    store.read = store.leases.read = store.leases.write = fail


def test_a_database_set_up_before_leases_existed_says_to_run_init_db(sqlite_url):
    leases, allocator = leases_over([sqlite_url], Clock())
    try:
        with allocator.stores[0].engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE idgen_lease")
        with pytest.raises(BizTypeMisconfigured, match="no idgen_lease table.*idgen init-db"):
            leases.acquire(BIZ, "chat", "a", TTL_MS)
        allocator.stores[0].create_schema()  # what idgen init-db does
        assert leases.acquire(BIZ, "chat", "a", TTL_MS).granted
    finally:
        allocator.close()


def test_a_renewal_of_an_epoch_never_granted_to_the_holder_grants_nothing(one_db):
    leases, _ = one_db
    assert not leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=2**63 - 1).granted  # no row yet
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == 1  # epochs untouched by it
    assert not leases.acquire(BIZ, "chat", "b", TTL_MS, epoch=1).granted  # a's, not b's
    with pytest.raises(InvalidRequest, match="epoch is 0 to ask for a new grant"):
        leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=-1)


# -- what each answer says, and what is logged ------------------------------------------


def _hold(store, name, holder, epoch, ttl_ms=TTL_MS):
    """Write the lease's row in this one database by hand (none must be there yet)."""
    assert store.leases.write(BIZ, name, None, holder=holder, epoch=epoch, ttl_ms=ttl_ms)


@pytest.fixture
def one_store(sqlite_url):
    """``one_db`` with its store, to write rows by hand."""
    clock = Clock()
    leases, allocator = leases_over([sqlite_url], clock)
    yield leases, clock, allocator.stores[0]
    allocator.close()


@pytest.fixture
def three_dbs(three_urls):
    clock = Clock()
    leases, allocator = leases_over(three_urls, clock)
    yield leases, clock, allocator.stores
    allocator.close()


@pytest.fixture
def four_dbs(tmp_path):
    clock = Clock()
    leases, allocator = leases_over([f"sqlite:///{tmp_path}/db{k}.sqlite" for k in range(4)], clock)
    yield leases, clock, allocator.stores
    allocator.close()


def test_a_grant_and_a_release_are_each_logged_once_with_the_lease_and_a_renewal_is_not(
        one_db, caplog):
    leases, _ = one_db
    caplog.set_level(logging.INFO, logger="idgen_server.leases")

    def logged():
        return [(r.levelno, r.biz_type, r.lease, r.epoch, r.getMessage())
                for r in caplog.records if r.name == "idgen_server.leases"]

    assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == 1
    [(level, biz_type, lease, epoch, granted)] = logged()
    assert (level, biz_type, lease, epoch) == (logging.INFO, BIZ, "chat", 1)
    assert leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1).granted
    assert len(logged()) == 1
    assert leases.release(BIZ, "chat", "a", 1) == 1
    [_, (level, biz_type, lease, epoch, released)] = logged()
    assert (level, biz_type, lease, epoch) == (logging.INFO, BIZ, "chat", 1)
    assert "granted" in granted and "released" in released
    for message in (granted, released):
        assert "'chat'" in message and repr(BIZ) in message and "epoch 1" in message


def test_a_renewal_of_an_epoch_not_held_is_told_to_ask_anew_within_a_quarter_of_its_ttl(one_db):
    leases, _ = one_db
    assert leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=5) == LeaseGrant(False, retry_after=0.25)


def test_a_contender_is_told_when_a_majority_of_the_rows_may_be_taken(three_dbs):
    leases, clock, stores = three_dbs
    for store, ttl_ms in zip(stores, (1000, 1100, 1200), strict=True):
        _hold(store, "chat", "a", 1, ttl_ms)  # takeable 1.01, 1.111 and 1.212 s after seen
    assert not leases.acquire(BIZ, "chat", "b", 4000).granted  # seen at 0
    clock.now = 1.0
    refused = leases.acquire(BIZ, "chat", "b", 4000)
    assert refused == LeaseGrant(False, retry_after=pytest.approx(0.111))  # the second shortest
    clock.now = 1.2  # two of them over
    assert leases.acquire(BIZ, "chat", "b", 4000) == LeaseGrant(True, 2)


def test_a_contender_with_a_short_ttl_asks_again_within_a_quarter_of_it(one_db):
    leases, _ = one_db
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).granted
    assert leases.acquire(BIZ, "chat", "b", 400) == LeaseGrant(False, retry_after=0.1)


def test_a_contender_with_a_long_ttl_still_asks_again_every_quarter_second(one_db):
    leases, _ = one_db
    assert leases.acquire(BIZ, "chat", "a", 4000).granted
    assert leases.acquire(BIZ, "chat", "b", 4000) == LeaseGrant(False, retry_after=0.25)


def test_the_highest_epoch_is_granted_and_then_refused_naming_the_lease(one_store):
    leases, _, store = one_store
    _hold(store, "chat", "", INT64_MAX - 1)  # released
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == INT64_MAX
    assert leases.release(BIZ, "chat", "a", INT64_MAX) == 1
    with pytest.raises(BizTypeMisconfigured, match="'chat' of 'msg' has reached the highest epoch"):
        leases.acquire(BIZ, "chat", "b", TTL_MS)


def test_a_renewal_never_takes_back_the_rows_of_a_later_grant(three_dbs):
    leases, clock, stores = three_dbs
    _hold(stores[0], "chat", "a", 1)  # a's answer from the others was lost: b took them over
    _hold(stores[1], "chat", "b", 2)
    _hold(stores[2], "chat", "b", 2)
    assert leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1) == LeaseGrant(False, retry_after=0.25)
    clock.now = 10 * takeover_seconds(TTL_MS)  # long after b stopped renewing
    assert not leases.acquire(BIZ, "chat", "a", TTL_MS, epoch=1).granted


def test_a_grant_needs_a_majority_of_four_databases_not_half(four_dbs):
    leases, _, stores = four_dbs
    _hold(stores[0], "chat", "a", 1)
    _hold(stores[1], "chat", "a", 1)  # free in the other two
    assert not leases.acquire(BIZ, "chat", "b", TTL_MS).granted


def test_a_grant_is_made_past_a_database_failing_as_it_is_written(three_dbs, monkeypatch):
    leases, _, stores = three_dbs
    monkeypatch.setattr(stores[0].leases, "write", _unreachable(stores[0]))
    assert leases.acquire(BIZ, "chat", "a", TTL_MS) == LeaseGrant(True, 1)


def test_a_grant_written_in_fewer_than_a_majority_is_refused_for_a_short_while(three_dbs,
                                                                             monkeypatch):
    leases, _, stores = three_dbs
    for store in stores[1:]:
        monkeypatch.setattr(store.leases, "write", _unreachable(store))
    assert leases.acquire(BIZ, "chat", "a", TTL_MS) == LeaseGrant(False, retry_after=0.05)


def test_a_lease_is_granted_past_the_first_database_down(three_dbs, monkeypatch):
    leases, _, stores = three_dbs
    _down(stores[0], monkeypatch)
    assert leases.acquire(BIZ, "chat", "a", TTL_MS) == LeaseGrant(True, 1)


def test_a_lease_over_four_databases_needs_three_of_them_to_answer(four_dbs, monkeypatch):
    leases, _, stores = four_dbs
    for store in stores[:2]:
        _down(store, monkeypatch)
    with pytest.raises(StorageUnavailable, match="needs 3 of its databases, and 2 answered"):
        leases.acquire(BIZ, "chat", "a", TTL_MS)
    for store in stores[2:]:
        _down(store, monkeypatch)
    with pytest.raises(StorageUnavailable, match="needs 3 of its databases, and 0 answered"):
        leases.acquire(BIZ, "chat", "a", TTL_MS)


def test_a_lease_is_granted_past_a_first_database_without_the_biz_types_row(three_urls):
    for store in registered(three_urls, BIZ, step=100):
        store.close()
    leases, allocator = leases_over(three_urls, Clock(), register=False)
    try:
        with allocator.stores[0].engine.begin() as conn:  # a registration left halfway
            conn.exec_driver_sql("DELETE FROM idgen_segment")
        assert leases.acquire(BIZ, "chat", "a", TTL_MS) == LeaseGrant(True, 1)
    finally:
        allocator.close()


def test_a_release_frees_the_lease_in_every_database_and_counts_them(three_dbs):
    leases, _, _ = three_dbs
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).granted
    assert leases.release(BIZ, "chat", "a", 1) == 3


def test_a_release_frees_the_databases_that_answer_past_one_down(three_dbs, monkeypatch):
    leases, _, stores = three_dbs
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).granted
    _down(stores[0], monkeypatch)
    assert leases.release(BIZ, "chat", "a", 1) == 2
    assert leases.acquire(BIZ, "chat", "b", TTL_MS).epoch == 2  # at once


def test_one_lease_name_in_two_biz_types_is_watched_apart(sqlite_url):
    for store in registered([sqlite_url], BIZ, step=100) + registered([sqlite_url], "other",
                                                                         step=100):
        store.close()
    clock = Clock()
    leases, allocator = leases_over([sqlite_url], clock, register=False)
    try:
        assert leases.acquire(BIZ, "chat", "a", TTL_MS).granted
        assert leases.acquire("other", "chat", "a", TTL_MS).granted
        assert not leases.acquire(BIZ, "chat", "b", TTL_MS).granted  # seen at 0
        clock.now = 0.5
        assert not leases.acquire("other", "chat", "b", TTL_MS).granted  # seen at 0.5
        clock.now = takeover_seconds(TTL_MS)
        assert leases.acquire(BIZ, "chat", "b", TTL_MS).granted
        assert not leases.acquire("other", "chat", "b", TTL_MS).granted
    finally:
        allocator.close()


# -- what a server remembers of rows under contention ----------------------------------


def _contend(leases, names):
    for name in names:
        assert not leases.acquire(BIZ, name, "b", TTL_MS).granted


def test_past_the_rows_it_remembers_a_server_forgets_the_oldest_sightings(one_store, monkeypatch):
    """With room for 12, the 13th sighting makes it keep the 6 newest; those forgotten are
    counted anew, which only delays their takeover."""
    monkeypatch.setattr(leases_module, "_REMEMBERED", 12)
    leases, clock, store = one_store
    names = [f"chat-{12 - k:02d}" for k in range(13)]  # sighted in the reverse of name order
    for k, name in enumerate(names):
        _hold(store, name, "a", 1, ttl_ms=1000 + 10 * (12 - k))  # the oldest wait the longest
    for k, name in enumerate(names):
        clock.now = k / 100
        _contend(leases, [name])
    clock.now = 3.0  # every wait is over
    assert all(leases.acquire(BIZ, name, "b", TTL_MS).granted for name in names[7:])
    assert not any(leases.acquire(BIZ, name, "b", TTL_MS).granted for name in reversed(names[:7]))


def test_a_server_forgets_first_the_sightings_whose_wait_is_over(one_store, monkeypatch):
    monkeypatch.setattr(leases_module, "_REMEMBERED", 12)
    leases, clock, store = one_store
    short = [f"short-{k}" for k in range(8)]
    long = [f"long-{k}" for k in range(5)]
    for name in short:
        _hold(store, name, "a", 1, ttl_ms=200)
    for name in long:
        _hold(store, name, "a", 1, ttl_ms=300)
    _contend(leases, short)  # at 0
    clock.now = takeover_seconds(200)  # the short ones' wait just over
    _contend(leases, long)  # the 13th sighting: the short ones are forgotten
    clock.now += takeover_seconds(300)
    assert all(leases.acquire(BIZ, name, "b", TTL_MS).granted for name in long)
    assert not any(leases.acquire(BIZ, name, "b", TTL_MS).granted for name in reversed(short))


# -- one database's lease table ----------------------------------------------------------


def test_a_damaged_lease_row_is_refused_naming_it(one_store):
    leases, _, store = one_store
    for column, value in (("epoch", -1), ("ttl_ms", 1.5)):
        _hold(store, "chat", "a", 1)
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE idgen_lease SET {column} = ?", (value,))
        with pytest.raises(BizTypeMisconfigured, match="lease 'chat' of 'msg' has a damaged row"):
            leases.acquire(BIZ, "chat", "b", TTL_MS)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM idgen_lease")


def test_a_lease_row_set_back_to_epoch_0_by_hand_is_not_damaged(one_store):
    leases, _, store = one_store
    _hold(store, "chat", "", 0)
    assert leases.acquire(BIZ, "chat", "a", TTL_MS).epoch == 1


def test_a_lease_row_is_read_and_written_only_under_its_biz_type_and_name(sqlite_url):
    table = registered([sqlite_url], BIZ, step=100)[0]
    try:
        leases = table.leases
        assert leases.write(BIZ, "chat", None, holder="a", epoch=1, ttl_ms=TTL_MS)
        assert leases.read("other", "chat") is None
        assert leases.write("other", "chat", None, holder="x", epoch=7, ttl_ms=TTL_MS)
        assert leases.write(BIZ, "chat-2", None, holder="y", epoch=8, ttl_ms=TTL_MS)
        assert leases.write(BIZ, "chat", leases.read(BIZ, "chat"), holder="b", epoch=2,
                            ttl_ms=TTL_MS)
        assert leases.read(BIZ, "chat").holder == "b"
        assert leases.read("other", "chat").holder == "x"
        assert leases.read(BIZ, "chat-2").holder == "y"
    finally:
        table.close()


def test_a_lease_row_changes_only_from_the_version_read_and_each_write_counts(sqlite_url):
    table = registered([sqlite_url], BIZ, step=100)[0]
    try:
        leases = table.leases
        assert leases.write(BIZ, "chat", None, holder="a", epoch=1, ttl_ms=TTL_MS)
        # b read no row either, but a inserted it first
        assert not leases.write(BIZ, "chat", None, holder="b", epoch=1, ttl_ms=TTL_MS)
        read = leases.read(BIZ, "chat")
        assert read.version == 1
        assert leases.write(BIZ, "chat", read, holder="a", epoch=1, ttl_ms=TTL_MS)
        assert not leases.write(BIZ, "chat", read, holder="b", epoch=2, ttl_ms=TTL_MS)  # stale
        assert leases.read(BIZ, "chat") == LeaseRow("a", 1, TTL_MS, 2)
    finally:
        table.close()


class _SerializationFailure(sqlite3.OperationalError):
    sqlstate = "40001"  # what PostgreSQL answers a write that lost to another


def test_a_lease_write_rolled_back_for_another_writer_is_lost_not_an_outage(sqlite_url):
    table = registered([sqlite_url], BIZ, step=100)[0]
    try:
        assert table.leases.write(BIZ, "chat", None, holder="a", epoch=1, ttl_ms=TTL_MS)

        @event.listens_for(table.engine, "before_cursor_execute")
        def lose(conn, cursor, statement, *args):
            if statement.startswith("UPDATE idgen_lease"):
                raise _SerializationFailure("could not serialize access due to concurrent update")

        assert not table.leases.write(BIZ, "chat", table.leases.read(BIZ, "chat"), holder="b",
                                      epoch=2, ttl_ms=TTL_MS)
    finally:
        table.close()


def test_a_lease_table_whose_database_cannot_be_opened_is_unavailable_saying_why(tmp_path):
    store = SegmentStore(f"sqlite:///{tmp_path}/missing/idgen.db")
    try:
        with pytest.raises(StorageUnavailable, match="file cannot be opened"):
            store.leases.read(BIZ, "chat")
        with pytest.raises(StorageUnavailable, match="file cannot be opened"):
            store.leases.write(BIZ, "chat", None, holder="a", epoch=1, ttl_ms=TTL_MS)
    finally:
        store.close()


# -- the rules of a request --------------------------------------------------------------


def test_a_lease_name_or_holder_that_is_not_a_string_is_refused_naming_its_type():
    with pytest.raises(InvalidRequest, match="lease name must be a string, not int"):
        validate_lease_name(7)
    with pytest.raises(InvalidRequest, match="lease holder must be a string, not bytes"):
        validate_holder(b"a")


def test_a_name_too_long_is_shown_cut_to_its_first_64_characters():
    with pytest.raises(InvalidRequest) as refused:
        validate_lease_name("a" * 64 + "bcd")
    assert repr("a" * 64) in str(refused.value)


@pytest.mark.parametrize("validate", [validate_lease_name, validate_holder])
def test_the_example_a_refused_name_is_given_is_itself_valid(validate):
    with pytest.raises(InvalidRequest) as refused:
        validate("-")
    example = re.search(r"e\.g\. '([^']*)'", str(refused.value))
    assert example and validate(example[1]) == example[1]


def test_a_ttl_is_an_integer_of_milliseconds_from_200_to_600000():
    assert validate_ttl_ms(200) == 200 and validate_ttl_ms(600_000) == 600_000
    for wrong in (199, 600_001, 1000.0, "1000", True):
        with pytest.raises(InvalidRequest, match=f"got {re.escape(repr(wrong))}$"):
            validate_ttl_ms(wrong)


def test_an_epoch_is_an_integer_from_0_to_the_largest_int64():
    assert validate_epoch(0) == 0 and validate_epoch(INT64_MAX) == INT64_MAX
    for wrong in (-1, INT64_MAX + 1, 2**64 - 1, 1.0, True):
        with pytest.raises(InvalidRequest, match=f"not {re.escape(repr(wrong))}$"):
            validate_epoch(wrong)
