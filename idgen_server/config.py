"""Server configuration: one frozen value, built once, validated at construction.

Precedence: command-line flags, then environment variables (``IDGEN_DB``,
comma-separated URLs; ``IDGEN_LISTEN``), then a TOML file (``--config``, or
``IDGEN_CONFIG``), then the defaults, which need no set-up at all: the SQLite
file ``./idgen.db`` and ``127.0.0.1:50051``. A config file looks like::

    db = ["mysql://idgen@db0/idgen", "mysql://idgen@db1/idgen"]
    listen = "0.0.0.0:50051"
    workers = 32
    metrics_port = 9100
    db_timeout = 3.0
    preload_at = 0.2
"""
from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from idgen_client.buffer import DEFAULT_PRELOAD_AT
from idgen_client.errors import InvalidRequest
from idgen_client.remote import parse_targets

__all__ = ["DEFAULT_DB", "DEFAULT_LISTEN", "MAX_COUNT", "ServerConfig"]

DEFAULT_DB = "sqlite:///idgen.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_BIZ_TYPE = "default"
DEFAULT_STEP = 10_000
MAX_COUNT = 100_000
"""The most IDs one NextId call may ask for."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``idgen serve`` needs. Raises ``InvalidRequest`` when invalid."""

    db_urls: tuple[str, ...] = (DEFAULT_DB,)
    listen: str = DEFAULT_LISTEN
    workers: int = 32
    preload_at: float = DEFAULT_PRELOAD_AT
    db_timeout: float = 3.0
    metrics_port: int | None = None
    grace: float = 5.0

    def __post_init__(self) -> None:
        if not self.db_urls or any(not u.strip() for u in self.db_urls):
            raise InvalidRequest("give at least one database URL, e.g. sqlite:///idgen.db")
        if len(set(self.db_urls)) != len(self.db_urls):
            raise InvalidRequest("the same database URL is given twice")
        if len(parse_targets(self.listen, allow_port_0=True)) != 1:
            raise InvalidRequest(f"listen on one HOST:PORT, not {self.listen!r}")
        if not 1 <= self.workers <= 1024:
            raise InvalidRequest(f"workers must be in 1..1024, got {self.workers}")
        if not 0 <= self.preload_at < 1:
            raise InvalidRequest(f"preload_at must be in [0, 1), got {self.preload_at}")
        if self.db_timeout <= 0:
            raise InvalidRequest(f"db timeout must be positive, got {self.db_timeout}")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise InvalidRequest(f"metrics port must be in 0..65535, got {self.metrics_port}")

    @property
    def is_default_db(self) -> bool:
        """True when running on the zero-setup SQLite file."""
        return self.db_urls == (DEFAULT_DB,)

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
        path = config_file or env.get("IDGEN_CONFIG", "").strip() or None
        settings = _read_file(path) if path else {}
        urls: tuple[str, ...]
        if db:
            urls = tuple(db)
        elif env.get("IDGEN_DB", "").strip():
            urls = tuple(u.strip() for u in env["IDGEN_DB"].split(",") if u.strip())
        elif "db" in settings:
            db_setting = settings.pop("db")
            if isinstance(db_setting, str):
                db_setting = [db_setting]
            if not isinstance(db_setting, list) or not all(isinstance(u, str) for u in db_setting):
                raise InvalidRequest(f"config file {path}: db must be a URL or a list of URLs")
            urls = tuple(db_setting)
        else:
            urls = (DEFAULT_DB,)
        settings.pop("db", None)
        listen = (listen or env.get("IDGEN_LISTEN", "").strip()
                  or str(settings.pop("listen", DEFAULT_LISTEN)))
        settings.pop("listen", None)
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(db_urls=urls, listen=listen, **{**settings, **given})  # type: ignore[arg-type]
        except TypeError as exc:
            raise InvalidRequest(f"config file {path}: {exc}") from None


_FILE_KEYS = {"db", "listen", "workers", "preload_at", "db_timeout", "metrics_port", "grace"}


def _read_file(path: str) -> dict[str, object]:
    """The settings of a TOML config file; ``InvalidRequest`` names what is wrong."""
    try:
        with open(path, "rb") as handle:
            settings = tomllib.load(handle)
    except OSError as exc:
        raise InvalidRequest(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(settings) - _FILE_KEYS)
    if unknown:
        raise InvalidRequest(
            f"config file {path} has unknown settings {unknown}; known: {sorted(_FILE_KEYS)}")
    return settings
