"""The ``idgen`` command: serve, init-db, add-biz, token, next.

The one place that assembles client and server. Only ``next`` is a client; the
other commands load the server (``idgen_cli.server_commands``) when they run,
so that a client-only install (``pip install idgen``) has a working ``idgen next``
and a clear message for the rest.

Exit status: 0 on success, 1 when the operation failed (a database or server
unreachable, a conflict), 2 for bad usage. Errors go to stderr as one line a
person can act on.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from idgen_core.buffer import DEFAULT_PRELOAD_AT
from idgen_core.errors import ConfigError, IdGenError, InvalidRequest, safe_repr
from idgen_core.segment import MAX_COUNT, validate_biz_type
from idgen_server.defaults import (
    CONFIG_ENV,
    CONFIG_KEYS,
    DATA_DIR_ENV,
    DB_ENV,
    DB_PASSWORD_FILE_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_BIZ_TYPE,
    DEFAULT_DB_TIMEOUT,
    DEFAULT_QUOTA_CALLS,
    DEFAULT_QUOTA_IDS,
    DEFAULT_STEP,
    DEFAULT_WORKERS,
    EMBEDDED_FILE,
    LISTEN_ENV,
    MAX_WORKERS,
    METRICS_HOST,
    TLS_ENV,
)
from idgen_server.rows import MAX_ROW_STEP
from idgen_wire.auth import TOKEN_ENV

__all__ = ["TARGET_ENV", "main"]

TARGET_ENV = "IDGEN_TARGET"
"""The server(s) ``idgen next`` asks, when no --target is given."""


def _biz_type(value: str) -> str:
    try:
        return validate_biz_type(value)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bounded_int(low: int, high: int) -> type[int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{safe_repr(value)} is not a whole number") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {number}")
        return number

    return parse  # type: ignore[return-value]


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{safe_repr(value)} is not a number") from None


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block), never quoting a URL whole:
    a database URL given where it does not belong may hold a password."""

    def error(self, message: str) -> NoReturn:
        message = _redact(message)
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _redact(text: str) -> str:
    """``text`` with the secrets of any URL in it masked."""
    try:
        from idgen_server.urls import redact_text
    except ImportError:  # a client-only install: mask every URL-like word whole
        return re.sub(r"\S*(?:://|@)\S*", lambda match: safe_repr(match.group(0)), text)
    return redact_text(text)


def _one_line(text: str) -> str:
    """``text`` on one line: what a person or a log scraper reads as one error."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="idgen", description="Distributed ID generator: segments from SQL, served over gRPC.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the gRPC server",
                           description="Run the gRPC server. Without --db it uses the embedded "
                           f"SQLite database {EMBEDDED_FILE} in ${DATA_DIR_ENV}, else in the per-user "
                           "data directory (~/.local/share/idgen on Linux), creating its schema "
                           f"and a biz type named {DEFAULT_BIZ_TYPE!r}.")
    _database_options(serve, "Default: the embedded database")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help=f"address to serve on (env {LISTEN_ENV}; default {DEFAULT_ADDRESS}); "
                       "beyond loopback it needs TLS and tokens, or --insecure")
    serve.add_argument("--tls-cert", metavar="FILE",
                       help=f"serve TLS only, with this PEM certificate (chain) (env {TLS_ENV['tls_cert']})")
    serve.add_argument("--tls-key", metavar="FILE",
                       help=f"the certificate's unencrypted PEM key (env {TLS_ENV['tls_key']})")
    serve.add_argument("--tls-client-ca", metavar="FILE",
                       help="mutual TLS: require client certificates signed by a CA in this PEM file "
                       f"(env {TLS_ENV['tls_client_ca']})")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow serving beyond loopback without TLS, and without tokens until one "
                       "is created (logs a warning)")
    serve.add_argument("--workers", type=_bounded_int(1, MAX_WORKERS),
                       help=f"RPC threads (default {DEFAULT_WORKERS})")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve Prometheus metrics on this address")
    serve.add_argument("--metrics-port", type=_bounded_int(0, 65535), metavar="PORT",
                       help=f"serve Prometheus metrics on {METRICS_HOST}:PORT")
    serve.add_argument("--quota-calls", type=_number, metavar="N",
                       help=f"calls per second per caller, 0 for no limit (default {DEFAULT_QUOTA_CALLS})")
    serve.add_argument("--quota-ids", type=_number, metavar="N",
                       help=f"IDs per second per caller, 0 for no limit (default {DEFAULT_QUOTA_IDS})")
    serve.add_argument("--db-timeout", type=_number, metavar="SECONDS",
                       help=f"connect/read timeout per database call (default {DEFAULT_DB_TIMEOUT:g})")
    serve.add_argument("--preload-at", type=_number, metavar="FRACTION",
                       help="fetch the next segment once this share of the current one is used "
                       f"(default {DEFAULT_PRELOAD_AT:g})")

    init = sub.add_parser("init-db", help="create the tables (harmless to repeat)")
    _database_options(init, "Default: the embedded database")

    add = sub.add_parser("add-biz", help="register a biz type in every given database",
                         description="Register a biz type. With n databases, DB k (in the order "
                         "given) gets delta=n, remainder=k, so the databases never hand out the "
                         "same ID. Repeating the same command is harmless.")
    add.add_argument("name", type=_biz_type)
    add.add_argument("--step", type=_bounded_int(1, MAX_ROW_STEP), default=DEFAULT_STEP,
                     help=f"numbers claimed per allocation (default {DEFAULT_STEP})")
    _database_options(add, "Default: the embedded database")

    token = sub.add_parser("token", help="create, list or revoke the tokens callers need",
                           description="Tokens live in every database of the server; a server "
                           "needs one on every call once any exists.")
    tokens = token.add_subparsers(dest="token_command", required=True, metavar="ACTION",
                                  parser_class=_Parser)
    create = tokens.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--biz", action="append", required=True, metavar="NAME",
                        help="a biz type it grants; repeat for several; '*' for every one")
    create.add_argument("--name", help="a name for people (default token-ID)")
    create.add_argument("--admin", action="store_true", help="also grant the admin scope")
    listing = tokens.add_parser("list", help="list the tokens (never their secrets)")
    revoke = tokens.add_parser("revoke", help="revoke a token in every database")
    revoke.add_argument("token", metavar="NAME|ID")
    for action in (create, listing, revoke):
        _database_options(action, "Default: the embedded database")

    nxt = sub.add_parser("next", help="ask a server for IDs and print them, one per line")
    nxt.add_argument("name", type=_biz_type)
    nxt.add_argument("--count", type=_bounded_int(1, MAX_COUNT), default=1)
    nxt.add_argument("--target", metavar="HOST:PORT[,HOST:PORT...]",
                     default=os.environ.get(TARGET_ENV, DEFAULT_ADDRESS),
                     help=f"server(s) to ask (env {TARGET_ENV}; default {DEFAULT_ADDRESS})")
    nxt.add_argument("--token-file", metavar="FILE",
                     help=f"read the token from FILE (or set {TOKEN_ENV}; a token is never an "
                     "argument, where ps would show it)")
    nxt.add_argument("--ca-file", metavar="FILE", help="use TLS, trusting this CA (env IDGEN_TLS_CA)")
    nxt.add_argument("--cert-file", metavar="FILE",
                     help="client certificate for mutual TLS (env IDGEN_TLS_CERT)")
    nxt.add_argument("--key-file", metavar="FILE", help="its key (env IDGEN_TLS_KEY)")
    nxt.add_argument("--tls-server-name", metavar="NAME",
                     help="check the server's certificate for NAME rather than the target's host")
    return parser


def _database_options(parser: argparse.ArgumentParser, default: str) -> None:
    """--db, --config and --db-password-file: the databases, as ``serve`` finds them."""
    parser.add_argument("--db", action="append", metavar="[LABEL=]URL",
                        help="a database (SQLAlchemy URL); repeat for several: DB k of n serves "
                        f"IDs = k (mod n). Env {DB_ENV} (comma-separated). {default}")
    parser.add_argument("--config", metavar="FILE",
                        help=f"TOML file with any of: {', '.join(CONFIG_KEYS)} (env {CONFIG_ENV}); "
                        "flags and env win")
    parser.add_argument("--db-password-file", metavar="FILE",
                        help="the password of every database URL that names a user but none, read "
                        f"from FILE: it stays out of ps (env {DB_PASSWORD_FILE_ENV})")


def _next(args: argparse.Namespace) -> int:
    # gRPC's core logs a failed TLS handshake on stderr (an INFO line) before idgen explains it:
    # the error must stay one line. Set before gRPC loads; a user's own setting wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from idgen_client.remote import RemoteClient

    token = _read_token(args.token_file) if args.token_file else None
    with RemoteClient(args.target, token=token, ca_file=args.ca_file, cert_file=args.cert_file,
                      key_file=args.key_file, tls_server_name=args.tls_server_name) as client:
        ids = client.next_ids(args.name, args.count)
    sys.stdout.write("".join(f"{i}\n" for i in ids))
    return 0


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: "
                          f"{getattr(exc, 'strerror', None) or 'not ASCII text'}") from None


def _handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    command = args.command
    if command == "next":
        return _next
    if command == "token":
        command = f"token_{args.token_command}"
    try:
        module = importlib.import_module("idgen_cli.server_commands")
    except ImportError as exc:
        raise ConfigError(
            f"`idgen {args.command}` needs the server's packages ({exc.name or exc} is missing): "
            "pip install 'idgen[server]'") from None
    return getattr(module, command.replace("-", "_"))  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``idgen`` command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _handler(args)(args)
    except (ConfigError, InvalidRequest) as exc:
        print(f"idgen: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except IdGenError as exc:
        print(f"idgen: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
