"""A finished run of the ``provision`` program ends without the interpreter's teardown
(``entry.exit_without_teardown``), and loses nothing by it: every byte of its output, its
exit code. Called as a function (``entry.main``), it raises ``SystemExit`` as before."""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from provision.entry import exit_without_teardown, main
from tests.child import run_python

# The console entry, with an exit handler that says whether the interpreter's own
# teardown ran (it runs atexit handlers first).
_CHILD = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("teardown ran\\n"))
sys.argv = ["provision", *sys.argv[1:]]
from provision.entry import console
console()
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _inboxes(tmp_path: Path, count: int) -> Path:
    port = _closed_port()
    server = {"server": "127.0.0.1", "port": port, "username": "u", "password": "pw-exit-1"}
    inboxes = [
        {
            "name": f"Exit {i:03d}",
            "email": f"exit{i}@example.com",
            "smtp": {**server, "secure": False},
            "imap": {**server, "secure": True},
        }
        for i in range(count)
    ]
    path = tmp_path / "inboxes.json"
    path.write_text(json.dumps({"inboxes": inboxes}))
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_python(_CHILD, *args, cwd=cwd)


def test_a_finished_run_skips_the_teardown_and_its_whole_report_arrives(tmp_path: Path) -> None:
    # 60 failed inboxes: a JSON report well past a pipe's 64 KiB buffer.
    done = _run("check", str(_inboxes(tmp_path, 60)), "--json", "-c", "20", cwd=tmp_path)
    assert len(done.stdout) > 65536
    report = json.loads(done.stdout)
    assert len(report["inboxes"]) == 60
    assert done.returncode == report["exit_code"] != 0  # refused ports: a failed check
    assert "teardown ran" not in done.stderr


def test_a_usage_error_keeps_its_exit_code_and_message(tmp_path: Path) -> None:
    done = _run("check", "--concurrency", "0", str(_inboxes(tmp_path, 1)), cwd=tmp_path)
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr
    assert "teardown ran" not in done.stderr


def test_a_full_disk_under_the_report_is_exit_1_and_said_so(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, "check", str(_inboxes(tmp_path, 1)), "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr == "error: the output could not be written: No space left on device\n"
    assert "Traceback" not in done.stderr


class _Unflushable(io.StringIO):
    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_an_output_that_cannot_be_flushed_is_left_to_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shortcut returns (the caller re-raises, the interpreter exits as before);
    ``os._exit`` here would fail the test (conftest's ``no_process_exit``)."""
    monkeypatch.setattr(sys, "stdout", _Unflushable())
    exit_without_teardown(SystemExit(0))


def test_main_as_a_function_raises_and_leaves_its_caller_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["provision", "check", "--help"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    assert "provision check [OPTIONS]" in capsys.readouterr().out


def test_a_flushed_run_does_end_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[int] = []
    monkeypatch.setattr(os, "_exit", ended.append)
    exit_without_teardown(SystemExit(11))
    assert ended == [11]


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "error: the output could not be "),
        (OSError(errno.EROFS, "Read-only file system"), "error: the output could not be "),
        (OSError(errno.EBADF, "Bad file descriptor"), "internal error: OSError (a bug"),
        (FileNotFoundError(errno.ENOENT, "gone"), "internal error: FileNotFoundError (a bug"),
    ],
)
def test_only_an_output_that_did_not_fit_is_not_called_a_bug(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: OSError,
    said: str,
) -> None:
    def failing() -> None:
        raise error

    monkeypatch.setattr("provision.cli.app", failing)
    monkeypatch.setattr(sys, "argv", ["provision", "check", "inboxes.yaml"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 1
    assert capsys.readouterr().err.startswith(said)
