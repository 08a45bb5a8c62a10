"""idgen on a real PostgreSQL primary with a streaming standby, started by the tests
(``tests/support/pgcluster.py``): the primary killed with -9 under load, the standby
promoted, the servers moving to it by themselves. With asynchronous replication the
promoted standby lacks the last allocations, and the servers' high-water mark must
keep them from being handed out again.
"""
from __future__ import annotations

import time
import pytest

from idgen_client import LocalGenerator, RemoteClient
from idgen_core.errors import IdGenError, ServiceUnavailable
from tests.support.pgcluster import PostgresPair
from tests.support.stores import prepare, read_row
from tests.support.threads import Background, unique_and_increasing
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_the_primary_killed_under_load_and_the_standby_promoted_costs_no_duplicate(
        synchronous_pair: PostgresPair, start_server, capsys):
    """Two servers, two remote callers each and two local generators; synchronous
    replication. The primary is killed with -9 and the standby promoted at once: the
    servers move to it by themselves (their URL lists both), 0 duplicate IDs, each
    caller's IDs increasing. Between the kill and the promotion no node takes writes; a
    caller whose server's buffers ran dry meanwhile may see ServiceUnavailable (seen twice
    in one run on the loaded 2-core machine, none in others), and nothing else."""
    pg = synchronous_pair
    database = pg.create_database()
    prepare([pg.url(database)], "chat", step=100_000)
    servers = [start_server([pg.url(database)]) for _ in range(2)]
    clients = [RemoteClient(server.address) for server in servers for _ in range(2)]
    generators = [LocalGenerator("chat", [s.address for s in servers]) for _ in range(2)]
    callers = [Background(lambda c=c: c.next_ids("chat", 100), max_calls=100_000, pause=0.001,
                          name=f"remote-{n}") for n, c in enumerate(clients)]
    callers += [Background(lambda g=g: [g.next_id() for _ in range(100)], max_calls=100_000,
                           pause=0.002, name=f"local-{n}") for n, g in enumerate(generators)]
    try:
        wait_until(lambda: all(len(c.calls) > 20 for c in callers), 30, "every caller to get IDs")
        pg.kill_primary()
        pg.promote()
        promoted_at = time.monotonic()
        wait_until(lambda: all(len(c.ids_after(promoted_at + 1)) > 0 for c in callers), 60,
                   "every caller to get IDs after the promotion")
        # The servers did move: they allocate on the promoted standby, the only primary left.
        standby_url = f"postgresql+psycopg://postgres@127.0.0.1:{pg.standby_port}/{database}"
        moved = read_row(standby_url, "chat")
        wait_until(lambda: read_row(standby_url, "chat").version > moved.version, 60,  # type: ignore[union-attr]
                   "a server to allocate on the promoted standby")
    finally:
        for caller in callers:
            caller.stop(30)
        for closing in (*clients, *generators):
            closing.close()
    errors = [e for c in callers for e in c.errors]
    assert all(isinstance(e, ServiceUnavailable) for e in errors), errors[:3]
    every = unique_and_increasing(callers)
    with capsys.disabled():
        print(f"\n[postgres] primary killed, standby promoted under load: {len(every)} IDs "
              f"from {len(callers)} callers, 0 duplicates, {len(errors)} unavailable")


def ids_through_the_failover(client: RemoteClient, timeout: float = 60) -> list[int]:
    """The next IDs the server hands out, once it can allocate again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.next_ids("chat", 100)
        except IdGenError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def seen_max_id(client: RemoteClient) -> int:
    """The chat row's max_id as the server last read it (its Status)."""
    rows = [row for db in client.status().databases for row in db.rows if row.biz_type == "chat"]
    return rows[0].max_id if rows else 0


def test_allocations_lost_by_an_asynchronous_failover_are_never_handed_out_again(
        asynchronous_pair: PostgresPair, start_server):
    """The standby is stopped; server A allocates on the primary alone (asynchronous:
    nothing waits for the standby), and server B reads the row as it does every second.
    The primary is killed with -9 and the standby, started again, promoted: its max_id is
    below IDs that A has handed out. Neither server hands them out again: A's own
    segments lie below its next ones anyway, but B's lie below A's, and only B's
    high-water mark (the max_id it read) keeps B above them, and B says so in its log.
    A server that never read them could not (what docs/high-availability.md says)."""
    pg = asynchronous_pair
    database = pg.create_database()
    prepare([pg.url(database)], "chat", step=100)
    a, b = (start_server([pg.url(database)]) for _ in range(2))
    with RemoteClient(a.address, retries=0) as to_a, RemoteClient(b.address, retries=0) as to_b:
        before = to_b.next_ids("chat", 50) + to_a.next_ids("chat", 150)
        pg.pause_standby()
        primary_url = f"postgresql+psycopg://postgres@127.0.0.1:{pg.primary_port}/{database}"
        standby_has = read_row(primary_url, "chat").max_id  # type: ignore[union-attr]
        lost: list[int] = []
        while not lost or max(lost) <= standby_has:  # past what the standby holds
            assert len(lost) < 1_000_000, "server A never allocated past the standby"
            lost += to_a.next_ids("chat", 100)
        highest = max(lost)
        wait_until(lambda: seen_max_id(to_b) >= highest, 10, "server B to read the row")
        pg.kill_primary()
        pg.resume_standby()
        # Read before the promotion: once it takes writes, server B moves the row back up
        # past its mark at once (a race the assertion below would lose now and then).
        standby_url = f"postgresql+psycopg://postgres@127.0.0.1:{pg.standby_port}/{database}"
        promoted = wait_until(lambda: read_row(standby_url, "chat"), 30,
                              "the standby to answer reads", ignoring=Exception)
        pg.promote()
        assert promoted is not None and promoted.max_id < highest, (
            "the failover lost nothing: the test proved nothing")
        held = [seg.end for biz in to_b.status().biz_types if biz.biz_type == "chat"
                for seg in (biz.current, biz.next) if seg.end]
        after_b: list[int] = []
        while not after_b or max(after_b) <= max(held):  # B's buffers used up, and refilled
            assert len(after_b) < 1_000_000
            after_b += ids_through_the_failover(to_b)
        after_a = ids_through_the_failover(to_a)
    again = (set(after_a) | set(after_b)) & (set(before) | set(lost))
    assert not again, f"{len(again)} IDs handed out again, e.g. {sorted(again)[:5]}"
    assert min(i for i in after_b if i > max(held)) > highest
    # Both servers saw the row at its highest, and each one's watch moves it back up: the
    # first to read the promoted row logs the rollback, and the other then finds it repaired.
    wait_until(lambda: "below what this server had seen" in "".join(a.output + b.output), 10,
               "a server to log the rollback")
