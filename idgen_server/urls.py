"""Database URLs: the spellings accepted, and the only way one reaches a message or a log.

- One URL may name one logical database reachable through several nodes (a
  Galera cluster, a PostgreSQL primary and its standbys): its host part lists
  them, comma-separated, in order of preference, as libpq's URIs do
  (``mysql://user:pw@db1:3306,db2:3306,db3:3306/idgen``). ``split_nodes`` and
  ``join_nodes`` take the list apart and put it back; everything else here
  works on the URL of the first node and keeps the list.

- ``normalize_url`` accepts the common spellings and makes a SQLite path
  absolute, so that which file is served never depends on the directory a
  command happens to run in.
- ``redact_url`` is the only way a URL reaches a message or a log: the password
  never shows, not even in a URL SQLAlchemy parses wrongly (an ``@`` inside the
  password) or cannot parse at all. ``redact_text`` does it for every URL in a
  message that quotes what a person typed.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence

from sqlalchemy.engine import URL, make_url

from idgen_core.errors import ConfigError

__all__ = ["check_distinct", "check_labels", "is_secret_key", "join_nodes", "normalize_url",
           "parse_url", "redact_text", "redact_url", "split_label", "split_nodes",
           "split_url_list", "sqlite_path", "with_password"]

_SPELLINGS = (("mysql://", "mysql+pymysql://"), ("mariadb://", "mariadb+pymysql://"),
              ("postgres://", "postgresql+psycopg://"), ("postgresql://", "postgresql+psycopg://"))
_SECRET_KEYS = ("pass", "pwd", "secret", "token")
_URLISH = re.compile(r"[^\s'\",]*(?:://|@)[^\s'\",]*")  # a URL, or user:password@host
# The same, commas included (a URL's node list), for text: its matches are split where
# another URL begins (``_NEXT_URL_KEPT``) before each part is redacted.
_URLISH_LIST = re.compile(r"[^\s'\"]*(?:://|@)[^\s'\"]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(?=://)")
_LABEL = re.compile(r"([A-Za-z][A-Za-z0-9_.-]{0,31})=(?=[A-Za-z][A-Za-z0-9+.-]*://)")
# A comma that starts another URL (optionally labelled), not another node of the same one.
_NEXT_URL = re.compile(r",\s*(?=(?:[A-Za-z][A-Za-z0-9_.-]{0,31}=)?[A-Za-z][A-Za-z0-9+.-]*://)")
_NEXT_URL_KEPT = re.compile(r"(,\s*)(?=(?:[A-Za-z][A-Za-z0-9_.-]{0,31}=)?[A-Za-z][A-Za-z0-9+.-]*://)")
_NODE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]@/?#,]+)(?::(?P<port>[0-9]{1,5}))?")


def _authority(url: str) -> tuple[str, str, str] | None:
    """``url`` as (up to its host part, the host part, the rest), or None if not a URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    userinfo, at, after = rest.rpartition("@")
    hosts = re.match(r"[^/?#]*", after)
    assert hosts is not None  # matches the empty string at least
    return f"{scheme}://{userinfo}{at}", hosts.group(0), after[hosts.end():]


def split_nodes(url: str) -> tuple[str, tuple[str, ...]]:
    """``url`` naming only its first node, and every node (``host[:port]``) in order;
    a URL of one node comes back as it is, with ``()``."""
    parts = _authority(url)
    if parts is None or "," not in parts[1]:
        return url, ()
    head, hosts, tail = parts
    nodes = tuple(node.strip() for node in hosts.split(","))
    return f"{head}{nodes[0]}{tail}", nodes


def join_nodes(url: str, nodes: Sequence[str]) -> str:
    """``url`` (of one node) with its host part replaced by ``nodes``; as it is if
    fewer than two."""
    parts = _authority(url)
    if parts is None or len(nodes) < 2:
        return url
    head, _, tail = parts
    return f"{head}{','.join(nodes)}{tail}"


_DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}


def _with_port(node: str, parsed: URL, port: int | None = None) -> str:
    """``host:port`` of a node, the backend's default port filled in, for comparing."""
    if port is None and not re.search(r":[0-9]+$", node):
        default = _DEFAULT_PORTS.get(parsed.get_backend_name())
        return f"{node}:{default}" if default else node
    return node if port is None else f"{node}:{port}"


def parse_url(url: str) -> URL:
    """SQLAlchemy's reading of ``url`` (of its first node, if it lists several)."""
    return make_url(split_nodes(url)[0])


def split_url_list(text: str) -> list[str]:
    """A comma-separated list of URLs (``IDGEN_DB``) as its URLs: a comma followed by a
    scheme (or ``label=`` and a scheme) starts the next one; other commas separate
    the nodes of one URL."""
    return [part.strip() for part in _NEXT_URL.split(text) if part.strip()]


def split_label(entry: str) -> tuple[str | None, str]:
    """``db0=mysql://...`` -> ``("db0", "mysql://...")``; an entry without a label -> (None, it).

    A label is what clients and metrics see of a database: an error sent to a
    caller or a metric names ``db0``, never the host, user or database name.
    """
    match = _LABEL.match(entry.strip())
    if match is None:
        return None, entry.strip()
    return match.group(1), entry.strip()[match.end():]


def check_labels(labels: Sequence[str]) -> None:
    """``ConfigError`` if two databases have the same label."""
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ConfigError(f"two databases are labelled {label!r}: give each its own label")
        seen.add(label)


def with_password(url: str, password: str) -> str:
    """``url`` with ``password``, if it names a user and no password; else ``url`` as it is."""
    first, nodes = split_nodes(url)
    parsed = make_url(first)
    if parsed.username is None or parsed.password is not None:
        return url
    return join_nodes(parsed.set(password=password).render_as_string(hide_password=False), nodes)


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
    url, nodes = split_nodes(url)
    for node in nodes:
        match = _NODE.fullmatch(node)
        if match is None or not 1 <= int(match.group("port") or 1) <= 65535:
            raise ConfigError(f"database URL {redact_url(join_nodes(url, nodes))} lists a node "
                              f"{node[:60]!r} that is not host or host:port (port in 1..65535)")
    if nodes and len(set(nodes)) < len(nodes):
        raise ConfigError(f"database URL {redact_url(join_nodes(url, nodes))} lists a node twice")
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
    if nodes and parsed.get_backend_name() not in ("mysql", "mariadb", "postgresql"):
        raise ConfigError(f"database URL {redact_url(join_nodes(url, nodes))} lists several "
                          "nodes: only MySQL/MariaDB and PostgreSQL URLs may")
    if nodes:
        return join_nodes(url, nodes)
    database = parsed.database
    if (parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
            and not database.startswith("file:") and not os.path.isabs(database)):
        parsed = parsed.set(database=os.path.abspath(database))
        url = parsed.render_as_string(hide_password=False)
    return url


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names, or None (another database, or in memory)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return parsed.database


def is_secret_key(key: str) -> bool:
    """Whether a URL query argument holds a secret (``password=``, ``sslpassword=`` ...)."""
    return any(word in key.lower() for word in _SECRET_KEYS)


def redact_url(url: str) -> str:
    """``url`` fit for a message or a log (``_redact_one``), every node it lists kept."""
    first, nodes = split_nodes(url)
    return join_nodes(_redact_one(first), nodes)


def _redact_one(url: str) -> str:
    """``url`` fit for a message or a log: the password, and query arguments that hold
    secrets, replaced by ``***``; a URL that cannot be parsed safely shows only its
    scheme and what follows its last ``@``."""
    try:
        parsed = make_url(url)
        if url.count("@") <= 1 and url.count("://") == 1:
            hidden = {k: "***" for k in parsed.query if is_secret_key(k)}
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
    def redact(match: re.Match[str]) -> str:
        parts = _NEXT_URL_KEPT.split(match.group(0))  # URLs and the commas between them
        return "".join(part if n % 2 else redact_url(part) for n, part in enumerate(parts))

    return _URLISH_LIST.sub(redact, text)


def check_distinct(names: Sequence[str]) -> None:
    """``ConfigError`` unless at least one database is given, and none twice.

    ``names`` are redacted URLs (``redact_url``, what ``SegmentStore.name`` holds):
    two URLs that differ only in their password name the same database, and serving
    one database as two would give it two residue classes.
    """
    if not names:
        raise ConfigError("give at least one database URL, e.g. sqlite:///var/lib/idgen.db")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"the same database is given twice: {name}")
        seen.add(name)
    through: dict[str, str] = {}  # a node's database -> the URL that lists it
    for name in names:
        first, nodes = split_nodes(name)
        if not nodes:
            continue
        try:
            parsed = make_url(first)
        except Exception:  # noqa: BLE001 - a name that does not parse cannot be compared
            continue
        database = parsed.database
        for node in nodes:
            other = through.setdefault(f"{_with_port(node, parsed)}/{database}", name)
            if other != name:
                raise ConfigError(f"the same database is given twice: {other} and {name} both "
                                  f"reach {database} through {node}")
    for name in names:
        first, nodes = split_nodes(name)
        if nodes:
            continue
        try:
            parsed = make_url(first)
        except Exception:  # noqa: BLE001
            continue
        other = through.get(f"{_with_port(str(parsed.host), parsed, parsed.port)}/{parsed.database}")
        if other is not None:
            raise ConfigError(f"the same database is given twice: {name} is one of the nodes "
                              f"of {other}")

