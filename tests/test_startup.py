"""Start-up: what a run imports, by module names in a child process (not by time), and the
pydantic-free parameter coercion that keeps Typer's cost off the hot path."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision._version import __version__
from provision.cli import app
from provision.sandbox.ca import SandboxCA
from tests.child import run_python, run_python_async
from tests.servers.mailhost import MailHost

#: Prints, after the run, every imported module name as JSON on stderr's last line; also
#: when the run ends the process itself (``os._exit``: ``cli_run.exit_without_teardown``).
_CHILD = """
import json, os, runpy, sys
def modules():
    sys.stderr.write("\\n" + json.dumps(sorted(sys.modules)) + "\\n")
    sys.stderr.flush()
end = os._exit
os._exit = lambda code: (modules(), end(code))
sys.argv = ["provision", *sys.argv[1:]]
try:
    runpy.run_module("provision", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
modules()
"""


def _imported(*args: str, cwd: Path) -> set[str]:
    done = run_python(_CHILD, *args, cwd=cwd)
    modules: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return set(modules)


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.fixture
def one_inbox(tmp_path: Path) -> Path:
    """One inbox whose servers refuse at once (closed loopback ports): no certificate, no login."""
    inbox = {
        "name": "Start-up",
        "email": "startup@example.com",
        "smtp": {
            "server": "127.0.0.1",
            "port": 9,
            "username": "u",
            "password": "pw-1",
            "secure": False,
        },
        "imap": {
            "server": "127.0.0.1",
            "port": 9,
            "username": "u",
            "password": "pw-1",
            "secure": True,
        },
    }
    path = tmp_path / "inbox.json"
    path.write_text(json.dumps({"inboxes": [inbox]}))
    return path


def test_check_of_a_json_file_imports_only_what_it_needs(one_inbox: Path) -> None:
    modules = _imported("check", str(one_inbox), "--step-timeout", "2", cwd=one_inbox.parent)
    assert {"provision", "aiosmtplib", "aioimaplib"} <= _top(modules)  # it did run the probes
    heavy = {"pydantic", "pydantic_core", "httpx", "rich", "uvicorn", "aiosmtpd", "pymap"}
    # No YAML parser for a JSON file; no certificate parser when no certificate was seen.
    heavy |= {"yaml", "cryptography", "trustme"}
    heavy |= {"prometheus_client"}  # only with --metrics or --serve
    assert heavy.isdisjoint(_top(modules)), heavy & _top(modules)
    unused = ("rocketchat", "sandbox", "inbox.yaml_lines", "inbox.schema", "commands.set")
    unused += ("render.junit", "render.github", "render.json", "render.progress")
    assert not {m for m in modules if m.startswith(tuple(f"provision.{u}" for u in unused))}


async def test_check_of_verified_servers_describes_certificates_without_cryptography(
    tmp_path: Path, sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    """SMTP STARTTLS and IMAP TLS with certificates that verify (``--ca-file``): the
    facts come from OpenSSL (``getpeercert()``), no DER parser is imported."""
    host = await MailHost.start("startup@example.com", "pw-2", sandbox_ca.server_context())
    login = {"server": "localhost", "username": "startup@example.com", "password": "pw-2"}
    inbox = {
        "name": "Verified",
        "email": "startup@example.com",
        "smtp": {**login, "port": host.smtp.port, "secure": False},
        "imap": {**login, "port": host.imap.port, "secure": True},
    }
    path = tmp_path / "inbox.json"
    path.write_text(json.dumps({"inboxes": [inbox]}))
    try:
        args = ("check", "--json", "--ca-file", str(ca_file), str(path))
        _code, out, err = await run_python_async(_CHILD, *args, cwd=tmp_path)
    finally:
        await host.close()
    modules = set(json.loads(err.decode().strip().splitlines()[-1]))
    stages = json.loads(out)["inboxes"][0]["stages"]
    assert [s["status"] for s in stages] == ["passed", "passed"], stages
    for stage in stages:
        assert stage["facts"]["tls"]["certificate"]["names"][0] == "localhost"
    assert stages[1]["facts"]["certificate_verified"] is True
    assert "cryptography" not in _top(modules)


def test_audit_imports_only_what_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rocket.Chat refuses at once (a closed loopback port): the client, nothing of the rest."""
    monkeypatch.setenv("ROCKETCHAT_USER_ID", "u1")
    monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", "t1")
    modules = _imported("audit", "--server", "http://127.0.0.1:9", "--json", cwd=tmp_path)
    assert {"provision", "httpx"} <= _top(modules)  # it did call Rocket.Chat
    # (rich comes with httpx, which imports its command line when click and rich are there.)
    heavy = {"pydantic", "pydantic_core", "uvicorn", "aiosmtpd", "pymap", "yaml"}
    heavy |= {"cryptography", "trustme", "prometheus_client"}
    assert heavy.isdisjoint(_top(modules)), heavy & _top(modules)
    unused = ("sandbox", "inbox.yaml_lines", "inbox.schema", "commands.set", "commands.export")
    unused += ("render.junit", "render.github", "render.progress", "discover")
    assert "provision.commands.audit" in modules
    assert not {m for m in modules if m.startswith(tuple(f"provision.{u}" for u in unused))}


#: Never loaded to print the version; ``logging``: its handler is made when a command
#: sets logging up.
_NOT_FOR_VERSION = {"pydantic", "httpx", "yaml", "aiosmtplib", "aioimaplib", "cryptography"}
_NOT_FOR_VERSION |= {"asyncio", "logging"}
#: provision's modules of the entry point's own answer.
_ENTRY = {"provision._gc", "provision._lazy", "provision._version", "provision.entry"}


def test_version_imports_no_protocol_stack(tmp_path: Path) -> None:
    """``provision --version`` alone is answered by ``provision.entry``, before Typer."""
    modules = _imported("--version", cwd=tmp_path)
    heavy = _NOT_FOR_VERSION | {"typer", "click"}  # typer vendors click as typer._click
    assert heavy.isdisjoint(_top(modules)), heavy & _top(modules)
    assert {m for m in modules if m.startswith("provision.")} <= _ENTRY


def test_version_with_anything_else_goes_to_typer(tmp_path: Path) -> None:
    """Only the one exact argument vector skips Typer; its ``--version`` option takes the rest."""
    modules = _imported("--version", "check", cwd=tmp_path)
    assert "typer" in _top(modules)
    assert _NOT_FOR_VERSION.isdisjoint(_top(modules)), _NOT_FOR_VERSION & _top(modules)
    assert {m for m in modules if m.startswith("provision.")} <= _ENTRY | {
        "provision.cli",
        "provision.cli_coerce",
        "provision.cli_dial",
        "provision.cli_dispatch",
        "provision.cli_help",
        "provision.cli_options",
        "provision.cli_run",
        "provision.errors",
        "provision.results",
    }


def test_the_console_script_is_the_entry_module() -> None:
    """The tests above run ``python -m provision``; the ``provision`` script must start at
    the same place, or ``--version`` alone would pay for Typer again."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts == {"provision": "provision.entry:console"}
    assert (
        "from provision.entry import console"
        in (pyproject.parent / "provision/__main__.py").read_text()
    )


@pytest.mark.parametrize("args", [["--version"], ["--version", "check"]])
def test_version_is_the_same_on_both_paths(args: list[str], tmp_path: Path) -> None:
    """The fast answer and Typer's option print the same bytes, with the same exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "provision", *args],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    typer_path = runner.invoke(app, ["--version"])
    assert (done.returncode, done.stdout, done.stderr) == (0, typer_path.stdout_bytes, b"")
    assert typer_path.exit_code == 0
    assert done.stdout == f"provision {__version__}\n".encode()


@pytest.mark.parametrize("args", [["--version"], ["--version", "check"]])
def test_version_to_a_full_disk_or_no_stdout_shows_no_traceback(
    args: list[str], tmp_path: Path
) -> None:
    """Both paths end alike when the line cannot be written: a full disk is said as such
    (not as a bug), nothing to write to (a closed descriptor) is quiet, never a traceback."""
    with Path("/dev/full").open("wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "provision", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr == b"error: the output could not be written: No space left on device\n"
    assert b"Traceback" not in done.stderr
    closed = subprocess.run(  # the shell starts it with standard output closed
        ["sh", "-c", 'exec "$0" -m provision "$@" >&-', sys.executable, *args],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert (closed.returncode, closed.stderr) == (0, b"")


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "abc"], "Invalid value for '--timeout': 'abc' is not a finite number."),
        (["--timeout", "inf"], "Invalid value for '--timeout': 'inf' is not a finite number."),
        (["--timeout", "nan"], "Invalid value for '--timeout': 'nan' is not a finite number."),
        (["--timeout", "0.01"], "Invalid value for '--timeout': must be at least 0.1."),
        (["-c", "0"], "Invalid value for '--concurrency' / '-c': must be at least 1."),
        (["-c", "1.5"], "Invalid value for '--concurrency' / '-c': '1.5' is not a whole number."),
    ],
)
def test_bad_numbers_are_usage_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["check", *args, "x.yaml"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_numbers_paths_and_lists_arrive_typed(one_inbox: Path, ca_file: Path) -> None:
    """Values reach the command as the annotated types (seen through the JSON report)."""
    args = ["check", "--json", "-c", " 7", "--timeout", "1e1", "--step-timeout", "2"]
    result = runner.invoke(app, [*args, "--ca-file", str(ca_file), str(one_inbox)])
    document = json.loads(result.stdout)
    assert document["settings"]["concurrency"] == 7
    assert document["settings"]["timeout"] == 10.0
    assert document["settings"]["step_timeout"] == 2.0
    assert document["settings"]["ca_file"] == str(ca_file)
    assert [i["file"] for i in document["inboxes"]] == [str(one_inbox)]


def test_every_parameter_uses_the_plain_coercion() -> None:
    """If Typer renames its hook, this fails instead of pydantic quietly coming back."""
    import typer.main
    from typer.core import _TyperParameter

    from provision.cli_coerce import _PlainRuntimeParam

    group = typer.main.get_command(app)
    commands = [group, *group.commands.values()]  # type: ignore[attr-defined]
    for command in commands:
        ctx = command.make_context(command.name, ["--help"], resilient_parsing=True)
        for param in command.get_params(ctx):
            assert isinstance(param, _TyperParameter), param.name
            assert isinstance(param._runtime_param, _PlainRuntimeParam), (command.name, param.name)
