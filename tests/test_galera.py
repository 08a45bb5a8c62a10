"""idgen on a real 3-node MariaDB Galera cluster, started by the tests (``tests/support/galera.py``).

The cluster is one logical database: every URL lists its three nodes, each writer's own
node first, so the writers race for the same row through different nodes, and Galera
settles those races at COMMIT with certification failures (error 1213), which idgen
must retry as conflicts.
"""
from __future__ import annotations

import time

import pytest

from idgen_client import LocalGenerator, RemoteClient
from idgen_core.segment import Segment
from tests.support.galera import GaleraCluster
from tests.support.stores import prepare, registered
from tests.support.threads import Background, run_threads, unique_and_increasing
from tests.support.waiting import wait_until

# One file: the suite's workers take whole files, so one of them starts the cluster once.
pytestmark = [pytest.mark.galera, pytest.mark.slow]


def test_writers_on_three_nodes_race_for_one_row_and_every_allocation_succeeds(galera, capsys):
    """Three stores, each writing through a different node, allocate one biz type for 4 s
    (at most 3,000 segments each). Before lost certifications were taken for conflicts,
    a run like this failed thousands of allocations with StorageUnavailable."""
    database = galera.create_database()
    stores = [registered([galera.url(database, first=i)], "race", step=100)[0] for i in range(3)]
    segments: list[list[Segment]] = [[] for _ in stores]
    deadline = time.monotonic() + 4

    def allocate(index: int) -> None:
        while time.monotonic() < deadline and len(segments[index]) < 3000:
            segments[index].append(stores[index].allocate("race"))

    try:
        run_threads(allocate, [(i,) for i in range(3)])  # raises StorageUnavailable, if any
    finally:
        for store in stores:
            store.close()
    every = sorted((s.start, s.end) for each in segments for s in each)
    assert all(a_end < b_start for (_, a_end), (b_start, _) in zip(every, every[1:])), "overlap"
    conflicts = sum(store.conflicts for store in stores)
    assert all(len(each) > 0 for each in segments)
    assert conflicts > 0, "three writers on three nodes never raced: the test proved nothing"
    with capsys.disabled():
        print(f"\n[galera] {len(every)} segments from 3 nodes in 4 s, 0 overlaps, "
              f"{conflicts} conflicts retried")


def test_a_node_killed_and_rejoined_under_load_costs_callers_nothing(galera: GaleraCluster,
                                                                      start_server, capsys):
    """Three servers, each on its own node first; two remote callers per server and three
    local generators. Node 1 is killed with -9 under load, and started again (it rejoins
    by IST or SST) while the load goes on: 0 duplicate IDs, 0 errors seen by callers,
    each caller's IDs increasing."""
    database = galera.create_database()
    prepare([galera.url(database)], "chat", step=1000)
    servers = [start_server([galera.url(database, first=i)]) for i in range(3)]
    clients = [RemoteClient(server.address) for server in servers for _ in range(2)]
    generators = [LocalGenerator("chat", [s.address for s in servers]) for _ in range(3)]
    callers = [Background(lambda c=c: c.next_ids("chat", 100), max_calls=200_000,
                          name=f"remote-{n}") for n, c in enumerate(clients)]
    # Paced, so that a minute of load stays a few million IDs to check.
    callers += [Background(lambda g=g: [g.next_id() for _ in range(100)], max_calls=200_000,
                           pause=0.002, name=f"local-{n}") for n, g in enumerate(generators)]
    try:
        wait_until(lambda: all(len(c.calls) > 20 for c in callers), 30, "every caller to get IDs")
        galera.nodes[1].kill()
        killed_at = time.monotonic()
        wait_until(lambda: all(len(c.ids_after(killed_at + 1)) > 0 for c in callers), 30,
                   "every caller to get IDs with node 1 dead")
        galera.rejoin(1)
        rejoined_at = time.monotonic()
        wait_until(lambda: all(len(c.ids_after(rejoined_at)) > 0 for c in callers), 30,
                   "every caller to get IDs with node 1 back")
    finally:
        for caller in callers:
            caller.stop(30)
        for closing in (*clients, *generators):
            closing.close()
    errors = [e for c in callers for e in c.errors]
    assert errors == [], f"callers saw {len(errors)} errors, the first: {errors[:1]}"
    every = unique_and_increasing(callers)
    with capsys.disabled():
        print(f"\n[galera] node 1 killed and rejoined under load: {len(every)} IDs from "
              f"{len(callers)} callers, 0 duplicates, 0 errors")
