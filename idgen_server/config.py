"""Server configuration: one frozen value, built once, validated at construction.

Precedence: command-line flags, then environment variables (``IDGEN_DB``,
comma-separated URLs; ``IDGEN_LISTEN``), then a TOML file (``--config``, or
``IDGEN_CONFIG``), then the defaults, which need no set-up at all: the embedded
SQLite database (``default_database``) and ``127.0.0.1:50051``. A config file
looks like::

    db = ["mysql://idgen@db0/idgen", "mysql://idgen@db1/idgen"]
    listen = "0.0.0.0:50051"
    workers = 32
    metrics_port = 9100
    db_timeout = 3.0
    preload_at = 0.2

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
    DEFAULT_ADDRESS,
    DEFAULT_DB_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_PRELOAD_AT,
    DEFAULT_WORKERS,
    EMBEDDED_FILE,
    LISTEN_ENV,
    MAX_SECONDS,
    MAX_WORKERS,
)
from idgen_server.urls import check_distinct, normalize_url, redact_url
from idgen_wire.address import parse_address

__all__ = ["ServerConfig", "default_database"]


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
    configuration is made. ``embedded`` marks the zero-setup database, which the
    server creates with a biz type named ``default``.
    """

    db_urls: tuple[str, ...]
    listen: str = DEFAULT_ADDRESS
    workers: int = DEFAULT_WORKERS
    preload_at: float = DEFAULT_PRELOAD_AT
    db_timeout: float = DEFAULT_DB_TIMEOUT
    metrics_port: int | None = None
    grace: float = DEFAULT_GRACE
    embedded: bool = False

    def __post_init__(self) -> None:
        if (not isinstance(self.db_urls, tuple)
                or not all(isinstance(u, str) and u.strip() for u in self.db_urls)):
            raise ConfigError("give at least one database URL, e.g. sqlite:///var/lib/idgen.db")
        urls = tuple(normalize_url(u) for u in self.db_urls)
        check_distinct([redact_url(u) for u in urls])
        object.__setattr__(self, "db_urls", urls)
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
        _number("grace", self.grace)
        if not 0 <= self.grace <= MAX_SECONDS:  # NaN fails every comparison: refused too
            raise ConfigError(f"grace must be in 0..{MAX_SECONDS:g} seconds, got {self.grace}")

    @classmethod
    def from_sources(
        cls,
        *,
        db: Sequence[str] | None = None,
        listen: str | None = None,
        env: Mapping[str, str],
        config_file: str | None = None,
        **overrides: object,
    ) -> ServerConfig:
        """Flags first (None means not given), then ``env``, then the file, then defaults."""
        path = config_file or env.get(CONFIG_ENV, "").strip() or None
        settings = _read_file(path) if path else {}
        urls: tuple[str, ...]
        embedded = False
        if db:
            urls = tuple(db)
        elif env.get(DB_ENV, "").strip():
            urls = tuple(u.strip() for u in env[DB_ENV].split(",") if u.strip())
        elif "db" in settings:
            db_setting = settings["db"]
            if isinstance(db_setting, str):
                db_setting = [db_setting]
            if not isinstance(db_setting, list) or not all(isinstance(u, str) for u in db_setting):
                raise ConfigError(f"config file {path}: db must be a URL or a list of URLs")
            urls = tuple(db_setting)
        else:
            urls, embedded = (default_database(env),), True
        settings.pop("db", None)
        from_file = settings.pop("listen", DEFAULT_ADDRESS)
        settings["listen"] = listen or env.get(LISTEN_ENV, "").strip() or from_file
        given = {k: v for k, v in overrides.items() if v is not None}
        # The values' types are checked by the constructor: a file may hold anything.
        return cls(db_urls=urls, embedded=embedded, **{**settings, **given})  # type: ignore[arg-type]


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
