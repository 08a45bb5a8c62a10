"""Server configuration: one frozen value, built once, validated at construction.

Precedence: command-line flags, then environment variables (``IDGEN_DB``,
comma-separated URLs; ``IDGEN_LISTEN``, ``IDGEN_HTTP_LISTEN``), then a TOML file (``--config``, or
``IDGEN_CONFIG``), then the defaults, which need no set-up at all: the embedded
SQLite database (``default_database``) and ``127.0.0.1:50051``. A config file
looks like::

    db = ["db0=mysql://idgen@db0/idgen", "db1=mysql://idgen@db1/idgen"]
    db_password_file = "/run/secrets/idgen-db"
    listen = "0.0.0.0:50051"
    tls_cert = "/etc/idgen/server.pem"
    tls_key = "/etc/idgen/server.key"
    workers = 32
    metrics_listen = "127.0.0.1:9100"
    http_listen = "0.0.0.0:8080"   # the HTTP/JSON API too (same TLS and tokens)
    db_timeout = 3.0
    preload_at = 0.2
    drain = 5.0         # seconds NOT_SERVING before stopping, on SIGTERM
    reflection = true

A database entry may start with a label (``db0=``): what callers and metrics see
of it instead of its URL (default ``db0``, ``db1``... in the order given). A
password can come from ``db_password_file`` (or ``--db-password-file``,
``IDGEN_DB_PASSWORD_FILE``) rather than the URL, to keep it out of ``ps``.

Security (``idgen_server.auth``): a server that listens beyond loopback needs
TLS (``tls_cert``, ``tls_key``; ``tls_client_ca`` for mutual TLS) and a token
on every call, unless ``insecure`` says otherwise.

Every bad setting is a ``ConfigError`` whose message names the setting and
never shows a database password.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from idgen_core.buffer import check_preload_at
from idgen_core.errors import ConfigError, safe_repr
from idgen_server.defaults import (
    CONFIG_ENV,
    CONFIG_KEYS,
    DATA_DIR_ENV,
    DB_ENV,
    DB_PASSWORD_FILE_ENV,
    DEFAULT_ABOVE_ALL_LIMIT,
    DEFAULT_ADDRESS,
    DEFAULT_DB_TIMEOUT,
    DEFAULT_DRAIN,
    DEFAULT_GRACE,
    DEFAULT_PRELOAD_AT,
    DEFAULT_QUOTA_CALLS,
    DEFAULT_QUOTA_IDS,
    DEFAULT_WORKERS,
    EMBEDDED_FILE,
    HTTP_LISTEN_ENV,
    LISTEN_ENV,
    MAX_SECONDS,
    MAX_WORKERS,
    METRICS_HOST,
    TLS_ENV,
)
from idgen_server.urls import (
    check_distinct,
    check_labels,
    normalize_url,
    redact_url,
    split_label,
    split_url_list,
    with_password,
)
from idgen_wire.address import parse_address

__all__ = ["ServerConfig", "database_entries", "default_database"]


def default_database(env: Mapping[str, str]) -> str:
    """The embedded SQLite database's URL: ``idgen.db`` in ``$IDGEN_DATA_DIR``, else in
    the platform's per-user data directory (``~/.local/share/idgen`` on Linux), so that
    it is the same file whatever directory ``idgen serve`` runs from."""
    directory = os.path.expanduser(env.get(DATA_DIR_ENV, "").strip())
    if directory and not os.path.isabs(directory):
        raise ConfigError(f"{DATA_DIR_ENV} must be an absolute path, not {safe_repr(directory)}: "
                          "a relative one would name another database in every directory")
    if not directory:
        import platformdirs

        directory = platformdirs.user_data_dir("idgen", appauthor=False)
    return "sqlite:///" + os.path.join(directory, EMBEDDED_FILE)


def _number(name: str, value: object, *, whole: bool = False) -> None:
    kind = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{name} must be a {'whole ' if whole else ''}number, "
                          f"not {type(value).__name__} {safe_repr(value)}")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``idgen serve`` needs. Raises ``ConfigError`` when invalid.

    ``db_urls`` are normalized at construction (``idgen_server.database``): a
    relative SQLite path becomes absolute, so the file served is fixed when the
    configuration is made; an entry's label (``db0=URL``) moves to ``db_labels``.
    ``embedded`` marks the zero-setup database, which the server creates with a
    biz type named ``default``.
    """

    db_urls: tuple[str, ...]
    listen: str = DEFAULT_ADDRESS
    workers: int = DEFAULT_WORKERS
    preload_at: float = DEFAULT_PRELOAD_AT
    db_timeout: float = DEFAULT_DB_TIMEOUT
    metrics_port: int | None = None
    grace: float = DEFAULT_GRACE
    embedded: bool = False
    db_labels: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    insecure: bool = False
    metrics_listen: str | None = None
    quota_calls: float = DEFAULT_QUOTA_CALLS
    quota_ids: float = DEFAULT_QUOTA_IDS
    above_all_limit: int = DEFAULT_ABOVE_ALL_LIMIT
    drain: float = DEFAULT_DRAIN
    reflection: bool = True
    http_listen: str | None = None
    """Where to serve the HTTP/JSON API (``idgen_server.http_api``); None: not at all."""

    def __post_init__(self) -> None:
        if (not isinstance(self.db_urls, tuple)
                or not all(isinstance(u, str) and u.strip() for u in self.db_urls)):
            raise ConfigError("give at least one database URL, e.g. sqlite:///var/lib/idgen.db")
        entries = [split_label(u) for u in self.db_urls]
        urls = tuple(normalize_url(url) for _, url in entries)
        check_distinct([redact_url(u) for u in urls])
        object.__setattr__(self, "db_urls", urls)
        labels = tuple(label or f"db{k}" for k, (label, _) in enumerate(entries))
        if self.db_labels:
            if len(self.db_labels) != len(urls):
                raise ConfigError("give one label per database")
            labels = self.db_labels
        check_labels(labels)
        object.__setattr__(self, "db_labels", labels)
        if not isinstance(self.listen, str):
            raise ConfigError(f"listen must be HOST:PORT text, not {type(self.listen).__name__}")
        try:
            parse_address(self.listen)
        except ConfigError as exc:
            raise ConfigError(f"listen: {exc}") from None
        _number("workers", self.workers, whole=True)
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be in 1..{MAX_WORKERS}, got {self.workers}")
        _number("preload_at", self.preload_at)
        check_preload_at(self.preload_at)
        _number("db_timeout", self.db_timeout)
        if not 0 < self.db_timeout <= MAX_SECONDS:
            raise ConfigError(f"db timeout must be more than 0 and at most {MAX_SECONDS:g} "
                              f"seconds, got {self.db_timeout}")
        if self.metrics_port is not None:
            _number("metrics_port", self.metrics_port, whole=True)
            if not 0 <= self.metrics_port < 65536:
                raise ConfigError(f"metrics port must be in 0..65535, got {self.metrics_port}")
        _number("drain", self.drain)
        if not 0 <= self.drain <= MAX_SECONDS:
            raise ConfigError(f"drain must be in 0..{MAX_SECONDS:g} seconds, got {self.drain}")
        if not isinstance(self.reflection, bool):
            raise ConfigError(f"reflection must be true or false, not {safe_repr(self.reflection)}")
        _number("grace", self.grace)
        if not 0 <= self.grace <= MAX_SECONDS:  # NaN fails every comparison: refused too
            raise ConfigError(f"grace must be in 0..{MAX_SECONDS:g} seconds, got {self.grace}")
        if self.http_listen is not None:
            if not isinstance(self.http_listen, str):
                raise ConfigError("http_listen must be HOST:PORT text")
            try:
                parse_address(self.http_listen)
            except ConfigError as exc:
                raise ConfigError(f"http_listen: {exc}") from None
        if self.metrics_listen is not None:
            if self.metrics_port is not None:
                raise ConfigError("give metrics_listen or metrics_port, not both")
            if not isinstance(self.metrics_listen, str):
                raise ConfigError("metrics_listen must be HOST:PORT text")
            try:
                parse_address(self.metrics_listen)
            except ConfigError as exc:
                raise ConfigError(f"metrics_listen: {exc}") from None
        for name in ("quota_calls", "quota_ids"):
            value = getattr(self, name)
            _number(name, value)
            if not 0 <= value < float("inf"):
                raise ConfigError(f"{name} must be 0 (off) or a positive number, got {value}")
        _number("above_all_limit", self.above_all_limit, whole=True)
        if not 1 <= self.above_all_limit <= self.workers:
            raise ConfigError(f"above_all_limit must be in 1..workers ({self.workers}), "
                              f"got {self.above_all_limit}")
        self._check_security()

    def _check_security(self) -> None:
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be the path of a PEM file")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too")
        if not isinstance(self.insecure, bool):
            raise ConfigError(f"insecure must be true or false, not {safe_repr(self.insecure)}")
        if not self.loopback and not self.tls and not self.insecure:
            where = self.listen if _loopback(self.listen) else f"{self.listen} (gRPC)"
            if self.http_listen is not None and not _loopback(self.http_listen):
                where = f"{self.http_listen} (HTTP)"
            raise ConfigError(
                f"{where} is reachable beyond this host, and without TLS every ID and "
                "token would cross the network in plaintext: give --tls-cert and --tls-key "
                "(see the README, Securing idgen), or --insecure to accept that")

    @property
    def tls(self) -> bool:
        """Whether the server serves TLS (only), on gRPC and HTTP alike."""
        return self.tls_cert is not None

    @property
    def loopback(self) -> bool:
        """Whether the server listens only on this host's loopback interface (gRPC and HTTP)."""
        return _loopback(self.listen) and (self.http_listen is None or _loopback(self.http_listen))

    @property
    def tokens_always(self) -> bool:
        """Whether every call needs a token even while none exists (``idgen_server.auth``)."""
        return not self.loopback and not self.insecure

    @property
    def metrics_address(self) -> str | None:
        """Where metrics are served, if at all: ``metrics_listen``, else loopback at
        ``metrics_port``."""
        if self.metrics_listen is not None:
            return self.metrics_listen
        if self.metrics_port is not None:
            return f"{METRICS_HOST}:{self.metrics_port}"
        return None

    @classmethod
    def from_sources(
        cls,
        *,
        db: Sequence[str] | None = None,
        listen: str | None = None,
        env: Mapping[str, str],
        config_file: str | None = None,
        db_password_file: str | None = None,
        **overrides: object,
    ) -> ServerConfig:
        """Flags first (None means not given), then ``env``, then the file, then defaults."""
        path = config_file or env.get(CONFIG_ENV, "").strip() or None
        settings = _read_file(path) if path else {}
        urls, embedded = _databases(db, env, settings, path, db_password_file)
        for name, variable in TLS_ENV.items():
            if env.get(variable, "").strip():
                settings[name] = env[variable].strip()
        from_file = settings.pop("listen", DEFAULT_ADDRESS)
        settings["listen"] = listen or env.get(LISTEN_ENV, "").strip() or from_file
        if env.get(HTTP_LISTEN_ENV, "").strip():
            settings["http_listen"] = env[HTTP_LISTEN_ENV].strip()
        given = {k: v for k, v in overrides.items() if v is not None}
        # The values' types are checked by the constructor: a file may hold anything.
        return cls(db_urls=urls, embedded=embedded, **{**settings, **given})  # type: ignore[arg-type]


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def database_entries(*, db: Sequence[str] | None, env: Mapping[str, str],
                     config_file: str | None = None, db_password_file: str | None = None
                     ) -> tuple[tuple[str, ...], bool]:
    """The databases a command works on, found as ``idgen serve`` finds them (``--db``,
    ``IDGEN_DB``, the config file, else the embedded database), passwords from the
    password file filled in; and whether that is the embedded database. Each entry may
    carry its label (``db0=URL``): give them to ``ServerConfig``, or ``split_label``."""
    path = config_file or env.get(CONFIG_ENV, "").strip() or None
    return _databases(db, env, _read_file(path) if path else {}, path, db_password_file)


def _databases(db: Sequence[str] | None, env: Mapping[str, str], settings: dict[str, object],
               path: str | None, password_flag: str | None) -> tuple[tuple[str, ...], bool]:
    """``database_entries``, taking ``db`` and ``db_password_file`` out of ``settings``."""
    password_file = (password_flag or env.get(DB_PASSWORD_FILE_ENV, "").strip()
                     or settings.pop("db_password_file", None))
    settings.pop("db_password_file", None)
    db_setting = settings.pop("db", None)
    urls: tuple[str, ...]
    embedded = False
    if db:
        urls = tuple(db)
    elif env.get(DB_ENV, "").strip():
        urls = tuple(split_url_list(env[DB_ENV]))
    elif db_setting is not None:
        if isinstance(db_setting, str):
            db_setting = [db_setting]
        if not isinstance(db_setting, list) or not all(isinstance(u, str) for u in db_setting):
            raise ConfigError(f"config file {path}: db must be a URL or a list of URLs")
        urls = tuple(db_setting)
    else:
        urls, embedded = (default_database(env),), True
    if password_file is not None:
        urls = tuple(_with_password_from(u, password_file) for u in urls)
    return urls, embedded


def _with_password_from(entry: str, path: object) -> str:
    """``entry`` with the password kept in the file ``path``, if its URL names a user but
    no password."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError("db_password_file must be the path of a file")
    try:
        with open(path, encoding="utf-8") as handle:
            password = handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"cannot read the database password file {path}: {reason}") from None
    if not password:
        raise ConfigError(f"the database password file {path} is empty")
    label, url = split_label(entry)
    url = with_password(normalize_url(url), password)
    return f"{label}={url}" if label else url


_FILE_KEYS = frozenset(CONFIG_KEYS)


def _read_file(path: str) -> dict[str, object]:
    """The settings of a TOML config file; ``ConfigError`` names what is wrong."""
    try:
        with open(path, "rb") as handle:
            settings = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(settings) - _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown settings {unknown}; known: {sorted(_FILE_KEYS)}")
    return settings
