"""A TCP proxy the tests control, to cut a database (or server) off for real.

Modes:
- ``up``: bytes flow both ways.
- ``refuse``: the listening socket is closed and every open connection reset,
  so connecting fails at once with ECONNREFUSED.
- ``hang``: connections are accepted but nothing is forwarded either way, so
  clients block until their own timeouts fire.
- ``up`` with ``delay``: every chunk is held back ``delay`` seconds.

``restore()`` listens again on the same port: clients reconnect as to a
database that came back.
"""
from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.mode = "up"
        self.delay = 0.0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), name=f"tcp-proxy-accept-{self.port}",
                         daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst),
                                 name=f"tcp-proxy-pump-{self.port}", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.mode == "hang" and not self._stopped.is_set():
                    time.sleep(0.01)
                if self.mode != "up":
                    break
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._close(sock)

    def refuse(self) -> None:
        """Close the port and reset every connection: connects fail at once."""
        self.mode = "refuse"
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._drop_connections()

    def hang(self) -> None:
        """Accept but forward nothing: calls block until their timeouts."""
        self.mode = "hang"

    def slow(self, delay: float) -> None:
        """Forward everything, each chunk ``delay`` seconds late."""
        self.delay = delay
        self.mode = "up"

    def restore(self) -> None:
        """Back to normal; listens again if it was refusing."""
        if self.mode == "hang":
            self._drop_connections()  # hung connections are dead to their clients anyway
        self.delay = 0.0
        self.mode = "up"
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._stopped.set()
        self.mode = "refuse"
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._drop_connections()
