"""The server's defaults and limits, in one place: the configuration checks them and
the command line's help texts quote them. Imports nothing heavy, so the command line
can describe the server without loading it."""
from __future__ import annotations

from idgen_core.buffer import DEFAULT_PRELOAD_AT
from idgen_wire.address import DEFAULT_ADDRESS

__all__ = [
    "CONFIG_ENV",
    "CONFIG_KEYS",
    "DATA_DIR_ENV",
    "DB_ENV",
    "DEFAULT_ADDRESS",
    "DEFAULT_BIZ_TYPE",
    "DEFAULT_DB_TIMEOUT",
    "DEFAULT_GRACE",
    "DEFAULT_PRELOAD_AT",
    "DEFAULT_STEP",
    "DEFAULT_WORKERS",
    "EMBEDDED_FILE",
    "LISTEN_ENV",
    "MAX_SECONDS",
    "MAX_WORKERS",
]

DEFAULT_BIZ_TYPE = "default"
"""The biz type the embedded database is created with."""
DEFAULT_STEP = 10_000
"""IDs one allocation claims for a new biz type."""
DEFAULT_WORKERS = 32
MAX_WORKERS = 1024
DEFAULT_DB_TIMEOUT = 3.0
"""Seconds to connect to, or wait for, a database before it is taken as down."""
DEFAULT_GRACE = 5.0
"""Seconds a stopping server lets calls in flight finish."""
MAX_SECONDS = 3600.0
DB_ENV = "IDGEN_DB"
"""Database URLs, comma-separated, when no --db is given."""
LISTEN_ENV = "IDGEN_LISTEN"
CONFIG_ENV = "IDGEN_CONFIG"
"""The TOML config file, when no --config is given."""
CONFIG_KEYS = ("db", "listen", "workers", "metrics_port", "db_timeout", "preload_at", "grace")
"""The settings a config file may hold."""
DATA_DIR_ENV = "IDGEN_DATA_DIR"
"""Where the embedded database lives, instead of the platform's per-user data directory."""
EMBEDDED_FILE = "idgen.db"
