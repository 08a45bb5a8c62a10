"""Connecting to one database: its connection pool, what its failures mean.

- ``make_engine`` sets the timeouts that keep a dead database from stalling
  callers, and the ones that make a database end a transaction its client
  abandoned.
- ``permanent_failure`` tells a failure that retrying cannot fix (a wrong
  password, a database that does not exist, an option the driver rejects) from
  one that may pass (refused, timed out): the first stops ``idgen serve`` at
  start-up, the second only benches the database until it answers.
- ``lost_race`` tells the errors that mean "another writer won" (a deadlock, a
  lock wait that timed out, a Galera certification failure, a serialization
  failure) from failures: the store retries them as optimistic-lock conflicts,
  and a healthy database is never benched for them.
"""
from __future__ import annotations

import logging
import os
import warnings

from sqlalchemy import Column, create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SAWarning
from sqlalchemy.schema import CreateColumn

from idgen_core.errors import ConfigError, StorageUnavailable
from idgen_server.schema import metadata, segment_table
from idgen_server.nodes import NodeList
from idgen_server.urls import is_secret_key, normalize_url, parse_url, redact_url, split_nodes, sqlite_path

__all__ = ["DB_ERRORS", "Database", "failure_text", "lost_race", "make_engine", "node_lost",
           "permanent_failure"]

log = logging.getLogger(__name__)

# Talking to a database can fail in more ways than SQLAlchemy wraps (a driver facing
# something that is not its database, an option it rejects): every try block that
# catches these holds database calls only, so a bug elsewhere is never taken for an outage.
DB_ERRORS = (Exception,)

# MySQL/MariaDB error codes that mean the settings are wrong, not the network:
# access denied (1044, 1045, 1698), unknown database (1049), authentication
# plugin or protocol unsupported (1251, 2059).
_MYSQL_PERMANENT = {1044, 1045, 1049, 1251, 1698, 2059}
# MySQL/MariaDB error codes that mean another transaction won: deadlock (1213, which
# is also how Galera reports a transaction that lost certification to a write on
# another node, at COMMIT) and lock wait timeout (1205). The transaction was rolled
# back: nothing of it committed.
_MYSQL_LOST_RACE = {1205, 1213}
# PostgreSQL's SQLSTATEs for the same: serialization failure (40001, e.g. a concurrent
# update under REPEATABLE READ or SERIALIZABLE) and deadlock detected (40P01).
_POSTGRES_LOST_RACE = {"40001", "40P01"}
# Errors that say the node a connection is on can no longer take writes (it went
# away or is shutting down, turned read-only, or is a Galera node cut off from its
# cluster): with several nodes, the work is tried again on a fresh connection, which
# goes to the next node. MySQL/MariaDB: 1047 (WSREP not ready), 1053 (shutdown in
# progress), 1290 and 1836 (read-only), 2006 and 2013 (connection lost).
_MYSQL_NODE_LOST = {1047, 1053, 1290, 1836, 2006, 2013}
# PostgreSQL: class 08 (connection exceptions), 25006 (read-only transaction: a
# standby), 57P01-57P03 (shut down, crash recovery, cannot connect now).
_POSTGRES_NODE_LOST = {"25006", "57P01", "57P02", "57P03"}
# libpq reports connection failures as text without an SQLSTATE.
_POSTGRES_PERMANENT = ("does not exist", "authentication failed", "pg_hba.conf",
                       "permission denied", "invalid connection option", "invalid sslmode",
                       "invalid integer value", "invalid value for parameter",
                       "does not support SSL", "root certificate file")


def _reason(exc: BaseException) -> str:
    """One line of an exception's text (driver messages carry no password)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def failure_text(exc: BaseException, url: str) -> str:
    """One line saying what went wrong, fit for a log: no password, no SQL."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {_scrub(_reason(exc), url)}"
    return type(exc).__name__


def permanent_failure(exc: BaseException, url: str) -> str | None:
    """Why ``exc``, raised connecting to ``url``, will not pass by retrying; None if it may."""
    if not isinstance(exc, DBAPIError):
        # SQLAlchemy wraps every error a database answers with; what comes out bare is the
        # driver refusing its settings (an option it does not know, a file it cannot
        # find), except a network failure it did not wrap.
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return None
        return f"the driver rejects its settings ({_scrub(_reason(exc), url)})"
    orig = exc.orig
    if orig is None:
        return None
    backend = parse_url(url).get_backend_name()
    if backend in ("mysql", "mariadb"):
        code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
        return _scrub(_reason(exc), url) if code in _MYSQL_PERMANENT else None
    if backend == "postgresql":
        reason = _reason(exc)
        if any(marker in reason for marker in _POSTGRES_PERMANENT):
            return _scrub(reason.rpartition("failed: ")[2] or reason, url)
        return None
    if backend == "sqlite" and "unable to open database file" in _reason(exc):
        return "the file cannot be opened (does its directory exist, may this user write it?)"
    if backend == "sqlite" and "file is not a database" in _reason(exc):
        return "the file is not a SQLite database"
    return None


def lost_race(exc: BaseException) -> bool:
    """Whether ``exc`` means the statement lost to another writer and was rolled back
    (retry it), rather than that the database failed."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
    if orig is None:
        return False
    if orig.args and isinstance(orig.args[0], int):  # PyMySQL: (code, message)
        return orig.args[0] in _MYSQL_LOST_RACE
    # psycopg (PyMySQL has a sqlstate too, but 1205's is the generic HY000)
    return getattr(orig, "sqlstate", None) in _POSTGRES_LOST_RACE


def node_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection's node can no longer take writes (another
    node of the same database may)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if orig is None:
        return False
    if orig.args and isinstance(orig.args[0], int):
        return orig.args[0] in _MYSQL_NODE_LOST
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return sqlstate.startswith("08") or sqlstate in _POSTGRES_NODE_LOST


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL's secrets removed, should a driver ever echo them."""
    try:
        parsed = parse_url(url)
    except Exception:  # noqa: BLE001 - nothing parsed, nothing known to remove
        return text
    secrets = [str(parsed.password or "")] + [
        str(v) for k, values in parsed.query.items() if is_secret_key(k)
        for v in (values if isinstance(values, tuple) else (values,))]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def make_engine(url: str, timeout: float, nodes: NodeList | None = None) -> Engine:
    """A connection pool for ``url`` (already normalized), through ``nodes`` if the URL
    lists several (``idgen_server.nodes``). ``ConfigError`` if unusable."""
    try:
        with warnings.catch_warnings():
            # SQLAlchemy warns, then ignores, query arguments a driver does not take:
            # a setting that silently does nothing is an error here.
            warnings.simplefilter("error", SAWarning)
            return _engine(url, timeout, nodes)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"database URL {redact_url(url)} needs a driver that is not "
                          f"installed ({_reason(exc)}); for PostgreSQL: pip install "
                          "'idgen[postgres]'") from None
    except Exception as exc:  # noqa: BLE001 - whatever SQLAlchemy raises for a bad URL
        raise ConfigError(f"database URL {redact_url(url)} is not usable: "
                          f"{_scrub(_reason(exc), url)}") from None


def _engine(url: str, timeout: float, nodes: NodeList | None) -> Engine:
    url = split_nodes(url)[0]  # the nodes, if several, are ``nodes``'s
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": max(timeout, 10.0)})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
            cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
            if parsed.database and parsed.database != ":memory:":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    seconds = max(1, int(round(timeout)))
    # An allocation's transaction lasts milliseconds (UPDATE, then COMMIT). Should this
    # process's host vanish between the two, the database would keep the transaction and
    # its row lock until its own wait_timeout (8 hours by default on MariaDB) and no server
    # could allocate from that database meanwhile. Sessions idle inside a transaction for
    # this long are orphans: the database ends them and rolls back.
    orphan_after = max(5, 3 * seconds)
    if backend in ("mysql", "mariadb"):
        connect_args: dict[str, object] = {
            "connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds,
        }
    elif backend == "postgresql":
        connect_args = {"connect_timeout": seconds,
                        "options": f"-c statement_timeout={seconds * 1000} "
                                   f"-c idle_in_transaction_session_timeout={orphan_after * 1000}"}
    else:
        connect_args = {}
    several = nodes is not None and len(nodes) > 1
    if several and backend == "postgresql":
        connect_args.update(nodes.postgres_connect_args(parsed))  # type: ignore[union-attr]
    engine = create_engine(
        url, connect_args=connect_args, pool_pre_ping=True, pool_recycle=3600, pool_size=4,
        max_overflow=8, pool_timeout=timeout,
    )
    if backend in ("mysql", "mariadb"):

        @event.listens_for(engine, "connect")
        def _end_orphans(dbapi_conn: object, _record: object) -> None:
            if "MariaDB" in dbapi_conn.get_server_info():  # type: ignore[attr-defined]
                cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
                cursor.execute(f"SET SESSION idle_transaction_timeout = {orphan_after}")
                cursor.close()

    if several:
        nodes.attach(engine, backend)  # type: ignore[union-attr]
    return engine


class Database:
    """One database: its connection pool, its name for messages (password hidden), its
    schema and readiness, and what its failures mean. Thread-safe; close it."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = normalize_url(url)
        self.name = redact_url(self.url)
        """The database's URL without its password: what messages and logs show."""
        self.nodes = NodeList(self.name, split_nodes(self.url)[1] or ("",))
        """The nodes the URL lists (one, unnamed, if it names a single host)."""
        self.engine = make_engine(self.url, timeout, self.nodes)

    def unavailable(self, exc: BaseException, *, logged: bool = True) -> StorageUnavailable:
        """The error to raise for ``exc``, logged here (unless the caller logs it itself);
        never with SQL in it."""
        if logged:
            log.warning("database %s failed: %s", self.name, failure_text(exc, self.url))
        reason = permanent_failure(exc, self.url)
        if reason is not None:  # what a person must fix, not SQL: worth telling the caller
            return StorageUnavailable(f"database {self.name} cannot be used: {reason}")
        return StorageUnavailable(
            f"database {self.name} is unreachable or failing ({type(exc).__name__}); "
            "check that it is up and that its idgen_segment table exists (idgen init-db)"
        )

    def failure(self, exc: BaseException) -> ConfigError | StorageUnavailable:
        """``ConfigError`` if a person must fix the settings, else ``unavailable(exc)``."""
        reason = permanent_failure(exc, self.url)
        if reason is not None:
            return ConfigError(f"database {self.name}: {reason}")
        return self.unavailable(exc)

    def ping(self) -> bool:
        """Whether the database answers a trivial query now (never raises)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except DB_ERRORS:
            return False

    def create_schema(self) -> None:
        """Create the segment table if it is missing, or add the columns an older
        idgen did not make; harmless to repeat."""
        try:
            metadata.create_all(self.engine, checkfirst=True)
            with self.engine.begin() as conn:
                for column in _missing_columns(conn):
                    ddl = CreateColumn(column).compile(dialect=self.engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {segment_table.name} ADD COLUMN {ddl}")
        except DB_ERRORS as exc:
            raise self.failure(exc) from None

    def check_ready(self) -> None:
        """Raise ``ConfigError`` if this database cannot work without a person's help
        (wrong password, unknown database, missing SQLite file or directory, no table
        or a table from an older idgen), ``StorageUnavailable`` if it does not answer now."""
        path = sqlite_path(self.url)
        if path is not None and not os.path.exists(path):
            directory = os.path.dirname(path) or "."
            if not os.path.isdir(directory):
                raise ConfigError(f"SQLite database {path}: its directory {directory} does not exist")
            raise ConfigError(f"SQLite database {path} does not exist (a relative path is taken "
                              "from the directory idgen runs in): give the path of the database "
                              "that holds your IDs, or for a new one run `idgen init-db --db "
                              f"{self.name}` first")
        try:
            with self.engine.connect() as conn:
                table = inspect(conn).has_table(segment_table.name)
                missing = [c.name for c in _missing_columns(conn)] if table else []
        except DB_ERRORS as exc:  # whatever a driver raises talking to something that
            raise self.failure(exc) from None  # is not its database
        if not table:
            raise ConfigError(f"database {self.name} has no idgen_segment table: run "
                              "`idgen init-db --db URL` for it first")
        if missing:
            raise ConfigError(f"database {self.name} has an idgen_segment table from an older "
                              f"idgen (no {', '.join(missing)}): run `idgen init-db --db URL` "
                              "to upgrade it")

    def close(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()


def _missing_columns(conn: Connection) -> list[Column[object]]:
    present = {c["name"] for c in inspect(conn).get_columns(segment_table.name)}
    return [c for c in segment_table.columns if c.name not in present]

