"""idgen's client library.

- ``LocalGenerator``: IDs as an in-process call, fed by whole segments.
- ``RemoteClient``: ``NextId``/``NextSegment`` over gRPC with failover.
- ``Sequencer`` and ``Receiver``: per-group message seqs, and gap detection;
  ``Lease``: a shard of groups stamped by one process at a time.
- The errors, the same on both sides of the wire.
- ``__version__``: the installed idgen's version.

``LocalGenerator``, ``RemoteClient`` and ``Lease`` need gRPC and are imported when first
used; everything else is plain Python, so a process that only receives
messages (``Receiver``) runs without gRPC installed.
"""
from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from idgen_client.receiver import Arrival, Gap, Receiver
from idgen_client.sequencer import Sequencer, Stamp
from idgen_core.errors import (
    BizTypeConflict,
    BizTypeMisconfigured,
    BizTypeMoving,
    ConfigError,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    NotOwner,
    PermissionDenied,
    QuotaExceeded,
    ServiceUnavailable,
    Unauthenticated,
    UnknownBizType,
)
from idgen_core.segment import INT64_MAX, MAX_COUNT, Segment, validate_biz_type
from idgen_core.version import installed_version

if TYPE_CHECKING:
    from idgen_client.lease import Lease
    from idgen_client.local import LocalGenerator
    from idgen_client.remote import RemoteClient

__all__ = [
    "INT64_MAX",
    "MAX_COUNT",
    "BizTypeConflict",
    "BizTypeMisconfigured",
    "BizTypeMoving",
    "ConfigError",
    "Arrival",
    "Gap",
    "IdGenError",
    "IdSpaceExhausted",
    "InvalidRequest",
    "Lease",
    "LocalGenerator",
    "NotOwner",
    "PermissionDenied",
    "QuotaExceeded",
    "Receiver",
    "RemoteClient",
    "Segment",
    "Sequencer",
    "ServiceUnavailable",
    "Stamp",
    "Unauthenticated",
    "UnknownBizType",
    "validate_biz_type",
]

__version__ = installed_version()
"""The installed idgen's version ("unknown" when run from a tree never installed)."""

# A library prints nothing unless the application configures logging: without a handler
# of its own, Python would print warnings to stderr (its "last resort").
logging.getLogger(__name__).addHandler(logging.NullHandler())

_NEED_GRPC = {"Lease": "idgen_client.lease", "LocalGenerator": "idgen_client.local", "RemoteClient": "idgen_client.remote"}


def __getattr__(name: str) -> object:
    """Import the gRPC-backed classes on first use (PEP 562)."""
    module = _NEED_GRPC.get(name)
    if module is None:
        raise AttributeError(f"module 'idgen_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
