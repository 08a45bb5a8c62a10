"""The ``idgen`` command, run as a user runs it: a separate process."""
from __future__ import annotations

import subprocess
import sys


def idgen(*args: str, cwd: str | None = None, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``idgen ARGS...``; returns its exit status and output."""
    return subprocess.run([sys.executable, "-m", "idgen_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
