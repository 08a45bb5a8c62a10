"""The databases an administrative command works on, found as ``idgen serve`` finds them."""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from idgen_core.errors import ConfigError, StorageUnavailable
from idgen_server.config import database_entries
from idgen_server.defaults import DATA_DIR_ENV
from idgen_server.store import SegmentStore
from idgen_server.urls import check_distinct, check_labels, split_label, sqlite_path

__all__ = ["stores"]


@contextmanager
def stores(args: argparse.Namespace, *, ready: bool = True) -> Iterator[list[SegmentStore]]:
    """The databases the command was given, opened; closed on the way out.

    ``ready``: each must be usable as ``serve`` would check it, so that what a person must
    fix (a wrong password, an unknown database, no table) stops the command with one line
    (``ConfigError``). A database that merely does not answer is left to the command,
    which may carry on with the others.
    """
    entries, embedded = database_entries(db=args.db, env=os.environ, config_file=args.config,
                                         db_password_file=args.db_password_file)
    if embedded:  # as `idgen serve` does: on a fresh machine its directory does not exist yet
        _make_directory(sqlite_path(entries[0]))
    check_labels([split_label(e)[0] or f"db{k}" for k, e in enumerate(entries)])  # as serve does
    opened: list[SegmentStore] = []
    try:
        for k, entry in enumerate(entries):
            label, url = split_label(entry)
            opened.append(SegmentStore(url, label=label or f"db{k}"))
        check_distinct([store.name for store in opened])  # as serve does
        for store in opened if ready else ():
            try:
                store.check_ready()
            except StorageUnavailable:
                pass
        yield opened
    finally:
        for store in opened:
            store.close()


def _make_directory(path: str | None) -> None:
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of the embedded database {path}: "
                          f"{exc.strerror} (set {DATA_DIR_ENV} to another directory)") from None
