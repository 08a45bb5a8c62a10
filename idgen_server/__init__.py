"""idgen's server: SQL storage and allocation, the gRPC servicer, configuration, the CLI.

The shared core (segments, the double buffer, errors) lives in ``idgen_client``;
this package adds what needs SQLAlchemy and a gRPC server.
"""
