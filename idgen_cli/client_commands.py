"""The client commands: ``next``, ``health`` and ``proto``. They need no server packages."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from idgen_cli.parser import one_line
from idgen_core.errors import ConfigError

if TYPE_CHECKING:
    from idgen_client.remote import RemoteClient

__all__ = ["client_for", "health", "next_ids", "proto", "read_token"]


def _quiet_grpc() -> None:
    # gRPC's core logs a failed TLS handshake on stderr (an INFO line) before idgen explains it:
    # the error must stay one line. Set before gRPC loads; a user's own setting wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def client_for(args: argparse.Namespace, *, retries: int = 4) -> RemoteClient:
    """A ``RemoteClient`` as the client options (``parser.client_options``) ask."""
    _quiet_grpc()
    from idgen_client.remote import RemoteClient

    token = read_token(args.token_file) if args.token_file else None
    return RemoteClient(args.target, token=token, timeout=args.timeout, ca_file=args.ca_file,
                        cert_file=args.cert_file, key_file=args.key_file,
                        tls_server_name=args.tls_server_name, retries=retries)


def next_ids(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        ids = client.next_ids(args.name, args.count)
    if args.json:
        # Strings: JavaScript's numbers lose precision above 2**53, and IDs go up to 2**63-1.
        sys.stdout.write(json.dumps({"biz_type": args.name, "ids": [str(i) for i in ids]}) + "\n")
    else:
        sys.stdout.write("".join(f"{i}\n" for i in ids))
    return 0


def health(args: argparse.Namespace) -> int:
    """Exit 0 if the server reports SERVING, 1 otherwise (NOT_SERVING, draining, an unknown
    service, unreachable): one attempt, no retries, as a probe wants."""
    from idgen_core.errors import IdGenError

    try:
        with client_for(args, retries=0) as client:
            answer = client.health(args.service)
    except ConfigError:
        raise
    except IdGenError as exc:
        print(f"{args.target}: not serving: {one_line(str(exc))}")
        return 1
    what = f"{args.service!r} on {args.target}" if args.service else args.target
    print(f"{what}: {answer}")
    return 0 if answer == "SERVING" else 1


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
