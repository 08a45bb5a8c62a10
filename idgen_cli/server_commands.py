"""The commands that run or set up a server: serve, init-db, add-biz.

Loaded by ``idgen_cli.main`` only when one of them runs: they need the server's
packages (``pip install 'idgen[server]'``).
"""
from __future__ import annotations

import argparse
import os
import signal
import threading

from idgen_server.config import ServerConfig
from idgen_server.registry import register
from idgen_server.server import IdGenServer
from idgen_server.store import SegmentStore

__all__ = ["add_biz", "init_db", "serve"]


def serve(args: argparse.Namespace) -> int:
    config = ServerConfig.from_sources(
        db=args.db, listen=args.listen, env=os.environ, config_file=args.config,
        workers=args.workers,
        metrics_port=args.metrics_port, preload_at=args.preload_at, db_timeout=args.db_timeout)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with IdGenServer(config) as server:
        for k, store in enumerate(server.allocator.stores):
            note = " (unreachable for now: serving from the others)" \
                if store.name in server.unreachable else ""
            embedded = " (embedded)" if config.embedded else ""
            print(f"idgen: database {k}: {store.name}{embedded}{note}", flush=True)
        print(f"idgen: serving on {server.address} "
              f"({len(config.db_urls)} database(s)); Ctrl-C to stop", flush=True)
        _wait(stop)
        print("idgen: stopping", flush=True)
    return 0


def _wait(stop: threading.Event) -> None:
    """Block until a signal sets ``stop``."""
    while not stop.wait(3600):
        pass


def init_db(args: argparse.Namespace) -> int:
    for url in args.db:
        store = SegmentStore(url)
        try:
            store.create_schema()
        finally:
            store.close()
        print(f"schema ready in {store.name}")
    return 0


def add_biz(args: argparse.Namespace) -> int:
    stores: list[SegmentStore] = []
    try:
        for url in args.db:
            stores.append(SegmentStore(url))
        for result in register(stores, args.name, step=args.step):
            state = "registered" if result.created else "already registered"
            print(f"{args.name}: {state} in {result.database} "
                  f"(step {result.step}, delta {result.delta}, remainder {result.remainder})")
    finally:
        for store in stores:
            store.close()
    return 0
