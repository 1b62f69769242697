"""`provision sandbox` prints commands that work exactly as printed, from the shell the
user has (provision only in .venv/bin, as after the README's install)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from provision.cli_help import invocation


def test_invocation_names_what_the_shell_can_run(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "provision"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    old = os.environ.get("PATH", "")
    try:
        os.environ["PATH"] = "/usr/bin:/bin"
        assert invocation(str(script)) == str(script)
        assert invocation("/somewhere/provision/__main__.py").endswith(" -m provision")
        os.environ["PATH"] = f"{script.parent}:/usr/bin:/bin"
        assert invocation(str(script)) == "provision"
    finally:
        os.environ["PATH"] = old


def test_the_printed_commands_run_as_printed(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "provision"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROCKETCHAT_")}
    env["PATH"] = "/usr/bin:/bin"  # provision is not on PATH, as after the README's install
    with subprocess.Popen(
        [str(exe), "sandbox", "--dir", str(tmp_path / "box")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    ) as proc:
        watchdog = threading.Timer(30, proc.kill)  # a sandbox that never speaks ends the read
        watchdog.start()
        try:
            assert proc.stdout is not None
            printed: list[str] = []
            for line in proc.stdout:
                printed.append(line.rstrip("\n"))
                if line.lstrip().startswith(f"{exe} set "):
                    break
            commands = [p.strip() for p in printed if p.startswith("  ") and ":" not in p[:16]]
            check, source, write = commands[-3:]
            assert check.startswith(f"{exe} check ")
            done = subprocess.run(
                ["bash", "-c", check], env=env, capture_output=True, text=True, timeout=40
            )
            assert done.returncode == 0, done.stdout + done.stderr
            done = subprocess.run(
                ["bash", "-c", f"{source}\n{write}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=40,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "created" in done.stdout
        finally:
            watchdog.cancel()
            proc.terminate()
            proc.wait(timeout=10)
