"""How the ``idgen`` command logs: ``--log-format text|json``, ``--log-level``, ``-v``."""
from __future__ import annotations

import argparse
import logging

__all__ = ["configure_logging"]


def configure_logging(args: argparse.Namespace) -> None:
    """Send log records to stderr as the command line asks."""
    verbose = getattr(args, "verbose", False)
    level = "debug" if verbose else getattr(args, "log_level", "info")
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
