"""The installed idgen release, the one answer to "which version is this?"."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["installed_version"]


def installed_version() -> str:
    """The installed idgen's version; "unknown" when run from a source tree never installed."""
    try:
        return version("idgen")
    except PackageNotFoundError:
        return "unknown"
