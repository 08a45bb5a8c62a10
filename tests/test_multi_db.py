"""Two databases serve one biz type; one is cut off for real mid-run, then comes back."""
from __future__ import annotations

import threading
import time

import pytest

from idgen_client import RemoteClient
from idgen_server.registry import register
from idgen_server.store import SegmentStore
from tests.support.databases import MARIADB_HOST, MARIADB_PORT
from tests.support.proxy import TcpProxy


class Load:
    """Client threads calling NextId until stopped, recording every ID and error."""

    def __init__(self, address: str, threads: int = 4) -> None:
        self.ids: list[int] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._client = RemoteClient(address, retries=0)
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self._client.next_ids("multi", 10)
            except Exception as exc:  # noqa: BLE001 - every error is a failure here
                with self._lock:
                    self.errors.append(exc)
                continue
            with self._lock:
                self.ids += got

    def mark(self) -> int:
        with self._lock:
            return len(self.ids)

    def since(self, mark: int) -> list[int]:
        with self._lock:
            return self.ids[mark:]

    def wait_for(self, predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._client.close()


@pytest.mark.mariadb
@pytest.mark.slow
def test_one_db_cut_off_mid_run_costs_callers_nothing(make_mariadb, start_server):
    urls = [make_mariadb(), make_mariadb()]
    stores = [SegmentStore(u) for u in urls]
    for store in stores:
        store.create_schema()
    register(stores, "multi", step=2000)
    proxy = TcpProxy(MARIADB_HOST, MARIADB_PORT)
    via_proxy = urls[1].replace(f":{MARIADB_PORT}/", f":{proxy.port}/")
    server = start_server([urls[0], via_proxy])
    load = Load(server.address)
    try:
        load.wait_for(lambda: {i % 2 for i in load.ids} == {0, 1})  # both DBs serve

        proxy.refuse()
        cut = load.mark()
        db1_at_cut = stores[1].read("multi").max_id
        # Keep going until DB 0 alone has handed out several fresh segments.
        load.wait_for(lambda: len(load.since(cut)) > 20_000)
        during = load.since(cut)
        tail = during[len(during) // 2:]
        assert all(i % 2 == 0 for i in tail), "only DB 0's IDs can be new while DB 1 is cut off"
        assert stores[1].read("multi").max_id == db1_at_cut

        proxy.restore()
        back = load.mark()
        load.wait_for(lambda: any(i % 2 for i in load.since(back)))  # DB 1 is used again
        assert stores[1].read("multi").max_id > db1_at_cut
    finally:
        load.stop()
        proxy.close()
        for store in stores:
            store.close()
    assert load.errors == []
    assert len(load.ids) == len(set(load.ids))
    for k, store in enumerate(stores):  # each DB's rows still hold only their own parity
        row = store.read("multi")
        assert (row.delta, row.remainder) == (2, k)
