"""A Python child process running a snippet of test code against provision."""

from __future__ import annotations

import asyncio
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


async def run_python_async(code: str, *args: str, cwd: Path) -> tuple[int, bytes, bytes]:
    """:func:`run_python` for a test whose servers run on its own event loop: the exit
    code, stdout and stderr (60 s at most)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await child.communicate()
    except TimeoutError:
        child.kill()
        await child.wait()
        raise
    assert child.returncode is not None
    return child.returncode, out, err
