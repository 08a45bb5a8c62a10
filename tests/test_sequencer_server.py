"""The sequencer against real servers and MariaDB: lagging databases, handover, kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict

import pytest

from idgen_client import LocalGenerator, RemoteClient, Sequencer, ServiceUnavailable, Stamp
from idgen_server.allocator import Allocator
from idgen_server.store import SegmentStore
from tests.support.chains import assert_chains
from tests.support.proxy import behind_proxy
from tests.support.stores import edit_row, prepare, read_row
from tests.support.threads import run_threads

pytestmark = pytest.mark.mariadb

BIZ = "msg"


def max_id(url: str) -> int:
    return read_row(url, BIZ).max_id


def set_max_id(url: str, value: int) -> None:
    """What another process's heavy use of this database leaves behind."""
    edit_row(url, BIZ, f"max_id = {value}")


# -- 2. segment switches across lagging databases -------------------------------------

def test_one_chain_per_group_across_segments_of_two_lagging_dbs(make_mariadb, start_server):
    urls = [make_mariadb(), make_mariadb()]
    prepare(urls, BIZ, step=40)
    set_max_id(urls[0], 50_000)  # DB 0 far ahead of DB 1
    server = start_server(urls)
    stamps: dict[object, list[Stamp]] = defaultdict(list)
    lock = threading.Lock()
    with LocalGenerator(BIZ, server.address) as generator:
        sequencer = Sequencer(generator)
        horizon = sequencer.horizon

        def work(seed: int) -> None:
            got = [(g % 4, sequencer.stamp(g % 4)) for g in range(seed, seed + 400)]
            with lock:
                for group, stamp in got:
                    stamps[group].append(stamp)

        run_threads(work, [(n,) for n in range(16)])
        fetches = generator.fetches
    assert horizon >= 50_000  # started above every database, the one ahead included
    assert_chains(stamps, start=horizon)
    seqs = [s.seq for group in stamps.values() for s in group]
    assert {seq % 2 for seq in seqs} == {0, 1} and fetches >= 3  # both databases served


def test_above_all_allocates_above_every_database_even_from_a_lagging_one(make_mariadb):
    urls = [make_mariadb(), make_mariadb()]
    prepare(urls, BIZ, step=100)
    set_max_id(urls[1], 7_000)
    allocator = Allocator([SegmentStore(u) for u in urls])
    try:
        segments = [allocator.allocate(BIZ, above_all=True) for _ in range(4)]
    finally:
        allocator.close()
    assert {s.remainder for s in segments} == {0, 1}  # DB 0, at 0 before, included
    assert all(s.start > 7_000 for s in segments)
    assert [s.start for s in segments] == sorted(s.start for s in segments)


def test_above_all_is_unavailable_while_a_database_cannot_be_read(make_mariadb, start_server):
    urls = [make_mariadb(), make_mariadb()]
    prepare(urls, BIZ, step=100)
    proxy, via_proxy = behind_proxy(urls[1])
    try:
        server = start_server([urls[0], via_proxy])
        proxy.refuse()
        with RemoteClient(server.address, retries=1) as client:
            plain = client.next_segment(BIZ)  # old callers: served by the database left
            with pytest.raises(ServiceUnavailable, match="cannot read every database"):
                client.next_segment(BIZ, above_all=True)
            with LocalGenerator(BIZ, client) as generator:
                with pytest.raises(ServiceUnavailable):
                    Sequencer(generator)
            proxy.restore()
            above = client.next_segment(BIZ, above_all=True)
    finally:
        proxy.close()
    assert plain.remainder == 0 and above.start > max(plain.end, max_id(urls[1]) - 100)


# -- 4. handover --------------------------------------------------------------------

def test_a_group_handed_over_continues_above_the_old_owner(make_mariadb, start_server):
    urls = [make_mariadb(), make_mariadb()]
    prepare(urls, BIZ, step=1_000)
    server = start_server(urls)
    store: dict[str, int] = {}  # the application's message store: highest seq per group
    with LocalGenerator(BIZ, server.address) as new_gen:
        new_owner = Sequencer(new_gen, loader=lambda group: store.get(group, 0))
        new_gen.next_id()  # the new owner has been running for a while, on its own segment
        with LocalGenerator(BIZ, server.address) as old_gen:
            old_owner = Sequencer(old_gen, loader=lambda group: store.get(group, 0))
            for _ in range(50):
                store["room"] = old_owner.stamp("room").seq
        # The old owner stopped; "room" is routed to the new owner, whose buffered IDs
        # all lie below the old owner's.
        assert new_gen.floor < store["room"]
        first = new_owner.stamp("room")
        second = new_owner.stamp("room")
    assert first.prev_seq == store["room"] < first.seq < second.seq
    assert second.prev_seq == first.seq
    assert new_owner.skips == 1  # moved past the floor by one NextSegment, not drained


# -- 3. restart, kill -9 included ------------------------------------------------------

CHILD = """
import sys
from idgen_client import LocalGenerator, Sequencer
with LocalGenerator("msg", sys.argv[1]) as generator:
    sequencer = Sequencer(generator)
    print("ready", flush=True)
    for line in sys.stdin:
        for _ in range(int(line)):
            for group in ("a", "b", "c"):
                stamp = sequencer.stamp(group)
                sys.stdout.write(f"{group} {stamp.seq} {stamp.prev_seq}\\n")
        print("done", flush=True)
"""


class Client:
    """A sequencer in its own process, stamping on command; ``kill()`` is kill -9."""

    def __init__(self, address: str) -> None:
        self.stamps: list[tuple[str, Stamp]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, address], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "0"})
        assert self._line() == "ready", self.proc.stderr.read()

    def _line(self) -> str:
        return self.proc.stdout.readline().strip()

    def _record(self, line: str) -> None:
        group, seq, prev = line.split()
        self.stamps.append((group, Stamp(int(seq), int(prev))))

    def stamp(self, rounds: int) -> None:
        self.proc.stdin.write(f"{rounds}\n")
        self.proc.stdin.flush()
        while (line := self._line()) != "done":
            assert line, f"the client died: {self.proc.stderr.read()}"
            self._record(line)

    def kill_while_stamping(self) -> None:
        self.proc.stdin.write("100000000\n")
        self.proc.stdin.flush()
        for _ in range(300):  # it is mid-run
            self._record(self._line())
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for line in self.proc.stdout:  # every stamp it handed out before it died
            if line.count(" ") == 2:
                self._record(line)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_after_kill_9_a_single_db_client_stamps_above_everything_before(
        mariadb_url, start_server):
    prepare([mariadb_url], BIZ, step=500)
    server = start_server([mariadb_url])
    before = Client(server.address)
    before.stamp(100)
    before.kill_while_stamping()
    after = Client(server.address)
    after.stamp(1)
    after.close()
    highest_before = max(s.seq for _, s in before.stamps)
    assert len(before.stamps) >= 600
    assert all(s.seq > highest_before for _, s in after.stamps)


def test_after_kill_9_a_client_stamps_above_everything_before_though_a_db_lags(
        make_mariadb, start_server):
    urls = [make_mariadb(), make_mariadb()]
    prepare(urls, BIZ, step=200)
    proxy, via_proxy = behind_proxy(urls[0])
    try:
        server = start_server([via_proxy, urls[1]])
        before = Client(server.address)  # starts while both databases can be read
        proxy.refuse()  # then database 0 is cut off, and lags while 1 serves on
        frozen = max_id(urls[0])
        while not before.stamps or max(s.seq for _, s in before.stamps) <= frozen + 1_000:
            before.stamp(200)
        before.kill_while_stamping()
        proxy.restore()
        # A fresh server process turns to database 0 first: the lagging one.
        server.kill()
        server.start()
        after = Client(server.address)
        after.stamp(1)
        after.close()
    finally:
        proxy.close()
    highest_before = max(s.seq for _, s in before.stamps)
    # A plain allocation from database 0 would have handed out (frozen, frozen + 200].
    assert frozen + 200 < highest_before
    assert all(s.seq > highest_before for _, s in after.stamps)
