"""The commands that run or set up a server: serve, init-db, add-biz, and token create/list/revoke.

Loaded by ``idgen_cli.main`` only when one of them runs: they need the server's
packages (``pip install 'idgen[server]'``). Every one of them finds its databases
as ``serve`` does (``--db``, ``IDGEN_DB``, ``--config``, else the embedded
database), and takes passwords from ``--db-password-file``, so that none has to
be typed where ``ps`` shows it.
"""
from __future__ import annotations

import argparse
import os
import signal

from idgen_cli.databases import stores
from idgen_cli.token_commands import token_create, token_list, token_revoke
from idgen_server.config import ServerConfig
from idgen_server.registry import register
from idgen_server.server import IdGenServer

__all__ = ["add_biz", "init_db", "serve", "token_create", "token_list", "token_revoke"]


def serve(args: argparse.Namespace) -> int:
    config = ServerConfig.from_sources(
        db=args.db, listen=args.listen, env=os.environ, config_file=args.config,
        db_password_file=args.db_password_file, workers=args.workers,
        metrics_port=args.metrics_port, metrics_listen=args.metrics_listen,
        preload_at=args.preload_at, db_timeout=args.db_timeout,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        insecure=args.insecure, quota_calls=args.quota_calls, quota_ids=args.quota_ids,
        drain=args.drain, reflection=args.reflection, http_listen=args.http_listen)
    # The signals are taken with sigwait in this thread rather than by handlers: a handler
    # runs between two bytecodes of this thread, and one that sets an Event can deadlock
    # on the Event's own lock if the signal lands while this thread is inside wait().
    # Blocked before the server starts its threads, so that they inherit the mask and
    # none of them takes the signal instead.
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return _serve(config)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


def _serve(config: ServerConfig) -> int:
    with IdGenServer(config) as server:
        for k, store in enumerate(server.allocator.stores):
            note = " (unreachable for now: serving from the others)" \
                if store.name in server.unreachable else ""
            embedded = " (embedded)" if config.embedded else ""
            print(f"idgen: database {k} ({config.db_labels[k]}): {store.name}{embedded}{note}",
                  flush=True)
        if server.metrics_address is not None:
            print(f"idgen: metrics on http://{server.metrics_address}/metrics", flush=True)
        if server.http_address is not None:
            scheme = "https" if config.tls else "http"
            print(f"idgen: HTTP API on {scheme}://{server.http_address}/v1/ids/BIZ_TYPE", flush=True)
        tokens = "tokens required" if server.auth.required else "no token required"
        print(f"idgen: serving on {server.address} ({server.security}, {tokens}; "
              f"{len(config.db_urls)} database(s)); Ctrl-C to stop", flush=True)
        first = _wait_for_signal()
        if first == signal.SIGTERM and config.drain > 0:
            # What an orchestrator sends: health checks say NOT_SERVING at once, calls are
            # still answered until load balancers and probes have moved away. A second
            # signal ends the wait.
            server.drain()
            print(f"idgen: draining for {config.drain:g}s (health: NOT_SERVING; "
                  "calls still served)", flush=True)
            signal.sigtimedwait(_STOP_SIGNALS, config.drain)
        print("idgen: stopping", flush=True)
    return 0


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _wait_for_signal() -> int:
    """Block until SIGTERM or SIGINT comes; which one."""
    return signal.sigwait(_STOP_SIGNALS)


def init_db(args: argparse.Namespace) -> int:
    with stores(args, ready=False) as opened:  # making them ready is the point
        for store in opened:
            store.create_schema()
            print(f"schema ready in {store.name}")
    return 0


def add_biz(args: argparse.Namespace) -> int:
    with stores(args) as opened:
        for result in register(opened, args.name, step=args.step):
            state = "registered" if result.created else "already registered"
            print(f"{args.name}: {state} in {result.database} "
                  f"(step {result.step}, delta {result.delta}, remainder {result.remainder})")
    return 0
