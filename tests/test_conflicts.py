"""A statement the database rolls back because another writer won is an allocation
conflict, retried, never an outage: MySQL/MariaDB's deadlock (1213, also Galera's
certification failure) and lock wait timeout (1205), PostgreSQL's serialization failure
(40001) and deadlock (40P01). Each is made to happen to the store's own compare-and-set
on a real server, by a second session holding the locks that cause it.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from idgen_core.segment import Segment
from idgen_server.store import SegmentStore
from tests.support.stores import registered
from tests.support.waiting import wait_until

BIZ = "race"


@contextmanager
def session(url: str) -> Iterator[Connection]:
    """A second session on the database, as another writer would hold one."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


class Allocation(threading.Thread):
    """``store.allocate(BIZ)`` in a thread: its segment, or what it raised."""

    def __init__(self, store: SegmentStore) -> None:
        super().__init__(name="test-allocation", daemon=True)
        self.store = store
        self.segment: Segment | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.segment = self.store.allocate(BIZ)
        except BaseException as exc:  # noqa: BLE001 - reported by result()
            self.error = exc

    def result(self) -> Segment:
        self.join(30)
        assert not self.is_alive(), "the allocation never ended"
        assert self.error is None, f"the lost race was not retried: {self.error!r}"
        assert self.segment is not None
        return self.segment


def allocated_through(store: SegmentStore, hold: Callable[[], None],
                      race: Callable[[], None]) -> Segment:
    """The segment the store allocates while another session, having run ``hold``
    before the allocation starts, makes its first attempt lose with ``race``; asserts
    that the loss was counted as a conflict and that the segment follows the one
    allocated before."""
    before = store.allocate(BIZ)
    hold()
    allocation = Allocation(store)
    race()
    segment = allocation.result()
    assert store.conflicts >= 1
    assert segment.start > before.end
    return segment


def waiting_on_a_lock(conn: Connection, query: str) -> Callable[[], bool]:
    return lambda: bool(conn.execute(text(query)).scalar())


# --- MySQL / MariaDB ---------------------------------------------------------------------------

MARIADB_WAITING = "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"


@pytest.mark.mariadb
def test_a_lock_wait_timeout_on_mariadb_is_a_conflict_retried(mariadb_url):
    """Another session holds the row (SELECT ... FOR UPDATE) longer than the store's lock
    wait (1 s, set for this store's sessions): the UPDATE ends with error 1205."""
    url = mariadb_url + "?init_command=" + quote("SET innodb_lock_wait_timeout = 1")
    store, = registered([url], BIZ, step=100)
    with session(mariadb_url) as other:

        def hold_the_row() -> None:
            other.execute(text("SELECT * FROM idgen_segment WHERE biz_type = :b FOR UPDATE"),
                          {"b": BIZ})

        def past_one_lock_wait() -> None:
            wait_until(lambda: store.conflicts >= 1, 20, "the store's lock wait to time out")
            other.rollback()

        allocated_through(store, hold_the_row, past_one_lock_wait)
    store.close()


@pytest.mark.mariadb
def test_a_deadlock_on_mariadb_is_a_conflict_retried(mariadb_url):
    """A trigger (the test's, not idgen's) makes the store's UPDATE also lock a row of
    another table, which a second session holds; that session then updates the segment
    row. InnoDB rolls back the lighter transaction, the store's (the other has changed
    500 rows), with error 1213: what Galera also answers for a lost certification."""
    store, = registered([mariadb_url], BIZ, step=100)
    with session(mariadb_url) as other:
        other.execute(text("CREATE TABLE lock_row (id INT PRIMARY KEY, n INT)"))
        other.execute(text("CREATE TABLE ballast (id INT PRIMARY KEY, n INT)"))
        other.execute(text("INSERT INTO lock_row VALUES (1, 0)"))
        other.execute(text("INSERT INTO ballast SELECT seq, 0 FROM seq_1_to_500"))
        other.execute(text("CREATE TRIGGER touch BEFORE UPDATE ON idgen_segment FOR EACH ROW "
                           "UPDATE lock_row SET n = n + 1 WHERE id = 1"))
        other.commit()

        def hold_the_lock_row() -> None:
            other.execute(text("UPDATE ballast SET n = n + 1"))
            other.execute(text("UPDATE lock_row SET n = n + 1 WHERE id = 1"))

        def deadlock() -> None:
            with session(mariadb_url) as watcher:
                wait_until(waiting_on_a_lock(watcher, MARIADB_WAITING), 20,
                           "the store's UPDATE to wait on the held row")
            other.execute(text("UPDATE idgen_segment SET step = step WHERE biz_type = :b"),
                          {"b": BIZ})  # closes the cycle: one of the two is rolled back
            wait_until(lambda: store.conflicts >= 1, 20, "the store to lose the deadlock")
            other.rollback()

        allocated_through(store, hold_the_lock_row, deadlock)
    store.close()


# --- PostgreSQL --------------------------------------------------------------------------------

POSTGRES_WAITING = ("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")


@pytest.mark.postgres
def test_a_serialization_failure_on_postgres_is_a_conflict_retried(postgres_server):
    """With REPEATABLE READ as the database's default (as a DBA may set it), the store's
    UPDATE waits on a row another session has updated, and fails with SQLSTATE 40001
    when that session commits."""
    url = postgres_server.create()
    with session(url) as other:
        name = other.execute(text("SELECT current_database()")).scalar()
        other.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_isolation '
                           "= 'repeatable read'"))
        other.commit()
    store, = registered([url], BIZ, step=100)
    with session(url) as other:

        def update_the_row() -> None:
            other.execute(text("UPDATE idgen_segment SET step = step WHERE biz_type = :b"),
                          {"b": BIZ})

        def commit_under_the_store() -> None:
            wait_until(waiting_on_a_lock(other, POSTGRES_WAITING), 20,
                       "the store's UPDATE to wait on the updated row")
            other.commit()

        allocated_through(store, update_the_row, commit_under_the_store)
    store.close()


@pytest.mark.postgres
def test_a_deadlock_on_postgres_is_a_conflict_retried(postgres_server):
    """As on MariaDB, a trigger makes the store's UPDATE lock a row the second session
    holds; PostgreSQL's deadlock check runs in the session that has waited
    deadlock_timeout (1 s): the store's, since the other's is set to 60 s. SQLSTATE 40P01."""
    url = postgres_server.create()
    store, = registered([url], BIZ, step=100)
    with session(url) as other:
        other.execute(text("CREATE TABLE lock_row (id INT PRIMARY KEY, n INT)"))
        other.execute(text("INSERT INTO lock_row VALUES (1, 0)"))
        other.execute(text("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ "
                           "BEGIN UPDATE lock_row SET n = n + 1 WHERE id = 1; RETURN NEW; END $$"))
        other.execute(text("CREATE TRIGGER touch BEFORE UPDATE ON idgen_segment FOR EACH ROW "
                           "EXECUTE FUNCTION touch()"))
        other.commit()

        def hold_the_lock_row() -> None:
            other.execute(text("SET deadlock_timeout = '60s'"))
            other.execute(text("UPDATE lock_row SET n = n + 1 WHERE id = 1"))

        def deadlock() -> None:
            with session(url) as watcher:
                wait_until(waiting_on_a_lock(watcher, POSTGRES_WAITING), 20,
                           "the store's UPDATE to wait on the held row")
            other.execute(text("UPDATE idgen_segment SET step = step WHERE biz_type = :b"),
                          {"b": BIZ})  # waits until the store's check rolls the store back
            other.rollback()

        allocated_through(store, hold_the_lock_row, deadlock)
    store.close()
