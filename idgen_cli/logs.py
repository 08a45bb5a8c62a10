"""How the ``idgen`` command logs: ``--log-format text|json``, ``--log-level``, ``-v``.

The libraries (``idgen_core``, ``idgen_wire``, ``idgen_client``, ``idgen_server``)
only log to their ``logging.getLogger(__name__)`` loggers and print nothing
unless an application configures logging; the command line is that application.
It sends every record to stderr, in one of two formats:

- ``text`` (the default): ``2024-05-01 12:00:00,123 WARNING idgen_server.health: database ... is lost``,
  for people.
- ``json``: one JSON object per line, for log shippers: ``timestamp`` (ISO 8601, UTC),
  ``level``, ``logger``, ``event`` (the message), then every field the line was
  logged with (``extra=``), such as ``db``, ``biz_type`` or ``peer``. It needs
  python-json-logger, which the server's extra brings; a client-only install
  asked for it gets a one-line ``ConfigError``.

A flag wins over the environment (``IDGEN_LOG_FORMAT``, ``IDGEN_LOG_LEVEL``), which
wins over the defaults (text, info); ``-v`` is ``--log-level debug``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from idgen_cli.parser import LOG_FORMAT_ENV, LOG_FORMATS, LOG_LEVEL_ENV, LOG_LEVELS
from idgen_core.errors import ConfigError, safe_repr

__all__ = ["JSON_FIELDS", "TEXT_FORMAT", "configure_logging", "json_formatter", "log_settings"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ("timestamp", "level", "logger", "event")
"""The fields every JSON line starts with; a line's own fields (``extra=``) follow."""


def log_settings(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """``(format, level)`` as the command line, then the environment, ask; ``ConfigError``
    for an environment value that is not one of the choices."""
    log_format = getattr(args, "log_format", None) or _from_env(env, LOG_FORMAT_ENV, LOG_FORMATS) \
        or "text"
    if getattr(args, "verbose", False):
        return log_format, "debug"
    level = getattr(args, "log_level", None) or _from_env(env, LOG_LEVEL_ENV, LOG_LEVELS) or "info"
    return log_format, level


def _from_env(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = env.get(name, "").strip().lower()
    if not value:
        return None
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {safe_repr(env[name])}")
    return value


def configure_logging(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> None:
    """Send log records to stderr as the command line (or the environment) asks.

    Replaces the handler an earlier call installed (``main()`` may run more than once in
    a process) and leaves every other handler alone."""
    log_format, level = log_settings(args, env)
    formatter = json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler = _Stderr()
    handler.setFormatter(formatter)
    handler.set_name("idgen-cli")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "idgen-cli"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a record comes, not to the
    stream it was when logging was configured (which a caller may have replaced and closed
    since, as a test harness capturing output does)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def json_formatter() -> logging.Formatter:
    """A formatter of one JSON object per record (see the module notes); ``ConfigError``
    without python-json-logger."""
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        raise ConfigError("--log-format json needs python-json-logger, which comes with the "
                          "server: pip install 'idgen[server]' (or pip install python-json-logger)"
                          ) from None

    class _Formatter(JsonFormatter):  # type: ignore[misc]
        def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                       message_dict: dict[str, Any]) -> None:
            super().add_fields(log_data, record, message_dict)
            # The fixed fields first, and never replaced by a field of the same name.
            fields = {key: value for key, value in log_data.items()
                      if key not in JSON_FIELDS and key != "message"}
            log_data.clear()
            log_data.update(timestamp=_utc(record.created), level=record.levelname,
                            logger=record.name, event=record.message)
            log_data.update(fields)

    return _Formatter("%(message)s")  # type: ignore[no-any-return]


def _utc(created: float) -> str:
    """``created`` as ISO 8601 in UTC, to the millisecond: ``2024-05-01T12:00:00.123Z``."""
    stamp = datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
