"""idgen's core: what the client and the server share, in plain Python.

It imports neither gRPC nor SQLAlchemy, so everything that builds on it (the
server's allocation from SQL, the client's ``NextSegment`` calls, a receiver
that never talks to a server) can use it without the other side's weight.

- ``errors``: the named errors, the same on both sides of the wire.
- ``segment``: a segment of IDs and the limits of a request.
- ``buffer``: the double buffer, given a ``fetch(floor) -> Segment`` callable.
- ``fetcher``: the buffer's background thread that fetches the next segment.
- ``sizing``: how many steps the next allocation should claim.
- ``retry``: the one backoff policy every retrying loop uses.
- ``files``: reading a file a setting names, with errors that name it.
"""
from __future__ import annotations

import logging

# A library prints nothing unless the application configures logging: without a handler
# of its own, Python would print warnings to stderr (its "last resort").
logging.getLogger(__name__).addHandler(logging.NullHandler())
