"""A PostgreSQL primary and a streaming standby on loopback, started by the tests.

The primary is made by ``initdb``, the standby by ``pg_basebackup -R`` from it; each
has its own port and directory. Replication is synchronous (``synchronous=True``: a
commit returns once the standby has it) or asynchronous. PostgreSQL refuses to run
as root, so both run as ``postgres`` (``runuser``) on ``postgres``-owned directories
under /tmp, not in pytest's root-only ``tmp_path``.

``kill_primary()`` is ``kill -9`` of the primary's postmaster; ``promote()`` turns
the standby into the new primary. ``pause_standby()`` stops the standby (what it has
not received by then is lost to it) and ``resume_standby()`` starts it again.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.servers import free_port

__all__ = ["PostgresPair", "postgres_tools_missing"]


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


def postgres_tools_missing() -> str | None:
    """What this machine lacks to run a primary and a standby, or None."""
    if _bin_dir() is None:
        return "/usr/lib/postgresql/*/bin/pg_ctl (Debian package postgresql)"
    if shutil.which("runuser") is None:
        return "runuser (Debian package util-linux)"
    return None


def _as_postgres(*args: str, timeout: float = 120) -> None:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.decode(errors='replace')[-2000:]}")


class PostgresPair:
    """A primary and its standby; ``url(database)`` lists both, the primary first."""

    def __init__(self, *, synchronous: bool) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None
        self.bin = bin_dir
        self.synchronous = synchronous
        self.root = Path(tempfile.mkdtemp(prefix="idgen-pg-"))
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres", "postgres")
        self.primary_dir = self.root / "primary"
        self.standby_dir = self.root / "standby"
        self.primary_port = free_port()
        self.standby_port = free_port()

    def _tool(self, name: str) -> str:
        return os.path.join(self.bin, name)

    def _ctl(self, directory: Path, *args: str) -> None:
        _as_postgres(self._tool("pg_ctl"), "-D", str(directory), "-l", f"{directory}.log",
                     "-w", "-t", "60", *args)

    def start(self) -> None:
        _as_postgres(self._tool("initdb"), "-D", str(self.primary_dir), "-A", "trust",
                     "-U", "postgres", "--no-sync")
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write(f"""
port = {self.primary_port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.root}'
wal_level = replica
max_wal_senders = 5
fsync = off
synchronous_standby_names = '{"standby1" if self.synchronous else ""}'
""")
        self._ctl(self.primary_dir, "start")
        _as_postgres(self._tool("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port),
                     "-U", "postgres", "-D", str(self.standby_dir), "-R", "-X", "stream",
                     "--no-sync")
        # Promoted, the standby has no standby of its own: it must not wait for one (its
        # copy of the primary's settings would make every commit wait forever).
        with open(self.standby_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(f"""
port = {self.standby_port}
primary_conninfo = 'host=127.0.0.1 port={self.primary_port} user=postgres application_name=standby1'
synchronous_standby_names = ''
""")
        self._ctl(self.standby_dir, "start")
        self.wait_streaming()

    def wait_streaming(self, timeout: float = 60) -> None:
        """Until the primary sees the standby streaming (and synchronous, if it is)."""
        wanted = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.connect(self.primary_port) as conn:
                row = conn.execute("SELECT state, sync_state FROM pg_stat_replication "
                                   "WHERE application_name = 'standby1'").fetchone()
            if row == ("streaming", wanted):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the standby is not streaming ({wanted}) after {timeout:g}s")

    def connect(self, port: int, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname,
                               autocommit=True, connect_timeout=5)

    def create_database(self) -> str:
        name = f"idgen_test_{os.urandom(6).hex()}"
        with self.connect(self.primary_port) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def url(self, database: str) -> str:
        return (f"postgresql+psycopg://postgres@127.0.0.1:{self.primary_port},"
                f"127.0.0.1:{self.standby_port}/{database}")

    def kill_primary(self) -> None:
        """``kill -9`` of the primary's postmaster (its backends see it die and exit)."""
        pid = int((self.primary_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.connect(self.primary_port).close()
            except psycopg.OperationalError:
                return
            time.sleep(0.1)
        raise RuntimeError("the killed primary still answers")

    def promote(self) -> None:
        _as_postgres(self._tool("pg_ctl"), "-D", str(self.standby_dir), "-w", "-t", "60",
                     "promote")

    def pause_standby(self) -> None:
        """Stop the standby: it keeps what it has received, and receives nothing more."""
        self._ctl(self.standby_dir, "stop", "-m", "fast")

    def resume_standby(self) -> None:
        """Start the standby again, with nowhere to stream from if the primary is dead."""
        self._ctl(self.standby_dir, "start")

    def close(self) -> None:
        for directory in (self.standby_dir, self.primary_dir):
            if (directory / "postmaster.pid").exists():
                try:
                    self._ctl(directory, "stop", "-m", "immediate")
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
        shutil.rmtree(self.root, ignore_errors=True)
