"""idgen's server: allocation from SQL databases, served over gRPC.

Built on the shared core (``idgen_core``) and the wire contract (``idgen_wire``);
it never imports the client library. Layers, from the bottom: ``database`` and
``schema`` (connections, the table), ``rows`` (what a row and a set of rows must
satisfy), ``store`` (one database), ``health`` and ``rowset`` (what is known of
all of them), ``allocator`` (segments from the set), ``buffers`` (IDs from
memory), ``service`` (the gRPC servicer), ``server`` (assembly); ``config`` and
``defaults`` are the settings.
"""
