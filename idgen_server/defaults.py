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
    "DB_PASSWORD_FILE_ENV",
    "DEFAULT_ABOVE_ALL_LIMIT",
    "DEFAULT_ADDRESS",
    "DEFAULT_BIZ_TYPE",
    "DEFAULT_DB_TIMEOUT",
    "DEFAULT_DRAIN",
    "DEFAULT_GRACE",
    "DEFAULT_PRELOAD_AT",
    "DEFAULT_QUOTA_CALLS",
    "DEFAULT_QUOTA_IDS",
    "DEFAULT_STEP",
    "DEFAULT_WORKERS",
    "EMBEDDED_FILE",
    "HTTP_LISTEN_ENV",
    "LISTEN_ENV",
    "MAX_SECONDS",
    "MAX_WORKERS",
    "METRICS_HOST",
    "TLS_ENV",
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
DEFAULT_DRAIN = 5.0
"""Seconds a server told to stop (SIGTERM) keeps serving while its health check already
says NOT_SERVING, so that load balancers and probes take it out before calls fail."""
MAX_SECONDS = 3600.0
DB_ENV = "IDGEN_DB"
"""Database URLs, comma-separated, when no --db is given."""
LISTEN_ENV = "IDGEN_LISTEN"
HTTP_LISTEN_ENV = "IDGEN_HTTP_LISTEN"
"""Where to serve the HTTP/JSON API, when no --http-listen is given (none by default)."""
CONFIG_ENV = "IDGEN_CONFIG"
"""The TOML config file, when no --config is given."""
CONFIG_KEYS = ("db", "db_password_file", "listen", "workers", "metrics_port", "metrics_listen",
               "db_timeout", "preload_at", "grace", "tls_cert", "tls_key", "tls_client_ca",
               "insecure", "quota_calls", "quota_ids", "above_all_limit", "drain", "reflection",
               "http_listen")
"""The settings a config file may hold."""
DB_PASSWORD_FILE_ENV = "IDGEN_DB_PASSWORD_FILE"
"""A file holding the password of every database URL that names a user but no password."""
TLS_ENV = {"tls_cert": "IDGEN_SERVER_TLS_CERT", "tls_key": "IDGEN_SERVER_TLS_KEY",
           "tls_client_ca": "IDGEN_SERVER_TLS_CLIENT_CA"}
"""The server's TLS files from the environment (IDGEN_TLS_* are the clients')."""
METRICS_HOST = "127.0.0.1"
"""Where metrics are served when only a port is given: loopback, not the RPC address."""
DEFAULT_QUOTA_CALLS = 10_000
"""Calls per second one caller (a token, or a host where no token is needed) may make."""
DEFAULT_QUOTA_IDS = 5_000_000
"""IDs per second one caller may take with NextId."""
DEFAULT_ABOVE_ALL_LIMIT = 2
"""NextSegment calls with above_all (each reads every database) one server runs at once."""
DATA_DIR_ENV = "IDGEN_DATA_DIR"
"""Where the embedded database lives, instead of the platform's per-user data directory."""
EMBEDDED_FILE = "idgen.db"
