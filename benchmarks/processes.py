"""The processes a run starts: benchmark servers and worker processes.

Load generators and racing allocators run in their own processes so that the
GIL of the measuring process is never what is measured; so do the servers.
Each is started with this checkout on its ``PYTHONPATH`` (``_start``), every
server by ``ServerProcess``, and ended by closing its stdin (``idgen serve``:
by SIGTERM).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence

__all__ = ["ServerProcess", "Worker", "WorkerPool", "benchmark_server"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(args: Sequence[str], *, cwd: str = _ROOT, stderr: int | None = None
           ) -> subprocess.Popen[str]:
    """``python -m ARGS`` with this checkout first on its path; stdin and stdout piped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)


def _end(proc: subprocess.Popen[str], *, timeout: float, terminate: bool = False) -> None:
    """Close its stdin (and send SIGTERM if ``terminate``), wait ``timeout`` s, else kill it."""
    if proc.poll() is None:
        assert proc.stdin is not None
        try:
            proc.stdin.close()
            if terminate:
                proc.terminate()
            proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(10)


class Worker:
    """A ``python -m benchmarks.worker`` process: one JSON command in, one JSON answer out.

    Load generators and racing allocators run in their own processes so that
    the GIL of the measuring process is never what is measured.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = _start(["benchmarks.worker"])

    def send(self, command: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict[str, object]:
        stdout = self.proc.stdout
        assert stdout is not None
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(stdout.readline()),
                                  name="bench-worker-read", daemon=True)
        reader.start()
        reader.join(timeout)
        if not answer or not answer[0]:
            raise RuntimeError(f"worker {self.name} did not answer within {timeout:g}s "
                               f"(exit status {self.proc.poll()})")
        result = json.loads(answer[0])
        if "error" in result:
            raise RuntimeError(f"worker {self.name}: {result['error']}")
        return result

    def close(self) -> None:
        _end(self.proc, timeout=10)


class WorkerPool:
    """Worker processes started on demand and kept for the whole run."""

    def __init__(self) -> None:
        self._workers: list[Worker] = []

    def get(self, n: int) -> list[Worker]:
        while len(self._workers) < n:
            self._workers.append(Worker(f"w{len(self._workers)}"))
        return self._workers[:n]

    def run_all(self, commands: Sequence[dict[str, object]], timeout: float
                ) -> list[dict[str, object]]:
        """Send one command to each of the first ``len(commands)`` workers; gather answers."""
        workers = self.get(len(commands))
        for worker, command in zip(workers, commands):
            worker.send(command)
        return [worker.receive(timeout) for worker in workers]

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers.clear()


class ServerProcess:
    """A server in its own process (``python -m ARGS``), ready once it prints its address.

    Every benchmark server is started and waited for here: the process runs with
    this checkout on its path, its stdout and stderr in one pipe, and is ready
    once a line of that output matches ``ready`` (group 1: the address it serves
    on). From then on a thread keeps reading the output, so that the pipe never
    fills, into ``output``. ``close()`` stops it: by closing its stdin when
    ``stops_on_eof`` (``benchmarks.server``), by SIGTERM otherwise (``idgen serve``).
    A context manager.
    """

    def __init__(self, args: Sequence[str], *, ready: str, cwd: str = _ROOT,
                 stops_on_eof: bool = True) -> None:
        self.name = " ".join(args)
        self.stops_on_eof = stops_on_eof
        self.output: list[str] = []
        self.http_address: str | None = None
        """The HTTP API's ``host:port``, for a server that serves one (``benchmark_server``)."""
        self.proc = _start(args, cwd=cwd, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        pattern = re.compile(ready)
        for line in self.proc.stdout:
            self.output.append(line)
            match = pattern.search(line)
            if match:
                self.address = match.group(1)
                break
        else:
            self._stop()
            raise RuntimeError(f"{self.name} exited before it was ready (exit status "
                               f"{self.proc.returncode}): {''.join(self.output)!r}")
        self._reader = threading.Thread(target=self._drain, name="bench-server-output",
                                        daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def _stop(self) -> None:
        _end(self.proc, timeout=15, terminate=not self.stops_on_eof)

    def close(self) -> dict[str, object]:
        """Stop the server; returns what it said on a ``stats`` line (``benchmarks.server``:
        its buffers' fetches and waits), or {}. A server that failed shows its output."""
        self._stop()
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(5)
        if self.proc.returncode:
            sys.stderr.write(f"{self.name} exited with status {self.proc.returncode}:\n"
                             + "".join(self.output[-20:]))
        stats: dict[str, object] = {}
        for line in self.output:
            if line.startswith("stats "):
                try:
                    stats = json.loads(line[6:])
                except ValueError:  # a line cut short: no figures, like a server that said none
                    pass
        return stats

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def benchmark_server(mode: str, db_url: str, *, workers: int | None = None,
                     id_base: int | None = None, tls: tuple[str, str] | None = None,
                     token: tuple[str, str] | None = None, http: bool = False) -> ServerProcess:
    """``python -m benchmarks.server``: idgen's server (``mode`` 'idgen') or the floor ('null',
    or 'http-null' for HTTP); ``tls``: (certificate file, key file) to serve TLS; ``token``:
    (biz type, file) to create a token for that biz type in the database before serving,
    written to that file; ``http``: idgen's HTTP API too. ``http_address`` is set on the
    server returned (None without HTTP)."""
    args = ["benchmarks.server", "--mode", mode, "--db", db_url]
    if workers:
        args += ["--workers", str(workers)]
    if id_base:
        args += ["--id-base", str(id_base)]
    if tls:
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    if token:
        args += ["--token-biz", token[0], "--token-file", token[1]]
    if http:
        args += ["--http"]
    try:
        server = ServerProcess(args, ready=r"^ready (\S+)")
    except RuntimeError as exc:
        raise RuntimeError(f"the {mode} benchmark server did not start: {exc}") from None
    ready = next(line for line in server.output if line.startswith("ready "))
    server.http_address = ready.split(" http ")[1].strip() if " http " in ready else None
    return server
