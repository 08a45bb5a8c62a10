"""idgen's client library and shared core.

- ``LocalGenerator``: IDs as an in-process call, fed by whole segments.
- ``RemoteClient``: ``NextId``/``NextSegment`` over gRPC with failover.
- ``Sequencer`` and ``Receiver``: per-group message seqs, and gap detection.
- ``DoubleBuffer`` and ``Segment``: the core the server shares.
- The errors, the same on both sides of the wire.
"""
from __future__ import annotations

from idgen_client.buffer import DoubleBuffer
from idgen_client.errors import (
    BizTypeConflict,
    BizTypeMisconfigured,
    ConfigError,
    IdGenError,
    IdSpaceExhausted,
    InvalidRequest,
    ServiceUnavailable,
    StorageUnavailable,
    UnknownBizType,
)
from idgen_client.local import LocalGenerator
from idgen_client.receiver import Gap, Receiver
from idgen_client.remote import RemoteClient
from idgen_client.segment import INT64_MAX, MAX_COUNT, Segment, validate_biz_type
from idgen_client.sequencer import Sequencer, Stamp

__all__ = [
    "INT64_MAX",
    "MAX_COUNT",
    "BizTypeConflict",
    "BizTypeMisconfigured",
    "ConfigError",
    "DoubleBuffer",
    "Gap",
    "IdGenError",
    "IdSpaceExhausted",
    "InvalidRequest",
    "LocalGenerator",
    "Receiver",
    "RemoteClient",
    "Segment",
    "Sequencer",
    "ServiceUnavailable",
    "Stamp",
    "StorageUnavailable",
    "UnknownBizType",
    "validate_biz_type",
]
