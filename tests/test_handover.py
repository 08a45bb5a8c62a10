"""Groups handed from owner to owner as it happens in production, under a lease.

Owner processes (``tests/support/owner.py``: a Sequencer under a Lease, saving to a
message store that checks the epoch) stamp 20 groups at 500 messages a second
against a real ``idgen serve``; a receiver follows the README's loop on the store
while they run. Whatever happens to the owners (a rolling deploy, a pause longer
than the lease, ``kill -9``, the lease's database cut), every message a sender was
told is saved is shown exactly once, and no seq is stamped twice.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest

from idgen_client import (
    Arrival,
    ConfigError,
    LocalGenerator,
    Receiver,
    RemoteClient,
    Sequencer,
    UnknownBizType,
)
from idgen_client.lease import Lease
from idgen_core.leases import takeover_seconds
from tests.support.owner import BIZ, MessageStore
from tests.support.proxy import behind_proxy
from tests.support.stores import prepare
from tests.support.waiting import wait_until

TTL = 1.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Owner:
    """An owner process; its output lines are collected as they come."""

    def __init__(self, address: str, store: str, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.owner", address, store, name, "--ttl", str(TTL)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: "started" in self.lines or self.process.poll() is not None, 30,
                   f"owner {name} to start")
        assert self.process.poll() is None, f"owner {name} exited: {self.lines}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def acks(self) -> list[tuple[str, str, int, int, float]]:
        """(message ID, group, seq, epoch, stamped at) of each message saved."""
        return [(m, g, int(s), int(e), float(t)) for kind, m, g, s, e, t in
                (line.split() for line in list(self.lines) if line.startswith("ack "))]

    def epochs(self) -> list[int]:
        return [int(line.split()[1]) for line in list(self.lines) if line.startswith("epoch ")]

    def stop(self) -> None:
        """SIGTERM, as a deploy stops it: it releases its lease and exits 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
        assert self.process.wait(30) in (0, -signal.SIGKILL)
        self._reader.join(10)


@dataclass
class Shown:
    """What the receiver showed, by message ID: in order, or as late."""

    in_order: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)


class Follower(threading.Thread):
    """A receiver following the README's loop on the message store, as the owners write."""

    GAP_PATIENCE = 1.0  # seconds a gap may wait for a message still being saved

    def __init__(self, store_path: str) -> None:
        super().__init__(name="follower", daemon=True)
        self.store = MessageStore(store_path)
        self.receiver: Receiver[str] = Receiver()
        self.shown = Shown()
        self.done = threading.Event()
        self._read = 0
        self._gaps: dict[tuple[str, int], float] = {}

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.step()

    def step(self, *, final: bool = False) -> None:
        rows = self.store.after(self._read)
        groups = set()
        for n, group, seq, prev, epoch, message_id in rows:
            self._read = n
            self.add(group, seq, prev, epoch, message_id)
            groups.add(group)
        for group in groups | {g for g, _ in self._gaps}:
            self.drain(group, final=final)

    def add(self, group: str, seq: int, prev: int, epoch: int, message_id: str) -> None:
        arrival = self.receiver.add(group, (seq, prev, epoch), message_id, message_id=message_id)
        if arrival is Arrival.LATE:
            self.shown.late.append(message_id)  # shown, marked late: never dropped

    def drain(self, group: str, *, final: bool) -> None:
        self.shown.in_order.extend(m for _, m in self.receiver.ready(group))
        for gap in self.receiver.missing(group):
            fetched = self.store.between(group, gap.after, gap.through)
            for _, g, seq, prev, epoch, message_id in fetched:
                self.add(g, seq, prev, epoch, message_id)
            if not fetched:
                first = self._gaps.setdefault((group, gap.through), time.monotonic())
                if final or time.monotonic() - first >= self.GAP_PATIENCE:
                    self.receiver.skip(group, gap.through)  # stamped, never saved
                    del self._gaps[(group, gap.through)]
            self.shown.in_order.extend(m for _, m in self.receiver.ready(group))

    def finish(self) -> Shown:
        self.done.set()
        self.join(10)
        for _ in range(3):
            self.step(final=True)
        self.store.close()
        return self.shown


def check(owners: list[Owner], store_path: str, shown: Shown) -> Counter[str]:
    """0 acknowledged messages never shown, 0 shown twice, 0 seqs stamped twice."""
    acked = {ack[0] for owner in owners for ack in owner.acks()}
    everything = shown.in_order + shown.late
    twice = [m for m, n in Counter(everything).items() if n > 1]
    assert not twice, f"{len(twice)} messages shown twice, e.g. {twice[:5]}"
    never = acked - set(everything)
    assert not never, f"{len(never)} of {len(acked)} acknowledged messages never shown"
    store = MessageStore(store_path)
    rows = store.after(0)
    store.close()
    seqs = Counter((group, seq) for _, group, seq, *_ in rows)
    assert max(seqs.values()) == 1, "a seq stamped twice"
    ids = Counter(seq for _, _, seq, *_ in rows)
    assert max(ids.values()) == 1, "a seq used in two groups"
    # The store's check: once a group has a message of an epoch, none of an older one is saved.
    newest: dict[str, int] = {}
    for _, group, seq, _, epoch, message_id in rows:  # in the order they were saved
        assert epoch >= newest.get(group, 0), f"{message_id} of epoch {epoch} saved after a later owner's"
        newest[group] = epoch
    return Counter(acked=len(acked), late=len(shown.late), saved=len(rows))


@pytest.fixture
def start_owner():
    """Starts owner processes; any still running after the test is killed."""
    started: list[Owner] = []

    def start(address: str, store: str, name: str) -> Owner:
        owner = Owner(address, store, name)
        started.append(owner)
        return owner

    yield start
    for owner in started:
        if owner.process.poll() is None:
            owner.process.kill()
            owner.process.wait(10)


@pytest.fixture
def chat(sqlite_url, start_server, tmp_path):
    """A server on SQLite with the biz type, and a message store's path."""
    prepare([sqlite_url], BIZ, step=2_000)
    server = start_server([sqlite_url])
    return server.address, str(tmp_path / "messages.sqlite")


def wait_for_acks(owner: Owner, count: int, timeout: float = 30) -> None:
    wait_until(lambda: len(owner.acks()) >= count, timeout, f"{owner.name} to save {count} messages")


def pause(owner: Owner, store_path: str) -> None:
    """SIGSTOP the owner at a moment it holds no write lock on the message store.

    A real store ends a dead or stalled session's transaction by its own timeouts; SQLite
    has none, and an owner stopped inside its save would keep every other owner from
    saving until it went on, which is not the pause under test. So the test stops it,
    and lets it go on and tries again while the store's write lock cannot be had.
    """
    probe = sqlite3.connect(store_path, timeout=0.2, isolation_level=None)
    try:
        for _ in range(50):
            owner.process.send_signal(signal.SIGSTOP)
            wait_until(lambda: stopped(owner.process.pid), 5, f"owner {owner.name} to stop")
            try:
                probe.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # "database is locked": stopped inside a save
                owner.process.send_signal(signal.SIGCONT)
                time.sleep(0.01)
                continue
            probe.execute("ROLLBACK")
            return
        raise AssertionError(f"owner {owner.name} held the store's write lock at 50 tries")
    finally:
        probe.close()


def stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state T in /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def by_epoch(owner: Owner) -> dict[int, list[int]]:
    seqs: dict[int, list[int]] = defaultdict(list)
    for _, _, seq, epoch, _ in owner.acks():
        seqs[epoch].append(seq)
    return seqs


def contended(chat, start_owner) -> tuple[str, Follower, Owner, Owner]:
    """The store, its follower, an owner that has saved 300 messages, and a second owner
    started meanwhile that is refused (NotOwner): where each handover test begins."""
    address, store = chat
    follower = Follower(store)
    follower.start()
    old = start_owner(address, store, "old")
    wait_for_acks(old, 300)
    new = start_owner(address, store, "new")  # the old one has not stopped yet
    wait_until(lambda: "notowner" in new.lines, 10, "the new owner to be refused")
    return store, follower, old, new


def test_a_rolling_deploy_hands_the_groups_over_without_losing_a_message(chat, start_owner):
    store, follower, old, new = contended(chat, start_owner)
    time.sleep(1.0)  # both running, both stamping (or trying to) the same groups
    assert not new.acks()
    old.stop()
    wait_for_acks(new, 300, timeout=TTL * 5)  # released: taken over at once, not after a ttl
    new.stop()
    figures = check([old, new], store, follower.finish())
    assert max(old.epochs()) < min(new.epochs())
    assert max(max(s) for s in by_epoch(old).values()) < min(min(s) for s in by_epoch(new).values())
    assert figures["acked"] >= 600


def test_an_owner_paused_longer_than_its_lease_is_fenced_off(chat, start_owner):
    store, follower, old, new = contended(chat, start_owner)
    pause(old, store)  # a GC pause, a stopped VM
    paused = time.monotonic()
    wait_for_acks(new, 300, timeout=TTL * 10)
    taken_over = min(t for *_, t in new.acks())
    refusals = old.lines.count("notowner")
    old.process.send_signal(signal.SIGCONT)  # it goes on from wherever it stopped
    wait_until(lambda: old.lines.count("notowner") > refusals, 10, "the old owner to stop stamping")
    time.sleep(0.5)
    old.stop()
    new.stop()
    figures = check([old, new], store, follower.finish())
    assert taken_over - paused >= takeover_seconds(int(TTL * 1000)) - TTL / 3
    resumed = [t for *_, t in old.acks() if t > taken_over]
    assert not resumed, f"the old owner saved {len(resumed)} messages after the takeover"
    assert figures["acked"] >= 600


def test_after_kill_9_the_next_owner_takes_over_once_the_lease_expired(chat, start_owner):
    store, follower, old, new = contended(chat, start_owner)
    old.process.kill()
    killed = time.monotonic()
    wait_for_acks(new, 300, timeout=TTL * 10)
    taken_over = min(t for *_, t in new.acks())
    new.stop()
    old.stop()
    check([old, new], store, follower.finish())
    # Not before the lease could have expired (the last renewal was at most ttl/3 earlier),
    # and not long after.
    assert takeover_seconds(int(TTL * 1000)) - TTL / 3 <= taken_over - killed <= 3 * TTL
    assert max(old.epochs()) < min(new.epochs())


@pytest.mark.mariadb
def test_an_owner_cut_from_the_lease_database_stops_stamping_before_its_lease_runs_out(
        mariadb_url, start_server, start_owner, tmp_path):
    prepare([mariadb_url], BIZ, step=20_000)  # segments last through the cut: the lease stops it
    proxy, via_proxy = behind_proxy(mariadb_url)
    try:
        server = start_server([via_proxy], extra_args=["--db-timeout", "0.5"])
        store = str(tmp_path / "messages.sqlite")
        follower = Follower(store)
        follower.start()
        owner = start_owner(server.address, store, "owner")
        wait_for_acks(owner, 300)
        refusals = owner.lines.count("notowner")  # one before its first grant
        proxy.refuse()
        cut = time.monotonic()
        wait_until(lambda: owner.lines.count("notowner") > refusals, TTL * 5,
                   "the owner to stop stamping")
        stamped = [t for *_, t in owner.acks()]
        assert max(stamped) < cut + TTL  # its last renewal was sent before the cut
        held_through = max(stamped) - cut
        proxy.restore()
        # Held again: under a new epoch, or under the same one if a renewal sent before the
        # term ran out was granted once the database was back (no one else could hold it).
        wait_for_acks(owner, len(stamped) + 300)
        owner.stop()
    finally:
        proxy.close()
    check([owner], store, follower.finish())
    assert 0 < held_through
    assert owner.epochs() == sorted(set(owner.epochs()))


def test_a_lease_through_a_server_is_renewed_and_released_to_the_next_holder(chat):
    address, _ = chat
    with RemoteClient(address) as client:
        first = Lease(BIZ, "rooms", client, ttl=0.6)
        assert first.wait(10)
        second = Lease(BIZ, "rooms", client, ttl=0.6)
        try:
            epoch = first.epoch
            time.sleep(1.5)  # several ttls: renewed all along
            assert first.epoch == epoch and not second.held()
            first.close()
            started = time.monotonic()
            assert second.wait(10)
            assert time.monotonic() - started < 0.6  # released, not expired
            assert second.epoch > epoch and not first.held()
        finally:
            first.close()
            second.close()


def test_a_lease_of_an_unregistered_biz_type_says_so_and_bad_settings_are_named(chat):
    address, _ = chat
    with RemoteClient(address) as client:
        with Lease("nosuch", "rooms", client, ttl=1.0) as lease:
            with pytest.raises(UnknownBizType, match="idgen add-biz nosuch"):
                lease.wait(10)
            assert "not registered" in str(lease.failure)
        with pytest.raises(ConfigError, match="ttl must be 0.2 to 600 seconds, got 0.05"):
            Lease(BIZ, "rooms", client, ttl=0.05)
        with pytest.raises(ConfigError, match="got nan"):
            Lease(BIZ, "rooms", client, ttl=float("nan"))
        with LocalGenerator(BIZ, client) as generator:
            with pytest.raises(ConfigError, match="lease must be an idgen_client.Lease, not str"):
                Sequencer(generator, lease="rooms")
