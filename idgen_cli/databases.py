"""The databases an administrative command works on, found as ``idgen serve`` finds them."""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from idgen_server.config import database_entries
from idgen_server.store import SegmentStore
from idgen_server.urls import split_label

__all__ = ["stores"]


@contextmanager
def stores(args: argparse.Namespace) -> Iterator[list[SegmentStore]]:
    """The databases the command was given, opened; closed on the way out."""
    entries, _ = database_entries(db=args.db, env=os.environ, config_file=args.config,
                                  db_password_file=args.db_password_file)
    opened: list[SegmentStore] = []
    try:
        for k, entry in enumerate(entries):
            label, url = split_label(entry)
            opened.append(SegmentStore(url, label=label or f"db{k}"))
        yield opened
    finally:
        for store in opened:
            store.close()
