"""idgen's wire contract: the generated gRPC code, the error/status table, addresses and
how a call carries its token.

The one place where the messages of ``idgen_wire/idgen.proto`` meet Python:
the client and the server both speak through it, and neither reaches into the
other. ``idgen_pb2`` and ``idgen_pb2_grpc`` are generated (``tools/gen_proto.py``).
"""
from __future__ import annotations

import logging

# A library prints nothing unless the application configures logging: without a handler
# of its own, Python would print warnings to stderr (its "last resort").
logging.getLogger(__name__).addHandler(logging.NullHandler())
