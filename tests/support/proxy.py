"""A TCP proxy the tests control, to cut a database (or server) off for real.

Modes:
- ``up``: bytes flow both ways.
- ``refuse``: the proxy stops listening (its port stays reserved) and resets
  every open connection, so connecting fails at once with ECONNREFUSED.
- ``hang``: connections are accepted but nothing is forwarded either way, so
  clients block until their own timeouts fire.
- ``up`` with ``delay``: every chunk is held back ``delay`` seconds.

On top of any of them, ``drop_at_commit()`` arms a one-shot (or n-shot) trap
for the MySQL protocol, whose queries travel as plain text (``COM_QUERY``,
command byte 3): the next ``COMMIT`` that follows an ``UPDATE`` on a connection
is either never forwarded (the connection is dropped between the ``UPDATE`` and
the commit, so the database rolls the update back) or forwarded with its answer
swallowed (the commit happened, the client never learns it), or -- a
partition -- never forwarded while the connection to the database is left open.
Each drop is recorded in ``drops`` with the ``max_id`` the ``UPDATE`` set, so a
test can check that the range it claimed is never handed out.

``restore()`` listens again on the same port: clients reconnect as to a
database that came back.
"""
from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["CommitDrop", "TcpProxy", "behind_proxy"]

_COM_QUERY = 3
_MAX_ID = re.compile(rb"max_id\s*=\s*(\d+)")


@dataclass
class CommitDrop:
    """One connection dropped at a commit: ``before`` it reached the DB or ``after``."""

    when: str
    update: bytes
    max_id: int | None
    at: float = field(default_factory=time.monotonic)


def _query(data: bytes) -> bytes | None:
    """The SQL text of a MySQL ``COM_QUERY`` packet, else None."""
    if len(data) > 5 and data[4] == _COM_QUERY:
        return data[5:]
    return None


class _Link:
    """One proxied connection: both sockets and the commit trap's state."""

    __slots__ = ("client", "upstream", "pending_update", "swallow", "partitioned", "pumps")

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.pending_update: bytes | None = None
        self.swallow = False
        self.partitioned = False
        self.pumps = 2  # threads still using the sockets: the last one closes them


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.mode = "up"
        self.delay = 0.0
        # Cleared while hanging: a pump holding a chunk waits on it, asleep, instead of
        # polling. A poll wakes a thread of the test's own process every few ms to take
        # the GIL, which a test measuring its event loop's lag reads as the loop's.
        self._flowing = threading.Event()
        self._flowing.set()
        self.drops: list[CommitDrop] = []
        self._commit_traps = 0
        self._commit_when = "before"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._listening = False
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        """Listen on the proxy's port, which stays bound to it for the proxy's whole life.

        The port is bound once, explicitly (a socket bound to port 0 may lose its port
        when it stops listening), and ``refuse()`` only stops listening: were the
        socket closed, the kernel could give the port to anyone meanwhile and
        ``restore()`` would find it taken.
        """
        if self._listener is None:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind((self.host, self.port))
            self.port = probe.getsockname()[1]
            probe.close()
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Connections it accepted share its port and may linger (TIME_WAIT ...) after a
            # cut: without SO_REUSEADDR, listening again would fail with EADDRINUSE.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((self.host, self.port))
        self._listener.listen(128)
        self._listening = True
        threading.Thread(target=self._accept, args=(self._listener,),
                         name=f"tcp-proxy-accept-{self.port}", daemon=True).start()

    def _stop_listening(self) -> None:
        """Refuse new connections; the port stays ours. Wakes the accept thread up."""
        if self._listener is not None and self._listening:
            self._listening = False
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # accept() fails with EINVAL
            except OSError:
                pass

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, database_url: str) -> str:
        """``database_url`` with its ``host:port`` replaced by this proxy's."""
        host, port = self.target
        return database_url.replace(f"@{host}:{port}/", f"@{self.host}:{self.port}/")

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                # create_connection's timeout would also apply to every recv: an idle
                # pooled connection must not be cut after 5 s of silence.
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(link, True),
                             name=f"tcp-proxy-pump-{self.port}", daemon=True).start()
            threading.Thread(target=self._pump, args=(link, False),
                             name=f"tcp-proxy-pump-{self.port}", daemon=True).start()

    def _pump(self, link: _Link, outbound: bool) -> None:
        src, dst = (link.client, link.upstream) if outbound else (link.upstream, link.client)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if link.partitioned:
                    continue  # nothing crosses a partition, either way
                while self.mode == "hang" and not self._stopped.is_set():
                    self._flowing.wait()
                if self.mode != "up":
                    break
                if self.delay:
                    time.sleep(self.delay)
                if outbound:
                    if self._trap_commit(link, data):
                        if link.partitioned:
                            continue
                        break
                elif link.swallow:
                    break  # the commit's answer: the client never learns that it happened
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if link.partitioned and outbound:
                # The client gave up; the database never hears of it and keeps the
                # connection, with its transaction open, until it times it out itself.
                self._shut(src)
            else:
                for s in (src, dst):
                    self._shut(s)
            with self._lock:
                link.pumps -= 1
                last = link.pumps == 0
            if last:
                # Closed only once no thread can be in recv() or sendall() on them: a
                # socket closed under another thread frees its descriptor number, which
                # the next file opened takes, and that thread's call then reads or writes
                # that file (a test's pipe from a server, say).
                for s in (link.client, link.upstream):
                    s.close()

    def _trap_commit(self, link: _Link, data: bytes) -> bool:
        """True if this packet is the COMMIT to drop the connection on (before it)."""
        sql = _query(data)
        if sql is None:
            return False
        head = sql.lstrip()[:6].upper()
        if head == b"UPDATE":
            link.pending_update = sql
            return False
        if head != b"COMMIT" or link.pending_update is None:
            return False
        update, link.pending_update = link.pending_update, None
        with self._lock:
            if self._commit_traps <= 0:
                return False
            self._commit_traps -= 1
            when = self._commit_when
            match = _MAX_ID.search(update)
            self.drops.append(CommitDrop(when, update, int(match.group(1)) if match else None))
        if when == "after":
            link.swallow = True
            return False
        link.partitioned = when == "partition"
        return True

    def _shut(self, sock: socket.socket) -> None:
        """End the connection at once (a reset), leaving the socket for its pump to close."""
        with self._lock:
            self._conns.discard(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            # Wakes a thread blocked in recv() on it, and the peer learns (a database
            # would otherwise keep the transaction open).
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            self._shut(sock)

    def refuse(self) -> None:
        """Close the port and reset every connection: connects fail at once."""
        self.mode = "refuse"
        self._flowing.set()
        self._stop_listening()
        self._drop_connections()

    def hang(self) -> None:
        """Accept but forward nothing: calls block until their timeouts."""
        self.mode = "hang"
        self._flowing.clear()

    def slow(self, delay: float) -> None:
        """Forward everything, each chunk ``delay`` seconds late."""
        self.delay = delay
        self.mode = "up"
        self._flowing.set()

    def drop_at_commit(self, times: int = 1, *, after: bool = False, partition: bool = False) -> None:
        """Drop the connection at the next ``times`` COMMITs that follow an UPDATE.

        ``after=False``: the COMMIT is never forwarded (the update is rolled back).
        ``after=True``: it is forwarded and its answer swallowed (the update stays).
        ``partition=True``: the COMMIT is never forwarded and the connection to the
        database is left open, as when the client's host vanished from the network:
        the database keeps the transaction (and its row lock) until it times it out.
        """
        with self._lock:
            self._commit_traps = times
            self._commit_when = "partition" if partition else "after" if after else "before"

    def disarm(self) -> int:
        """Cancel the commit traps not sprung yet; returns how many there were."""
        with self._lock:
            left, self._commit_traps = self._commit_traps, 0
            return left

    def restore(self) -> None:
        """Back to normal; listens again if it was refusing. Commit traps stay armed."""
        if self.mode == "hang":
            self._drop_connections()  # hung connections are dead to their clients anyway
        self.delay = 0.0
        self.mode = "up"
        self._flowing.set()
        if not self._listening and not self._stopped.is_set():
            self._listen()

    def close(self) -> None:
        self._stopped.set()
        self.mode = "refuse"
        self._flowing.set()
        self._stop_listening()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._drop_connections()


def behind_proxy(database_url: str) -> tuple[TcpProxy, str]:
    """A proxy to the server of ``database_url``, and the URL that goes through it."""
    from sqlalchemy.engine import make_url

    target = make_url(database_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 0)
    return proxy, proxy.url(database_url)
