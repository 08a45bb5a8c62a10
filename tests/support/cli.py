"""The ``idgen`` command, run as a user runs it: a separate process."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable


def idgen(*args: str, cwd: str | None = None, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``idgen ARGS...``; returns its exit status and output."""
    return subprocess.run([sys.executable, "-m", "idgen_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def db_args(urls: Iterable[str]) -> list[str]:
    """``--db URL`` for each URL."""
    return [arg for url in urls for arg in ("--db", url)]


def init_db(*urls: str) -> None:
    """``idgen init-db --db URL...``, which must succeed."""
    result = idgen("init-db", *db_args(urls))
    assert result.returncode == 0, result.stderr


def add_biz(biz_type: str, *urls: str, step: int | None = None) -> None:
    """``idgen add-biz BIZ_TYPE [--step STEP] --db URL...``, which must succeed."""
    result = idgen("add-biz", biz_type, *(["--step", str(step)] if step is not None else []),
                   *db_args(urls))
    assert result.returncode == 0, result.stderr
