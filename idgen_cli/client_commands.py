"""The client commands: ``next``, ``health`` and ``proto``. They need no server packages."""
from __future__ import annotations

import argparse
import json
import os
import sys

from idgen_core.errors import ConfigError

__all__ = ["health", "next_ids", "proto", "read_token"]


def _quiet_grpc() -> None:
    # gRPC's core logs a failed TLS handshake on stderr (an INFO line) before idgen explains it:
    # the error must stay one line. Set before gRPC loads; a user's own setting wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def next_ids(args: argparse.Namespace) -> int:
    _quiet_grpc()
    from idgen_client.remote import RemoteClient

    token = read_token(args.token_file) if args.token_file else None
    with RemoteClient(args.target, token=token, timeout=args.timeout, ca_file=args.ca_file,
                      cert_file=args.cert_file, key_file=args.key_file,
                      tls_server_name=args.tls_server_name) as client:
        ids = client.next_ids(args.name, args.count)
    if args.json:
        # Strings: JavaScript's numbers lose precision above 2**53, and IDs go up to 2**63-1.
        sys.stdout.write(json.dumps({"biz_type": args.name, "ids": [str(i) for i in ids]}) + "\n")
    else:
        sys.stdout.write("".join(f"{i}\n" for i in ids))
    return 0


def health(args: argparse.Namespace) -> int:
    raise NotImplementedError


def proto(args: argparse.Namespace) -> int:
    from importlib import resources

    sys.stdout.write((resources.files("idgen_wire") / "idgen.proto").read_text(encoding="utf-8"))
    return 0


def read_token(path: str) -> str:
    """The token in the first line of the file ``path``; ``ConfigError`` if it cannot be read."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: "
                          f"{getattr(exc, 'strerror', None) or 'not ASCII text'}") from None
