"""Two databases serve one biz type; one is cut off for real mid-run, then comes back."""
from __future__ import annotations

import pytest

from idgen_client import RemoteClient
from tests.support.proxy import behind_proxy
from tests.support.stores import registered
from tests.support.threads import Background
from tests.support.waiting import wait_until


@pytest.mark.mariadb
@pytest.mark.slow
def test_one_db_cut_off_mid_run_costs_callers_nothing(make_mariadb, start_server):
    urls = [make_mariadb(), make_mariadb()]
    stores = registered(urls, "multi", step=2000)
    proxy, via_proxy = behind_proxy(urls[1])
    server = start_server([urls[0], via_proxy])
    client = RemoteClient(server.address, retries=0)
    # Client threads calling NextId until stopped, recording every ID and every error.
    load = Background(lambda: client.next_ids("multi", 10), threads=4)
    try:
        wait_until(lambda: {i % 2 for i in load.ids()} == {0, 1}, 60, "both DBs to serve")

        proxy.refuse()
        cut = len(load.ids())
        db1_at_cut = stores[1].read("multi").max_id
        # Keep going until DB 0 alone has handed out several fresh segments.
        wait_until(lambda: len(load.ids(cut)) > 20_000, 60, "DB 0 to serve 20,000 IDs alone")
        during = load.ids(cut)
        tail = during[len(during) // 2:]
        assert all(i % 2 == 0 for i in tail), "only DB 0's IDs can be new while DB 1 is cut off"
        assert stores[1].read("multi").max_id == db1_at_cut

        proxy.restore()
        back = len(load.ids())
        wait_until(lambda: any(i % 2 for i in load.ids(back)), 60, "DB 1 to be used again")
        assert stores[1].read("multi").max_id > db1_at_cut
    finally:
        load.stop()
        client.close()
        proxy.close()
        for store in stores:
            store.close()
    assert load.errors == []
    ids = load.ids()
    assert len(ids) == len(set(ids))
    for k, store in enumerate(stores):  # each DB's rows still hold only their own parity
        row = store.read("multi")
        assert (row.delta, row.remainder) == (2, k)
