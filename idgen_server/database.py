"""Connecting to one database: its URL, its connection pool, what its failures mean.

- ``normalize_url`` accepts the common spellings and makes a SQLite path
  absolute, so that which file is served never depends on the directory a
  command happens to run in.
- ``redact_url`` is the only way a URL reaches a message or a log: the password
  never shows, not even in a URL SQLAlchemy parses wrongly (an ``@`` inside the
  password) or cannot parse at all.
- ``make_engine`` sets the timeouts that keep a dead database from stalling
  callers, and the ones that make a database end a transaction its client
  abandoned.
- ``permanent_failure`` tells a failure that retrying cannot fix (a wrong
  password, a database that does not exist, an option the driver rejects) from
  one that may pass (refused, timed out): the first stops ``idgen serve`` at
  start-up, the second only benches the database until it answers.
"""
from __future__ import annotations

import os
import re
import warnings

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, SAWarning

from idgen_core.errors import ConfigError

__all__ = ["failure_text", "make_engine", "normalize_url", "permanent_failure", "redact_text",
           "redact_url", "sqlite_path"]

_SPELLINGS = (("mysql://", "mysql+pymysql://"), ("mariadb://", "mariadb+pymysql://"),
              ("postgres://", "postgresql+psycopg://"), ("postgresql://", "postgresql+psycopg://"))
_SECRET_KEYS = ("pass", "pwd", "secret", "token")
_URLISH = re.compile(r"[^\s'\",]*(?:://|@)[^\s'\",]*")  # a URL, or user:password@host
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(?=://)")

# MySQL/MariaDB error codes that mean the settings are wrong, not the network:
# access denied (1044, 1045, 1698), unknown database (1049), authentication
# plugin or protocol unsupported (1251, 2059).
_MYSQL_PERMANENT = {1044, 1045, 1049, 1251, 1698, 2059}
# libpq reports connection failures as text without an SQLSTATE.
_POSTGRES_PERMANENT = ("does not exist", "authentication failed", "pg_hba.conf",
                       "permission denied", "invalid connection option", "invalid sslmode",
                       "invalid integer value", "invalid value for parameter",
                       "does not support SSL", "root certificate file")


def normalize_url(url: str) -> str:
    """``mysql://`` and ``mariadb://`` use pymysql, ``postgres(ql)://`` psycopg 3; a
    relative SQLite path becomes absolute (relative to the current directory now).

    Raises ``ConfigError`` for a URL that cannot be parsed (message without password).
    """
    url = url.strip()
    for prefix, driver in _SPELLINGS:
        if url.startswith(prefix):
            url = driver + url[len(prefix):]
            break
    if url.count("://") > 1:
        raise ConfigError(f"{url.partition('://')[0][:20]!r}... holds more than one URL: give "
                          "each database its own --db (only IDGEN_DB takes a comma-separated list)")
    if url.count("@") > 1:
        raise ConfigError(f"database URL {redact_url(url)} has an @ in its password or user "
                          "name: percent-encode it as %40")
    try:
        parsed = make_url(url)
        port = parsed.port
    except Exception:  # ValueError, ArgumentError ...: all mean "not a URL we can use"
        # Not the parser's words: they may quote a password taken for a port.
        raise ConfigError(f"database URL {redact_url(url)} cannot be parsed; expected "
                          "e.g. mysql://user:password@host:3306/idgen "
                          "(special characters in the password percent-encoded, @ as %40)") from None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"database URL {redact_url(url)} has port {port}, not in 1..65535")
    database = parsed.database
    if (parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
            and not database.startswith("file:") and not os.path.isabs(database)):
        parsed = parsed.set(database=os.path.abspath(database))
        url = parsed.render_as_string(hide_password=False)
    return url


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names, or None (another database, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return parsed.database


def _secret(key: str) -> bool:
    """Whether a URL query argument holds a secret (``password=``, ``sslpassword=`` ...)."""
    return any(word in key.lower() for word in _SECRET_KEYS)


def redact_url(url: str) -> str:
    """``url`` fit for a message or a log: the password, and query arguments that hold
    secrets, replaced by ``***``; a URL that cannot be parsed safely shows only its
    scheme and what follows its last ``@``."""
    try:
        parsed = make_url(url)
        if url.count("@") <= 1 and url.count("://") == 1:
            hidden = {k: "***" for k in parsed.query if _secret(k)}
            text = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
            return text.replace("%2A%2A%2A", "***")
    except Exception:  # noqa: BLE001 - any failure to parse: fall back to the safe form
        pass
    scheme = _SCHEME.match(url)
    rest = url.rpartition("@")[2] if "@" in url else "..."
    return f"{scheme.group(0) if scheme else '?'}://***@{_URLISH.sub('***', rest)}"


def redact_text(text: str) -> str:
    """``text`` (a message that may quote what a person typed) with every URL-like word
    passed through ``redact_url``."""
    return _URLISH.sub(lambda match: redact_url(match.group(0)), text)


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
    backend = make_url(url).get_backend_name()
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


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL's secrets removed, should a driver ever echo them."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - nothing parsed, nothing known to remove
        return text
    secrets = [str(parsed.password or "")] + [
        str(v) for k, values in parsed.query.items() if _secret(k)
        for v in (values if isinstance(values, tuple) else (values,))]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def make_engine(url: str, timeout: float) -> Engine:
    """A connection pool for ``url`` (already normalized). ``ConfigError`` if unusable."""
    try:
        with warnings.catch_warnings():
            # SQLAlchemy warns, then ignores, query arguments a driver does not take:
            # a setting that silently does nothing is an error here.
            warnings.simplefilter("error", SAWarning)
            return _engine(url, timeout)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"database URL {redact_url(url)} needs a driver that is not "
                          f"installed ({_reason(exc)}); for PostgreSQL: pip install "
                          "'idgen[postgres]'") from None
    except Exception as exc:  # noqa: BLE001 - whatever SQLAlchemy raises for a bad URL
        raise ConfigError(f"database URL {redact_url(url)} is not usable: "
                          f"{_scrub(_reason(exc), url)}") from None


def _engine(url: str, timeout: float) -> Engine:
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

    return engine
