"""Real ``idgen serve`` processes on free ports, for tests and the fault harness."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc

from idgen_wire import idgen_pb2_grpc
from tests.support.cli import db_args

_READY = re.compile(r"idgen: serving on (\S+)")
_HTTP = re.compile(r"idgen: HTTP API on (https?://[^/\s]+)/")


class ServerProcess:
    """One ``idgen serve`` subprocess. ``kill()`` is ``kill -9``; ``start()`` restarts it."""

    def __init__(self, db_urls: Sequence[str], *, listen: str = "127.0.0.1:0",
                 extra_args: Sequence[str] = (), cwd: str | None = None,
                 env: dict[str, str] | None = None, global_args: Sequence[str] = ()) -> None:
        self.db_urls = list(db_urls)
        self.listen = listen
        self.extra_args = list(extra_args)
        self.global_args = list(global_args)  # before ``serve``: ``-v`` (debug logging)
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.http_url = ""
        """``http://host:port`` of the HTTP API, when it serves one (``--http-listen``)."""
        self.output: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        args = [sys.executable, "-m", "idgen_cli", *self.global_args, "serve", "--listen", self.listen,
                *db_args(self.db_urls)]
        # Stopped with SIGTERM, a server drains for 5 s by default: tests stop at once unless
        # they ask for a drain.
        drain = [] if "--drain" in self.extra_args else ["--drain", "0"]
        self.proc = subprocess.Popen(args + drain + self.extra_args, cwd=self.cwd, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"idgen serve exited early:\n{''.join(self.output)}")
            self.output.append(line)
            http = _HTTP.search(line)
            if http:
                self.http_url = http.group(1)
            match = _READY.search(line)
            if match:
                self.address = match.group(1)
                # Keep reading the output so the pipe never fills up.
                self._reader = threading.Thread(target=self._drain, name="server-output", daemon=True)
                self._reader.start()
                if self.listen.endswith(":0"):
                    self.listen = self.address  # a restart reuses the port clients know
                return self
        raise RuntimeError(f"idgen serve did not become ready:\n{''.join(self.output)}")

    def _drain(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self._read_to_the_end()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout)
        self._read_to_the_end()
        return status

    def _read_to_the_end(self) -> None:
        """Once the process has ended: wait until ``output`` holds its last line."""
        if self._reader is not None:
            self._reader.join(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.terminate(10)
        except subprocess.TimeoutExpired:
            self.kill()


def free_port() -> int:
    """A local port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def taken_port() -> Iterator[int]:
    """A local port something else listens on, while the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@contextmanager
def stub_to(address: str) -> Iterator[idgen_pb2_grpc.IdGeneratorStub]:
    """A gRPC stub on a channel of its own to the server at ``address``."""
    with grpc.insecure_channel(address) as channel:
        yield idgen_pb2_grpc.IdGeneratorStub(channel)
