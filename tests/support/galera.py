"""A 3-node MariaDB Galera cluster on loopback, started by the tests.

Each node is its own ``mariadbd --defaults-file=...`` with its own data directory
(from ``mariadb-install-db``), its own SQL port and its own Galera ports (group
communication, IST, SST), all on 127.0.0.1 and free when chosen. The first node
bootstraps the cluster (``--wsrep-new-cluster``); the others join it by SST
(rsync), one at a time. rsync SST needs the nodes to run as ``mysql`` on
``mysql``-owned directories, so the cluster lives in a directory of its own under
/tmp that ``mysql`` can enter, not in pytest's (root-only) ``tmp_path``.

``kill(i)`` is ``kill -9``; ``start(i)`` brings a node back, and it rejoins by IST
or SST. Needs Debian's ``galera-4`` and ``rsync`` (``.ci/run`` installs them).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from tests.support.servers import free_port

__all__ = ["GALERA_PROVIDER", "GaleraCluster", "galera_missing"]

GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"
_MARIADBD = "/usr/sbin/mariadbd"
_START_TIMEOUT = 120.0


def galera_missing() -> str | None:
    """What this machine lacks to run a cluster, or None."""
    for path, package in ((GALERA_PROVIDER, "galera-4"), (_MARIADBD, "mariadb-server")):
        if not os.path.exists(path):
            return f"{path} (Debian package {package})"
    for tool in ("rsync", "mariadb-install-db"):
        if shutil.which(tool) is None:
            return f"{tool} (Debian package {'rsync' if tool == 'rsync' else 'mariadb-server'})"
    return None


class Node:
    def __init__(self, root: Path, index: int, cluster_address: str, ports: dict[str, int]) -> None:
        self.index = index
        self.dir = root / f"node{index}"
        self.data = self.dir / "data"
        self.port = ports["sql"]
        self.ports = ports
        self.cluster_address = cluster_address
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        path = self.dir / "my.cnf"
        p = self.ports
        path.write_text(f"""[mysqld]
user = mysql
datadir = {self.data}
socket = {self.dir}/mysqld.sock
pid-file = {self.dir}/mysqld.pid
log-error = {self.dir}/error.log
port = {self.port}
bind-address = 127.0.0.1
skip-name-resolve
binlog_format = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
innodb_buffer_pool_size = 64M
innodb_log_file_size = 48M
innodb_flush_log_at_trx_commit = 2
wsrep_on = ON
wsrep_provider = {GALERA_PROVIDER}
wsrep_cluster_name = idgen_test
wsrep_cluster_address = {self.cluster_address}
wsrep_node_name = node{self.index}
wsrep_node_address = 127.0.0.1:{p["gcomm"]}
wsrep_provider_options = "gmcast.listen_addr=tcp://127.0.0.1:{p["gcomm"]};ist.recv_addr=127.0.0.1:{p["ist"]};gcache.size=64M"
wsrep_sst_method = rsync
wsrep_sst_receive_address = 127.0.0.1:{p["sst"]}
""")
        return path

    def install(self) -> None:
        self.dir.mkdir(parents=True)
        subprocess.run(["mariadb-install-db", "--user=mysql", f"--datadir={self.data}",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        self.write_config()
        shutil.chown(self.dir, "mysql", "mysql")
        subprocess.run(["chown", "-R", "mysql:mysql", str(self.dir)], check=True)

    def start(self, *, bootstrap: bool = False) -> None:
        args = [_MARIADBD, f"--defaults-file={self.dir}/my.cnf"]
        if bootstrap:
            args.append("--wsrep-new-cluster")
        log = open(self.dir / "stdout.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()

    def kill(self) -> None:
        """``kill -9``: the node dies with whatever it had not written."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def connect(self, **options: object) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="",
                               connect_timeout=3, read_timeout=10, autocommit=True,
                               **options)  # type: ignore[arg-type]

    def status(self, name: str) -> str | None:
        """A wsrep status variable, or None if the node does not answer."""
        try:  # through the socket: it answers before root may come over TCP
            conn = pymysql.connect(unix_socket=str(self.dir / "mysqld.sock"), user="root",
                                   autocommit=True, connect_timeout=3, read_timeout=5)
        except pymysql.MySQLError:
            return None
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
                row = cur.fetchone()
                return None if row is None else str(row[1])
        except pymysql.MySQLError:
            return None
        finally:
            conn.close()

    def wait_synced(self, size: int, timeout: float = _START_TIMEOUT) -> None:
        """Until the node is Synced in a primary component of ``size`` nodes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Galera node {self.index} exited: {self.log_tail()}")
            if (self.status("wsrep_local_state") == "4"
                    and self.status("wsrep_cluster_size") == str(size)):
                return
            time.sleep(0.2)
        raise RuntimeError(f"Galera node {self.index} did not sync within {timeout:g}s: "
                           f"{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


class GaleraCluster:
    """Three nodes (``size``) of one cluster; ``url(database, first=i)`` lists them all,
    node ``i`` first. ``close()`` stops them and removes their directories."""

    def __init__(self, size: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="idgen-galera-"))
        os.chmod(self.root, 0o755)
        ports = [{kind: free_port() for kind in ("sql", "gcomm", "ist", "sst")}
                 for _ in range(size)]
        address = "gcomm://" + ",".join(f"127.0.0.1:{p['gcomm']}" for p in ports)
        self.nodes = [Node(self.root, i, address, ports[i]) for i in range(size)]

    def start(self) -> None:
        for node in self.nodes:
            node.install()
        first, *others = self.nodes
        first.start(bootstrap=True)
        first.wait_synced(1)
        conn = pymysql.connect(unix_socket=str(first.dir / "mysqld.sock"), user="root",
                               autocommit=True, connect_timeout=5)
        with conn.cursor() as cur:  # root over TCP, as the machine's own server has it
            cur.execute("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''")
            cur.execute("GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
        conn.close()
        for count, node in enumerate(others, start=2):
            node.start()
            node.wait_synced(count)

    def rejoin(self, index: int) -> None:
        """Start a killed node again and wait until it is synced with the others."""
        node = self.nodes[index]
        node.start()
        node.wait_synced(len(self.nodes))

    def create_database(self) -> str:
        name = f"idgen_test_{os.urandom(6).hex()}"
        conn = self.nodes[0].connect()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        conn.close()
        return name

    def url(self, database: str, first: int = 0) -> str:
        order = self.nodes[first:] + self.nodes[:first]
        return f"mysql+pymysql://root@{','.join(n.address for n in order)}/{database}"

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
