"""What idgen does when parts of it die: real servers, real MariaDB databases, a real proxy.

Each test injects one kind of fault and checks the behaviour idgen promises for it; ``tests/test_faults_harness.py`` runs them all together under load.
"""
from __future__ import annotations

import time

import grpc
import pytest

from idgen_client import (
    INT64_MAX,
    IdGenError,
    IdSpaceExhausted,
    LocalGenerator,
    RemoteClient,
    ServiceUnavailable,
)
from idgen_wire import idgen_pb2
from tests.support.servers import stub_to
from tests.support.stores import ProxiedDatabases
from tests.support.threads import Background
from tests.support.waiting import eventually, wait_until

pytestmark = pytest.mark.mariadb


@pytest.fixture
def two_dbs(make_mariadb):
    dbs = ProxiedDatabases([make_mariadb() for _ in range(2)])
    yield dbs
    dbs.close()


@pytest.fixture
def one_db(make_mariadb):
    dbs = ProxiedDatabases([make_mariadb()])
    yield dbs
    dbs.close()


def allocations(dbs: ProxiedDatabases, biz_type: str) -> int:
    return sum(row.version for row in dbs.rows(biz_type))


# -- one database of two cut off -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cut", ["refuse", "hang"])
def test_one_db_of_two_cut_callers_see_no_error_and_the_other_dbs_ids_keep_flowing(
        two_dbs, start_server, cut):
    two_dbs.register("remote", step=200)  # 100 IDs per segment: 10 segments below
    two_dbs.register("local", step=200)
    server = start_server(two_dbs.proxied)
    with RemoteClient(server.address) as client, LocalGenerator("local", client) as generator:
        client.next_ids("remote", 10)
        generator.next_ids(10)
        before = two_dbs.rows("remote") + two_dbs.rows("local")
        getattr(two_dbs.proxies[0], cut)()
        remote = [i for _ in range(20) for i in client.next_ids("remote", 50)]
        local = [i for _ in range(20) for i in generator.next_ids(50)]
        after = two_dbs.rows("remote") + two_dbs.rows("local")
    assert len(set(remote)) == len(set(local)) == 1000
    # The cut database allocated nothing more; the other kept allocating ...
    assert after[0].version == before[0].version and after[2].version == before[2].version
    assert after[1].version > before[1].version and after[3].version > before[3].version
    # ... so once the buffered segments (at most 2 x 100 IDs each) are used up, every ID
    # comes from database 1: IDs = 1 (mod 2).
    assert {i % 2 for i in remote[-700:]} == {1} and {i % 2 for i in local[-700:]} == {1}
    assert local == sorted(local)


# -- all databases cut off ---------------------------------------------------------------

@pytest.mark.slow
def test_all_dbs_cut_local_generator_and_server_serve_their_buffers_then_unavailable_then_recover(
        two_dbs, start_server):
    two_dbs.register("local", step=200)  # 100 IDs per segment
    two_dbs.register("remote", step=200)
    server = start_server(two_dbs.proxied)
    with RemoteClient(server.address, retries=1, timeout=2) as client, \
            LocalGenerator("local", client, wait_timeout=10) as generator, \
            stub_to(server.address) as stub:

        def next_remote(count: int = 1) -> list[int]:
            return list(stub.NextId(idgen_pb2.NextIdRequest(biz_type="remote", count=count),
                                    timeout=10).ids)

        seen = generator.next_ids(30) + next_remote(30)  # both cross the 20% preload mark
        wait_until(lambda: generator.fetches == 2, 20, "the generator's preload")
        wait_until(lambda: allocations(two_dbs, "remote") == 2, 20, "the server's preload")
        for proxy in two_dbs.proxies:
            proxy.refuse()

        buffered = []
        with pytest.raises(ServiceUnavailable) as info:
            for _ in range(1000):
                buffered.append(generator.next_id())
        assert len(buffered) == 70 + 100, "the generator serves exactly what it had buffered"
        assert "retry" in str(info.value) and "could allocate" in str(info.value)

        served = []
        with pytest.raises(grpc.RpcError) as rpc_info:
            for _ in range(1000):
                served += next_remote()
        assert len(served) == 70 + 100, "the server serves exactly what it had buffered"
        assert rpc_info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "retry later" in rpc_info.value.details()

        for proxy in two_dbs.proxies:
            proxy.restore()
        recovered = {  # each recovers by itself
            "local": eventually(lambda: generator.next_ids(10), 30,
                                errors=(IdGenError, grpc.RpcError), interval=0.02),
            "remote": eventually(lambda: next_remote(10), 30,
                                 errors=(IdGenError, grpc.RpcError), interval=0.02)}
    assert recovered["local"][0] > buffered[-1], "the generator's IDs still increase"
    local = seen[:30] + buffered + recovered["local"]
    remote = seen[30:] + served + recovered["remote"]
    assert len(set(local)) == len(local) and len(set(remote)) == len(remote)


# -- a server killed ---------------------------------------------------------------------

@pytest.mark.slow
def test_killed_server_remote_clients_fail_over_and_its_buffered_ids_are_never_handed_out(
        two_dbs, start_server):
    two_dbs.register("k", step=1000)  # 500 IDs per segment
    a = start_server(two_dbs.urls)
    with RemoteClient(a.address) as only_a:
        from_a = only_a.next_ids("k", 300)  # A claims a segment and preloads a second
    wait_until(lambda: allocations(two_dbs, "k") == 2, 20, "A's preload")
    # Everything A holds lies at or below each database's max_id now.
    at_kill = {k: row.max_id for k, row in enumerate(two_dbs.rows("k"))}
    b = start_server(two_dbs.urls)

    client = RemoteClient([a.address, b.address], retries=4, timeout=2)
    load = Background(lambda: client.next_ids("k", 20), catch=IdGenError, max_calls=10_000,
                      name="load")
    try:
        wait_until(lambda: len(load.calls) >= 20, 20, "calls before the kill")
        a.kill()
        killed = time.monotonic()
        wait_until(lambda: sum(t > killed for t, _ in load.calls) >= 100, 20,
                   "calls after the kill")
    finally:
        load.stop(30)
        client.close()
    a.start()
    with RemoteClient(a.address) as restarted:
        from_restarted = restarted.next_ids("k", 300)

    assert load.errors == [], "failover hides the dead server"
    after_kill = load.ids_after(killed) + from_restarted
    handed_out_again = [i for i in after_kill if i <= at_kill[i % 2]]
    assert handed_out_again == [], "nothing the dead server had buffered is handed out again"
    everything = from_a + load.ids() + from_restarted
    assert len(set(everything)) == len(everything)


# -- the int64 range running out ---------------------------------------------------------

def test_int64_running_out_on_two_dbs_is_resource_exhausted_and_never_above_2_63_minus_1(
        two_dbs, start_server):
    two_dbs.register("top", step=1000)
    two_dbs.register("top-local", step=1000)
    two_dbs.set_max_id("top", INT64_MAX - 1500)
    two_dbs.set_max_id("top-local", INT64_MAX - 1500)
    server = start_server(two_dbs.urls)
    ids: list[int] = []
    with stub_to(server.address) as stub:
        with pytest.raises(grpc.RpcError) as info:
            for _ in range(2000):
                ids += stub.NextId(idgen_pb2.NextIdRequest(biz_type="top", count=1), timeout=10).ids
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "int64" in info.value.details()
    # Increasing (so a database whose range lies below the server's floor is passed by),
    # up to the very top, none twice, none beyond.
    assert ids == sorted(set(ids)) and INT64_MAX - 1500 < ids[0] and ids[-1] >= INT64_MAX - 1
    assert all(i <= INT64_MAX for i in ids)

    with LocalGenerator("top-local", server.address) as generator:
        local = []
        with pytest.raises(IdSpaceExhausted, match="int64"):
            for _ in range(2000):
                local.append(generator.next_id())
    assert local == sorted(set(local)) and INT64_MAX - 1500 < local[0] and local[-1] >= INT64_MAX - 1
    assert all(i <= INT64_MAX for i in local)


# -- a connection dropped at the commit ------------------------------------------------

def next_ids_across_a_dropped_commit(dbs: ProxiedDatabases, start_server, count: int,
                                     **trap: bool) -> tuple[list[int], object]:
    """Register ``c`` (step 100) in the one database and start a server that reaches it
    through its proxy, which drops the connection at the first commit
    (``drop_at_commit(1, **trap)``). Returns the IDs a client that retries got, and the drop."""
    dbs.register("c", step=100)
    server = start_server(dbs.proxied)
    dbs.proxies[0].drop_at_commit(1, **trap)
    with RemoteClient(server.address, retries=4) as client:
        ids = client.next_ids("c", count)
    [drop] = dbs.proxies[0].drops
    return ids, drop


def test_connection_dropped_between_update_and_commit_rolls_back_and_the_range_is_claimed_again(
        one_db, start_server):
    ids, drop = next_ids_across_a_dropped_commit(one_db, start_server, 10)
    assert drop.when == "before" and drop.max_id == 100
    # The update never committed, so the retry claimed the very same range: (0, 100].
    assert ids == list(range(1, 11))


def test_commit_whose_answer_is_lost_wastes_its_range_never_hands_it_out(one_db, start_server):
    ids, drop = next_ids_across_a_dropped_commit(one_db, start_server, 150, after=True)
    assert drop.when == "after" and drop.max_id == 100
    assert one_db.rows("c")[0].max_id >= 300, "the lost range stays claimed"
    # (0, 100] committed but its answer was lost: wasted, never handed out.
    assert min(ids) > 100 and ids == list(range(101, 251))


@pytest.mark.slow
def test_a_transaction_orphaned_between_update_and_commit_does_not_lock_the_db_for_good(
        one_db, start_server):
    # Server A reaches the database through a proxy that, after A's UPDATE, forwards
    # nothing more and never closes A's connection: A's host vanished mid-transaction.
    # The database keeps the transaction and its row lock until it times it out itself.
    one_db.register("o", step=100)
    a = start_server(one_db.proxied)
    b = start_server(one_db.urls)
    one_db.proxies[0].drop_at_commit(1, partition=True)
    with RemoteClient(a.address, retries=0, timeout=1) as to_a:
        with pytest.raises(ServiceUnavailable):
            to_a.next_ids("o", 1)
    wait_until(lambda: one_db.proxies[0].drops, 20, "the partition")

    def ten_ids_from(address: str) -> list[int]:
        with RemoteClient(address, retries=0, timeout=5) as client:
            return client.next_ids("o", 10)

    # MariaDB's default would keep the orphan for wait_timeout (8 hours); the servers'
    # sessions set idle_transaction_timeout, so it is rolled back within seconds.
    from_b = eventually(lambda: ten_ids_from(b.address), 60, errors=IdGenError, interval=0.02)
    from_a = eventually(lambda: ten_ids_from(a.address), 60, errors=IdGenError, interval=0.02)
    assert len(set(from_a + from_b)) == 20
