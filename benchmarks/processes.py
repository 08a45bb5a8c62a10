"""The processes a run starts: benchmark servers and worker processes.

Load generators and racing allocators run in their own processes so that the
GIL of the measuring process is never what is measured; so do the servers.
Each is started with this checkout on its ``PYTHONPATH`` and ended by closing
its stdin.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence

__all__ = ["ServerProcess", "Worker", "WorkerPool"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Worker:
    """A ``python -m benchmarks.worker`` process: one JSON command in, one JSON answer out.

    Load generators and racing allocators run in their own processes so that
    the GIL of the measuring process is never what is measured.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"], cwd=_ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

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
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)


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
    """``python -m benchmarks.server`` in its own process; a context manager."""

    def __init__(self, mode: str, db_url: str, *, workers: int | None = None,
                 id_base: int | None = None) -> None:
        self.mode = mode
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "benchmarks.server", "--mode", mode, "--db", db_url]
        if workers:
            args += ["--workers", str(workers)]
        if id_base:
            args += ["--id-base", str(id_base)]
        self.proc = subprocess.Popen(args, cwd=_ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.close()
            raise RuntimeError(f"the {mode} benchmark server did not start: {line!r}")
        self.address = line.split()[1]

    def close(self) -> dict[str, object]:
        """Stop the server; returns its buffers' fetches and waits, when it could say."""
        stats: dict[str, object] = {}
        if self.proc.poll() is None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.close()
                for line in self.proc.stdout:
                    if line.startswith("stats "):
                        stats = json.loads(line[6:])
                self.proc.wait(15)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        return stats

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
