"""The ``idgen`` command: serve, set up and inspect databases, manage tokens, ask servers.

The one place that assembles client and server. Each command's function lives in
a module of its own (``idgen_cli.parser`` says which); the server's are imported
only when one of them runs, so that a client-only install (``pip install idgen``)
has working client commands (``next``, ``health``, ``status``, ``proto``) and a
clear message for the rest.

Exit status: 0 on success, 1 when the operation failed (a database or server
unreachable, a conflict, a server not serving), 2 for bad usage. Errors go to
stderr as one line a person can act on.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from idgen_cli.logs import configure_logging
from idgen_cli.parser import build_parser, one_line
from idgen_core.errors import ConfigError, IdGenError, InvalidRequest

__all__ = ["main"]

_CLIENT_MODULES = frozenset({"idgen_cli.client_commands", "idgen_cli.status_command"})


def _handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    module_name, _, function = args.run.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if module_name in _CLIENT_MODULES:
            raise
        raise ConfigError(
            f"`idgen {args.command}` needs the server's packages ({exc.name or exc} is missing): "
            "pip install 'idgen[server]'") from None
    return getattr(module, function)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``idgen`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        configure_logging(args)
        return _handler(args)(args)
    except (ConfigError, InvalidRequest) as exc:
        print(f"idgen: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except IdGenError as exc:
        print(f"idgen: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
