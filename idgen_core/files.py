"""Files a setting names (certificates, keys): read whole, or a ``ConfigError`` a person can act on."""
from __future__ import annotations

from pathlib import Path

from idgen_core.errors import ConfigError

__all__ = ["read_setting_file"]


def read_setting_file(path: str, what: str) -> bytes:
    """The bytes of ``path``; ``ConfigError`` starting with ``what`` (e.g. "the TLS key file
    'k.pem' (--tls-key)") if it is missing, a directory or unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory: give the path of a PEM file") from None
    except PermissionError:
        raise ConfigError(f"{what} cannot be read by this user: give it read access") from None
    except OSError as exc:
        raise ConfigError(f"{what} cannot be read ({exc.strerror or exc})") from None
