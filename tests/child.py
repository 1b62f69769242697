"""A Python child process running a snippet of test code against provision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` (in ``cwd`` if given), its output captured as text
    (60 s at most)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
