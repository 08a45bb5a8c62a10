"""A chat server as the README writes one: an owner process that stamps messages under
a lease and saves them to a message store that checks the epoch; and that store.

Run as ``python -m tests.support.owner ADDRESS STORE NAME [--rate N] [--ttl S]
[--groups N]``: it stamps messages of ``--groups`` groups at ``--rate`` a second,
each sent again (same message ID) until saved, and prints one line per event:

    epoch E                      a new epoch is stamped under (first stamp of it)
    ack MSG_ID GROUP SEQ EPOCH T saved: the sender is told; T its stamp's monotonic time
    refused MSG_ID EPOCH         the store refused a stale owner's write
    notowner                     stamp() raised NotOwner (printed once per stretch)

SIGTERM ends it the way a deploy does: it stops, releases the lease and exits 0.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator

from idgen_client import LocalGenerator, NotOwner, RemoteClient, Sequencer, ServiceUnavailable, Stamp
from idgen_client.lease import Lease

BIZ = "msg"


class MessageStore:
    """Messages in SQLite, saved only from the group's current owner (the epoch check)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # a test's store: no fsync per message
        self._lock = threading.Lock()
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS chat_group (
                group_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS message (
                n INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT NOT NULL,
                seq INTEGER NOT NULL, prev_seq INTEGER NOT NULL, epoch INTEGER NOT NULL,
                message_id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL);
        """)

    def save(self, group: str, stamp: Stamp, message_id: str, owner: str) -> bool:
        """Save unless a later owner has saved to the group already: the one check a store
        makes, in the same transaction as the write. True if saved (or saved before)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR IGNORE INTO chat_group VALUES (?, 0)", (group,))
                fenced = db.execute("UPDATE chat_group SET epoch = ? WHERE group_id = ? AND epoch <= ?",
                                    (stamp.epoch, group, stamp.epoch)).rowcount == 0
                if fenced:
                    db.execute("ROLLBACK")
                    return False
                db.execute("INSERT OR IGNORE INTO message (group_id, seq, prev_seq, epoch, "
                           "message_id, owner) VALUES (?, ?, ?, ?, ?, ?)",
                           (group, stamp.seq, stamp.prev_seq, stamp.epoch, message_id, owner))
                db.execute("COMMIT")
                return True
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def highest(self, group: str) -> int:
        """The sequencer's loader: the group's highest saved seq."""
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM message WHERE group_id = ?", (group,)).fetchone()
        return row[0] or 0

    def after(self, n: int) -> list[tuple[int, str, int, int, int, str]]:
        """Messages saved after the ``n``-th, in the order they were saved."""
        with self._lock:
            return self._db.execute(
                "SELECT n, group_id, seq, prev_seq, epoch, message_id FROM message WHERE n > ? "
                "ORDER BY n", (n,)).fetchall()

    def between(self, group: str, after: int, through: int) -> list[tuple[int, str, int, int, int, str]]:
        """The group's messages with ``after < seq <= through`` (what a receiver fetches for a gap)."""
        with self._lock:
            return self._db.execute(
                "SELECT n, group_id, seq, prev_seq, epoch, message_id FROM message "
                "WHERE group_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (group, after, through)).fetchall()

    def close(self) -> None:
        self._db.close()


def _messages(name: str, groups: int) -> Iterator[tuple[str, str]]:
    n = 0
    while True:
        yield f"room-{n % groups}", f"{name}-{n}"
        n += 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("store")
    parser.add_argument("name")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"{args.name}: %(name)s %(message)s")
    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out = sys.stdout
    store = MessageStore(args.store)
    with RemoteClient(args.address, timeout=1.0, retries=1) as client, \
            LocalGenerator(BIZ, client) as generator, \
            Lease(BIZ, "rooms", client, ttl=args.ttl) as lease:
        sequencer = Sequencer(generator, lease=lease, loader=store.highest)
        print("started", flush=True)
        pending = None  # a message not saved yet: sent again, same ID
        messages = _messages(args.name, args.groups)
        epoch, not_owner = 0, False
        deadline = time.monotonic() + args.seconds
        next_at = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            next_at += 1 / args.rate
            stop.wait(max(0.0, next_at - time.monotonic()))
            group, message_id = pending or next(messages)
            try:
                stamp = sequencer.stamp(group, message_id)
            except NotOwner:
                pending = (group, message_id)
                if not not_owner:
                    out.write("notowner\n")
                    out.flush()
                not_owner = True
                continue
            except ServiceUnavailable:
                pending = (group, message_id)
                continue
            stamped_at = time.monotonic()
            not_owner = False
            if stamp.epoch != epoch:
                epoch = stamp.epoch
                out.write(f"epoch {epoch}\n")
            if store.save(group, stamp, message_id, args.name):
                out.write(f"ack {message_id} {group} {stamp.seq} {stamp.epoch} {stamped_at:.6f}\n")
                pending = None
            else:
                out.write(f"refused {message_id} {stamp.epoch}\n")
                pending = (group, message_id)
            out.flush()
    store.close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
