"""idgen's server: allocation from SQL databases, served over gRPC.

Built on the shared core (``idgen_core``) and the wire contract (``idgen_wire``);
it never imports the client library. Layers, from the bottom: ``database`` and
``schema`` (connections, the tables), ``rows`` (what a row and a set of rows must
satisfy), ``store`` and ``tokens`` (one database's segment and token tables),
``health`` and ``rowset`` (what is known of all of them), ``allocator``
(segments from the set), ``buffers`` (IDs from memory), ``auth`` and ``quota``
(who may call, and how much), ``gate`` (both, per call), ``service`` (the gRPC
servicer), ``tls`` (the server's certificate, checked), ``server`` (assembly);
``config`` and ``defaults`` are the settings.
"""
from __future__ import annotations

import logging

# A library prints nothing unless the application configures logging: without a handler
# of its own, Python would print warnings to stderr (its "last resort").
logging.getLogger(__name__).addHandler(logging.NullHandler())
