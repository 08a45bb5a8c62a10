"""idgen's wire contract: the generated gRPC code, the error/status table, addresses and
how a call carries its token.

The one place where the messages of ``idgen_wire/idgen.proto`` meet Python:
the client and the server both speak through it, and neither reaches into the
other. ``idgen_pb2`` and ``idgen_pb2_grpc`` are generated (``tools/gen_proto.py``).
"""
