"""Server configuration: one frozen value, built once, validated at construction.

Precedence: command-line flags, then environment variables (``IDGEN_DB``,
comma-separated URLs; ``IDGEN_LISTEN``), then the defaults, which need no
set-up at all: the SQLite file ``./idgen.db`` and ``127.0.0.1:50051``.
"""
from __future__ import annotations

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
        **overrides: object,
    ) -> ServerConfig:
        """Flags first (None means not given), then ``env``, then defaults."""
        urls: tuple[str, ...]
        if db:
            urls = tuple(db)
        elif env.get("IDGEN_DB", "").strip():
            urls = tuple(u.strip() for u in env["IDGEN_DB"].split(",") if u.strip())
        else:
            urls = (DEFAULT_DB,)
        listen = listen or env.get("IDGEN_LISTEN", "").strip() or DEFAULT_LISTEN
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(db_urls=urls, listen=listen, **given)  # type: ignore[arg-type]
