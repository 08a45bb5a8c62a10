"""The client library against real servers: failover, local generation, metrics."""
from __future__ import annotations

import urllib.request

import pytest

from idgen_client import LocalGenerator, RemoteClient
from tests.support.fakes import spy
from tests.support.servers import free_port
from tests.support.stores import prepare, read_row
from tests.support.threads import run_threads


@pytest.fixture
def order_db(sqlite_url):
    prepare([sqlite_url], "order", step=1000)
    return sqlite_url


def test_remote_client_fails_over_when_a_server_is_killed(order_db, start_server):
    servers = [start_server([order_db]) for _ in range(2)]
    with RemoteClient([s.address for s in servers], timeout=2, retries=4) as client:
        before = [i for _ in range(20) for i in client.next_ids("order", 10)]
        servers[0].kill()
        allocated_at_kill = read_row(order_db, "order").max_id
        after = [i for _ in range(20) for i in client.next_ids("order", 10)]  # no error
    servers[0].start()  # a fresh process on the same port
    with RemoteClient(servers[0].address) as restarted:
        again = restarted.next_ids("order", 200)
    every = before + after + again
    assert len(every) == len(set(every)) == 600
    # What the killed server had buffered lies at or below allocated_at_kill; the restarted
    # server only hands out IDs from segments allocated later, above it.
    assert min(again) > allocated_at_kill


def test_local_generator_steady_state_stays_off_the_network(order_db, start_server):
    server = start_server([order_db])
    with RemoteClient(server.address) as client:
        fetching_threads = spy(client, "next_segment")
        with LocalGenerator("order", client) as generator:
            # A tight loop: segments grow (dynamic step) until they outlast a fetch.
            ids = [generator.next_id() for _ in range(3_000_000)]
            warmed_up_waits, warmed_up_fetches = generator.waits, generator.fetches
            ids += [generator.next_id() for _ in range(2_000_000)]
            assert generator.fetches > warmed_up_fetches  # segments kept coming...
            assert generator.waits == warmed_up_waits  # ...and nobody waited for one
    assert ids == sorted(set(ids))
    assert fetching_threads and set(fetching_threads) == {"idgen-fetch-order"}


def test_local_generators_in_many_threads_share_nothing(order_db, start_server):
    server = start_server([order_db])
    results: list[list[int]] = [[] for _ in range(8)]

    with LocalGenerator("order", server.address) as generator:
        def work(out: list[int]) -> None:
            for _ in range(10_000):
                out.append(generator.next_id())

        run_threads(work, [(r,) for r in results])
    every = [i for r in results for i in r]
    assert len(every) == len(set(every)) == 80_000
    assert all(r == sorted(r) for r in results)


def test_metrics_endpoint_reports_allocation(order_db, start_server):
    port = free_port()
    server = start_server([order_db], extra_args=["--metrics-port", str(port)])
    with RemoteClient(server.address) as client:
        client.next_ids("order", 10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "idgen_segments_allocated_total" in text and "idgen_database_up" in text
    assert 'idgen_buffer_waits_total{biz_type="order"}' in text
