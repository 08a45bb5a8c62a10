"""Three real servers on one MariaDB, sixteen client threads, a million IDs: no duplicate."""
from __future__ import annotations

import pytest

from idgen_client import LocalGenerator, RemoteClient
from tests.support.stores import prepare
from tests.support.threads import run_threads

TOTAL = 1_000_000
THREADS = 16
LOCAL_THREADS = 4  # of the 16, these use LocalGenerator (NextSegment); the rest NextId


@pytest.mark.mariadb
@pytest.mark.slow
def test_three_servers_sixteen_threads_a_million_ids_no_duplicate(mariadb_url, start_server,
                                                                  capsys):
    prepare([mariadb_url], "e2e", step=20_000)
    servers = [start_server([mariadb_url]) for _ in range(3)]
    per_thread = TOTAL // THREADS
    results: list[list[int]] = [[] for _ in range(THREADS)]

    def remote(index: int) -> None:
        with RemoteClient(servers[index % 3].address) as client:
            while len(results[index]) < per_thread:
                results[index] += client.next_ids("e2e", 1000)

    def local(index: int) -> None:
        with LocalGenerator("e2e", [s.address for s in servers]) as generator:
            out = results[index]
            for _ in range(per_thread):
                out.append(generator.next_id())

    def run(index: int) -> None:
        (local if index < LOCAL_THREADS else remote)(index)

    run_threads(run, [(i,) for i in range(THREADS)])  # raises what any thread raised
    every = [i for r in results for i in r]
    assert len(every) >= TOTAL
    duplicates = len(every) - len(set(every))
    assert duplicates == 0
    # Each server's IDs for a biz type increase: each thread calls one server in turn.
    for index, ids in enumerate(results):
        assert ids == sorted(ids), f"thread {index} saw IDs go backwards"
    with capsys.disabled():
        print(f"\n[e2e] 3 servers, {THREADS} threads ({LOCAL_THREADS} local generators), "
              f"{len(every)} IDs checked, {duplicates} duplicates")
