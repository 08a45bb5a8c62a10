"""One logical database served through several nodes: which node a connection goes to.

A URL may list several nodes (``idgen_server.urls.split_nodes``): the nodes of a
Galera cluster, or a PostgreSQL primary and its standbys. They hold one segment
table, so the residue class belongs to the logical database, not to a node, and
every connection of the pool must go to a node that accepts writes:

- **In order of preference.** Each new connection tries the nodes in the order
  listed and takes the first that answers and accepts writes. For PostgreSQL that
  is libpq's own multi-host connect (host and port lists, with
  ``target_session_attrs=read-write`` unless the URL sets another). For
  MySQL/MariaDB, whose drivers have no such thing, ``_connect_to_first_writable``
  does the same: a node that refuses, is read-only (``@@read_only``, a replica),
  or is a Galera node not synced with its cluster (joining, a donor, cut off from
  the primary component: ``wsrep_local_state`` not 4) is passed over.
- **Back to the first.** A connection to any node but the first is retired once it
  is ``GO_BACK_AFTER`` seconds old, so the pool's next connection tries the
  first node again: servers that prefer different nodes of a Galera cluster go
  back to them, and do not pile onto the one that stayed up.

Every server preferring one node (and all of its connections on it) is also what
keeps Galera's certification conflicts rare: they only arise between writers on
different nodes. Conflicts that do arise are retried (``idgen_server.database.lost_race``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DisconnectionError

__all__ = ["GO_BACK_AFTER", "NodeList"]

log = logging.getLogger(__name__)

GO_BACK_AFTER = 10.0
"""Seconds a connection to a node other than the first is kept before it is retired."""

_GALERA_SYNCED = "4"  # wsrep_local_state: 4 is Synced
# PyMySQL's codes for a node that did not answer at all: no socket, cannot connect, gone.
_NO_ANSWER = {2002, 2003, 2006, 2013}


class NodeList:
    """The nodes of one logical database and the connection hooks that choose among
    them; ``node_of`` says which one a pooled connection is on. Thread-safe."""

    def __init__(self, name: str, nodes: Sequence[str], go_back_after: float = GO_BACK_AFTER) -> None:
        self.name = name
        self.nodes = tuple(nodes)
        self.go_back_after = go_back_after
        self._lock = threading.Lock()
        self._current: int | None = None  # the node the last new connection went to

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def current(self) -> str | None:
        """The node the pool's newest connection went to (None before the first)."""
        with self._lock:
            return None if self._current is None else self.nodes[self._current]

    def postgres_connect_args(self, url: URL, default_port: int = 5432) -> dict[str, str]:
        """libpq's host and port lists for ``connect_args`` (they replace the URL's host)."""
        hosts, ports = zip(*(_host_port(node, default_port) for node in self.nodes))
        args = {"host": ",".join(hosts), "port": ",".join(str(p) for p in ports)}
        if "target_session_attrs" not in url.query:
            args["target_session_attrs"] = "read-write"
        return args

    def attach(self, engine: Engine, backend: str) -> None:
        """Install the hooks on ``engine``: MySQL/MariaDB connects here, node by node."""
        if backend in ("mysql", "mariadb"):
            event.listen(engine, "do_connect", self._connect_to_first_writable)
        else:
            event.listen(engine, "connect", self._note_postgres_node)
        event.listen(engine, "checkout", self._go_back)

    # -- MySQL / MariaDB ---------------------------------------------------------------

    def _connect_to_first_writable(self, dialect: object, record: object, cargs: list[object],
                                   cparams: dict[str, object]) -> object:
        dbapi = dialect.loaded_dbapi  # type: ignore[attr-defined]
        refused: list[str] = []
        errors: list[BaseException] = []
        for index, node in enumerate(self.nodes):
            host, port = _host_port(node, 3306)
            try:
                conn = dbapi.connect(*cargs, **{**cparams, "host": host, "port": port})
            except dbapi.Error as exc:
                refused.append(f"{node}: {_first_line(exc)}")
                errors.append(exc)
                continue
            why = _not_writable(conn)
            if why is None:
                self._noted(record, index)
                return conn
            conn.close()
            refused.append(f"{node}: {why}")
        answered = [exc for exc in errors if (exc.args[0] if exc.args else None) not in _NO_ANSWER]
        if len(errors) == len(self.nodes) and answered and len(
                {exc.args[0] if exc.args else None for exc in answered}) == 1:
            # Every node that answered said the same (a wrong password, an unknown database:
            # what a person must fix, the nodes of one database sharing their users), the
            # others answering nothing: that error as it is, for the caller to tell a
            # setting to fix from a failure that may pass.
            raise answered[-1]
        # 2003 is the code PyMySQL gives a server it cannot reach: a failure that may pass.
        raise dbapi.OperationalError(2003, "no node accepts writes (" + "; ".join(refused) + ")")

    # -- PostgreSQL -------------------------------------------------------------------

    def _note_postgres_node(self, dbapi_conn: object, record: object) -> None:
        info = dbapi_conn.info  # type: ignore[attr-defined]
        here = (str(info.host), int(info.port))
        for index, node in enumerate(self.nodes):
            if _host_port(node, 5432) == here:
                self._noted(record, index)
                return
        self._noted(record, 0)  # libpq resolved a name we cannot match: treat as preferred

    # -- both ---------------------------------------------------------------------------

    def _noted(self, record: object, index: int) -> None:
        record.info["idgen_node"] = (index, time.monotonic())  # type: ignore[attr-defined]
        with self._lock:
            previous, self._current = self._current, index
        if previous is not None and previous != index:
            if index == 0:
                log.warning("database %s: back on its first node %s", self.name, self.nodes[0],
                            extra={"db": self.name, "node": self.nodes[0]})
            else:
                log.warning("database %s: now served by node %s (%s did not take the connection)",
                            self.name, self.nodes[index], ", ".join(self.nodes[:index]),
                            extra={"db": self.name, "node": self.nodes[index]})

    def _go_back(self, dbapi_conn: object, record: object, proxy: object) -> None:
        index, since = record.info.get("idgen_node", (0, 0.0))  # type: ignore[attr-defined]
        if index and time.monotonic() - since > self.go_back_after:
            # The pool discards this connection and makes another, which tries the
            # nodes in order again (SQLAlchemy's documented use of DisconnectionError).
            raise DisconnectionError(f"retiring a connection to node {self.nodes[index]}")



def _host_port(node: str, default_port: int) -> tuple[str, int]:
    host, sep, port = node.rpartition(":")
    if not sep or host.endswith(":") or (node.startswith("[") and not host.endswith("]")):
        host, port = node, ""  # no port (or a bare IPv6 address)
    return host.strip("[]"), int(port) if port else default_port


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _not_writable(conn: object) -> str | None:
    """Why a MySQL/MariaDB node must not take writes, or None if it may."""
    cursor = conn.cursor()  # type: ignore[attr-defined]
    try:
        cursor.execute("SELECT @@global.read_only")
        if str(cursor.fetchone()[0]) not in ("0", "OFF"):
            return "read-only"
        cursor.execute("SHOW GLOBAL STATUS LIKE 'wsrep_local_state'")
        row = cursor.fetchone()  # None: not a Galera node
        if row is not None and str(row[1]) != _GALERA_SYNCED:
            return f"Galera node not synced (wsrep_local_state {row[1]})"
        return None
    except Exception as exc:  # noqa: BLE001 - a node that cannot answer this is no use either
        return _first_line(exc)
    finally:
        cursor.close()
