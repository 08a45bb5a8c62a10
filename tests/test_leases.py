"""Leases granted from the databases: one holder at a time, epochs that only grow.

The server's ``Leases`` over real SQLite databases, with a clock the test moves:
what a contender waits for, what a renewal keeps, what a release frees, and a
majority of the biz type's databases for every grant.
"""
from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idgen_core.errors import BizTypeMisconfigured, InvalidRequest, StorageUnavailable, UnknownBizType
from idgen_core.leases import CLOCK_DRIFT, holder_seconds, takeover_seconds
from idgen_server.allocator import Allocator
from idgen_server.leases import Leases
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
    with pytest.raises(UnknownBizType, match="idgen add-biz"):
        leases.acquire("nobody", "chat", "a", TTL_MS)


def _down(store, monkeypatch):
    """The store's database stops answering (both its tables)."""
    def fail(*args, **kwargs):
        raise StorageUnavailable(f"database {store.name} is unreachable")
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
        with pytest.raises(BizTypeMisconfigured, match="served by 3 databases and this server "
                                                       "is given 2"):
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
