"""The ``idgen`` command line's arguments: every command, option and help text.

Imports nothing heavy, so that ``idgen --help`` and the client commands work on a
client-only install (``pip install idgen``). Each command names the function that
runs it (``run``, as ``module:function``); ``idgen_cli.main`` imports that module
only when the command runs.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import NoReturn

from idgen_core.buffer import DEFAULT_PRELOAD_AT
from idgen_core.errors import InvalidRequest, safe_repr
from idgen_core.segment import MAX_COUNT, validate_biz_type
from idgen_core.version import installed_version
from idgen_server.defaults import (
    CONFIG_ENV,
    CONFIG_KEYS,
    DATA_DIR_ENV,
    DB_ENV,
    DB_PASSWORD_FILE_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_BIZ_TYPE,
    DEFAULT_DB_TIMEOUT,
    DEFAULT_DRAIN,
    DEFAULT_QUOTA_CALLS,
    DEFAULT_QUOTA_IDS,
    DEFAULT_STEP,
    DEFAULT_WORKERS,
    EMBEDDED_FILE,
    HTTP_LISTEN_ENV,
    LISTEN_ENV,
    MAX_SECONDS,
    MAX_WORKERS,
    METRICS_HOST,
    TLS_ENV,
)
from idgen_server.rows import MAX_ROW_STEP
from idgen_wire.auth import TOKEN_ENV

__all__ = ["LOG_FORMATS", "LOG_FORMAT_ENV", "LOG_LEVELS", "LOG_LEVEL_ENV", "TARGET_ENV", "build_parser",
           "one_line"]

TARGET_ENV = "IDGEN_TARGET"
"""The server(s) the client commands ask, when no --target is given."""
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT_ENV = "IDGEN_LOG_FORMAT"
"""The log format when no --log-format is given."""
LOG_LEVEL_ENV = "IDGEN_LOG_LEVEL"
"""The log level when neither --log-level nor -v is given."""

_SERVER = "idgen_cli.server_commands"
_CLIENT = "idgen_cli.client_commands"
_CATALOG = "idgen_cli.catalog_commands"
_STATUS = "idgen_cli.status_command"


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
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _redact(text: str) -> str:
    """``text`` with the secrets of any URL in it masked."""
    try:
        from idgen_server.urls import redact_text
    except ImportError:  # a client-only install: mask every URL-like word whole
        return re.sub(r"\S*(?:://|@)\S*", lambda match: safe_repr(match.group(0)), text)
    return redact_text(text)


def one_line(text: str) -> str:
    """``text`` on one line: what a person or a log scraper reads as one error."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. The common options (-v, --log-format, --log-level) are
    accepted before the command and after it alike."""
    common = _common_options()
    parser = _Parser(prog="idgen", parents=[common],
                     description="Distributed ID generator: segments from SQL, served over gRPC.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    def command(name: str, run: str, *, help: str, description: str | None = None
                ) -> argparse.ArgumentParser:
        made = sub.add_parser(name, parents=[common], help=help, description=description)
        made.set_defaults(run=run)
        return made

    _serve(command("serve", f"{_SERVER}:serve", help="run the gRPC server",
                   description="Run the gRPC server. Without --db it uses the embedded SQLite "
                   f"database {EMBEDDED_FILE} in ${DATA_DIR_ENV}, else in the per-user data "
                   "directory (~/.local/share/idgen on Linux), creating its schema and a biz "
                   f"type named {DEFAULT_BIZ_TYPE!r}."))

    init = command("init-db", f"{_SERVER}:init_db", help="create the tables (harmless to repeat)")
    _database_options(init, "Default: the embedded database")

    add = command("add-biz", f"{_SERVER}:add_biz", help="register a biz type in every given database",
                  description="Register a biz type. With n databases, DB k (in the order given) "
                  "gets delta=n, remainder=k, so the databases never hand out the same ID. "
                  "Repeating the same command is harmless.")
    add.add_argument("name", type=_biz_type, help="the biz type: 1 to 64 of [A-Za-z0-9_.:-]")
    add.add_argument("--step", type=_bounded_int(1, MAX_ROW_STEP), default=DEFAULT_STEP,
                     help=f"numbers claimed per allocation (default {DEFAULT_STEP})")
    _database_options(add, "Default: the embedded database")

    listing = command("list", f"{_CATALOG}:list_biz_types",
                      help="list every biz type in every database",
                      description="Every biz type's row in every database: max_id, step, delta, "
                      "remainder, version, updated_at and the share of the int64 range used.")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    _database_options(listing, "Default: the embedded database")

    describe = command("describe", f"{_CATALOG}:describe",
                       help="show one biz type in every database")
    describe.add_argument("name", type=_biz_type, help="the biz type")
    describe.add_argument("--json", action="store_true", help="print JSON for scripts")
    _database_options(describe, "Default: the embedded database")

    set_step = command("set-step", f"{_CATALOG}:set_step",
                       help="change a biz type's step in every database",
                       description="Change the numbers claimed per allocation, in every database "
                       "that holds the biz type; each must answer before any is changed. Running "
                       "servers use it from their next allocation, without a restart; the "
                       "segments already allocated, and the IDs handed out, are untouched.")
    set_step.add_argument("name", type=_biz_type, help="the biz type")
    set_step.add_argument("step", type=_bounded_int(1, MAX_ROW_STEP),
                          help=f"the new step, 1 to {MAX_ROW_STEP}")
    _database_options(set_step, "Default: the embedded database")

    skip = command("skip-to", f"{_CATALOG}:skip_to",
                   help="make every segment of a biz type allocated from now on lie above an ID",
                   description="Move the biz type's max_id up to ID in every database where it "
                   "is below (each must answer before any is changed), for example to start "
                   "above the IDs of the system idgen replaces. Segments allocated afterwards "
                   "lie above ID; the IDs running servers and clients have buffered already (up "
                   "to two segments each) lie below it and are still handed out: restart them "
                   "for every ID to be above. It never moves a max_id down: that would hand out "
                   "IDs a second time.")
    skip.add_argument("name", type=_biz_type, help="the biz type")
    skip.add_argument("id", type=_bounded_int(1, 2**63 - 2), metavar="ID",
                      help="every segment allocated afterwards lies above this ID")
    _database_options(skip, "Default: the embedded database")

    add_db = command("add-db", f"{_CATALOG}:add_db",
                     help="add a database to a biz type that is being served",
                     description="Move a biz type from the databases it is in (--db, in the "
                     "order servers list them) to those and --new-db, while servers run: "
                     "afterwards database k of the n + 1 hands out IDs = k (mod n + 1), all "
                     "above every ID handed out before. Allocation of the biz type pauses for "
                     "the moment of the move (buffered IDs keep being served). Every database "
                     "must answer first; run it again if it stopped halfway. Then start "
                     "servers with the new list; those on the old list keep working.")
    add_db.add_argument("name", type=_biz_type, help="the biz type")
    add_db.add_argument("--new-db", required=True, metavar="[LABEL=]URL",
                        help="the database to add (its tables made by idgen init-db, without "
                        "the biz type)")
    _database_options(add_db, "Default: the embedded database")

    _tokens(command("token", "", help="create, list or revoke the tokens callers need",
                    description="Tokens live in every database of the server; a server needs one "
                    "on every call once any exists."), common)

    nxt = command("next", f"{_CLIENT}:next_ids",
                  help="ask a server for IDs and print them, one per line")
    nxt.add_argument("name", type=_biz_type, help="the biz type")
    nxt.add_argument("--count", type=_bounded_int(1, MAX_COUNT), default=1,
                     help=f"how many IDs, 1 to {MAX_COUNT} (default 1)")
    nxt.add_argument("--json", action="store_true",
                     help='print {"biz_type": ..., "ids": ["...", ...]}, IDs as strings')
    client_options(nxt)

    health = command("health", f"{_CLIENT}:health",
                     help="exit 0 if a server is serving, 1 if not (for scripts and probes)",
                     description="Ask a server's standard gRPC health service. Exit status 0: "
                     "serving; 1: not serving, draining, or unreachable.")
    health.add_argument("--service", default="",
                        help="the service to ask about (default: the server as a whole)")
    client_options(health, several=False)

    status = command("status", f"{_STATUS}:status", help="show what a server holds",
                     description="A server's buffers and databases as it sees them (the Admin "
                     "service). Needs a token with the admin scope once tokens exist.")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    client_options(status, several=False)

    command("proto", f"{_CLIENT}:proto", help="print the gRPC API (.proto file)",
            description="Print the .proto file of the gRPC API that this idgen speaks, for "
            "generating clients in other languages.")
    return parser


def _common_options() -> _Parser:
    """-v, --log-format and --log-level, for the top level and every command. SUPPRESS:
    a command's own default must not overwrite what was given before the command."""
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug messages (same as --log-level debug)")
    common.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
                        help="text (default) or json: one JSON object per line "
                        f"(env {LOG_FORMAT_ENV})")
    common.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                        help=f"the least severe messages logged (env {LOG_LEVEL_ENV}; default info)")
    return common


def _serve(serve: argparse.ArgumentParser) -> None:
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
    serve.add_argument("--http-listen", metavar="HOST:PORT",
                       help=f"also serve the HTTP/JSON API here, with the same TLS and tokens "
                       f"(env {HTTP_LISTEN_ENV}; default: none)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve Prometheus metrics on this address (path /metrics)")
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
    serve.add_argument("--drain", type=_number, metavar="SECONDS",
                       help="on SIGTERM, report NOT_SERVING and keep answering this long before "
                       f"stopping, so that load balancers move away first (default {DEFAULT_DRAIN:g}, "
                       f"at most {MAX_SECONDS:g})")
    serve.add_argument("--no-reflection", dest="reflection", action="store_false", default=None,
                       help="do not serve gRPC server reflection (on by default)")


def _tokens(token: argparse.ArgumentParser, common: _Parser) -> None:
    tokens = token.add_subparsers(dest="token_command", required=True, metavar="ACTION",
                                  parser_class=_Parser)
    create = tokens.add_parser("create", parents=[common], help="make a token and print it (once)")
    create.add_argument("--biz", action="append", required=True, metavar="NAME",
                        help="a biz type it grants; repeat for several; '*' for every one")
    create.add_argument("--name", help="a name for people (default token-ID)")
    create.add_argument("--admin", action="store_true",
                        help="also grant the admin scope (idgen status)")
    listing = tokens.add_parser("list", parents=[common], help="list the tokens (never their secrets)")
    revoke = tokens.add_parser("revoke", parents=[common], help="revoke a token in every database")
    revoke.add_argument("token", metavar="NAME|ID", help="the token's name or ID (or the token)")
    for action, run in ((create, "token_create"), (listing, "token_list"), (revoke, "token_revoke")):
        action.set_defaults(run=f"{_SERVER}:{run}")
        _database_options(action, "Default: the embedded database")


def client_options(parser: argparse.ArgumentParser, *, several: bool = True) -> None:
    """Where the server is and how to reach it: the options every client command takes."""
    parser.add_argument("--target", metavar="HOST:PORT[,HOST:PORT...]" if several else "HOST:PORT",
                        default=os.environ.get(TARGET_ENV, DEFAULT_ADDRESS),
                        help=f"server{'(s)' if several else ''} to ask (env {TARGET_ENV}; "
                        f"default {DEFAULT_ADDRESS})")
    parser.add_argument("--token-file", metavar="FILE",
                        help=f"read the token from FILE (or set {TOKEN_ENV}; a token is never an "
                        "argument, where ps would show it)")
    parser.add_argument("--ca-file", metavar="FILE", help="use TLS, trusting this CA (env IDGEN_TLS_CA)")
    parser.add_argument("--cert-file", metavar="FILE",
                        help="client certificate for mutual TLS (env IDGEN_TLS_CERT)")
    parser.add_argument("--key-file", metavar="FILE", help="its key (env IDGEN_TLS_KEY)")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help="check the server's certificate for NAME rather than the target's host")
    parser.add_argument("--timeout", type=_number, metavar="SECONDS", default=3.0,
                        help="seconds each attempt may take (default 3)")


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


