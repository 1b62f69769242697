"""The command line: usage errors, exit codes, JSON, secrets, and lazy imports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision import __version__
from provision.cli import app
from provision.entry import main
from provision.sandbox.runner import running_sandbox

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"provision {__version__}"


def test_check_without_files_is_a_usage_error() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2
    assert "give at least one inbox file" in result.stderr


def test_check_with_files_and_sandbox_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "x.yaml"), "--sandbox"])
    assert result.exit_code == 2
    assert "--sandbox" in result.stderr


def test_missing_file_is_exit_2_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["check", str(missing)])
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_input_with_json_prints_only_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nemail: not-an-address\n")
    result = runner.invoke(app, ["check", str(bad), "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["exit_code"] == 2
    assert doc["errors"]
    assert all(e["file"] == str(bad) for e in doc["errors"])
    assert {e["field"] for e in doc["errors"]} >= {"email", "smtp", "imap"}


def test_unreadable_ca_file_is_exit_2(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    inbox = tmp_path / "i.yaml"
    inbox.write_text("{}")
    result = runner.invoke(app, ["check", str(inbox), "--ca-file", str(not_pem)])
    assert result.exit_code == 2
    assert "CA file" in result.stderr


def test_unknown_option_is_exit_2() -> None:
    result = runner.invoke(app, ["check", "--no-such-flag"])
    assert result.exit_code == 2


def test_typer_never_shows_locals() -> None:
    assert app.pretty_exceptions_show_locals is False


def test_internal_error_shows_no_traceback_and_no_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = "canary-secret-in-exception-5150"

    def broken() -> None:
        raise RuntimeError(canary)

    monkeypatch.setattr("provision.cli.app", broken)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    out = capsys.readouterr()
    assert "internal error: RuntimeError" in out.err
    assert canary not in out.err + out.out
    assert "Traceback" not in out.err


def test_cli_start_path_imports_nothing_heavy() -> None:
    """`--help`, `--version` and argument parsing must not pay for the protocol stacks."""
    code = (
        "import sys, provision.cli;"
        "heavy = {'aiosmtplib', 'aioimaplib', 'httpx', 'yaml', 'cryptography', 'aiosmtpd',"
        " 'pymap', 'trustme', 'uvicorn', 'rich'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


async def test_check_sandbox_files_end_to_end_json(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path) as box:
        result = await asyncio.to_thread(
            runner.invoke,
            app,
            ["check", str(box.inbox_file), "--ca-file", str(box.ca_file), "--json"],
        )
        password = (tmp_path / "password").read_text().strip()
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert [i["name"] for i in doc["inboxes"]] == ["Support", "Sales"]
    for inbox in doc["inboxes"]:
        assert [s["stage"] for s in inbox["stages"]] == ["smtp", "imap"]
        assert all(s["status"] in {"passed", "warning"} for s in inbox["stages"])
    assert password not in result.stdout + result.stderr


async def test_wrong_password_exits_14_and_never_prints_it(tmp_path: Path) -> None:
    canary = "Canary-Pw-8c1f0e"
    async with running_sandbox(tmp_path / "box") as box:
        text = box.inbox_file.read_text().replace("${file:password}", canary)
        wrong = tmp_path / "wrong.yaml"
        wrong.write_text(text)
        result = await asyncio.to_thread(
            runner.invoke, app, ["check", str(wrong), "--ca-file", str(box.ca_file)]
        )
        as_json = await asyncio.to_thread(
            runner.invoke, app, ["check", str(wrong), "--ca-file", str(box.ca_file), "--json"]
        )
    assert result.exit_code == 14, result.stdout
    assert "auth-failed" in result.stdout
    assert "smtp.password" in result.stdout
    doc = json.loads(as_json.stdout)
    assert doc["exit_code"] == 14
    import base64

    for out in (result.stdout, result.stderr, as_json.stdout, as_json.stderr):
        assert canary not in out
        assert base64.b64encode(canary.encode()).decode() not in out


def test_check_sandbox_flag_runs_the_main_job() -> None:
    result = runner.invoke(app, ["check", "--sandbox"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Support <support@example.com>" in result.stdout
    assert "exit 0" in result.stdout


async def test_check_reads_standard_input(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path) as box:
        text = box.inbox_file.read_text().replace(
            "${file:password}", (tmp_path / "password").read_text().strip()
        )
        result = await asyncio.to_thread(
            runner.invoke,
            app,
            ["check", "-", "--ca-file", str(box.ca_file), "--json"],
            input=text,
        )
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert [i["file"] for i in doc["inboxes"]] == ["<stdin>", "<stdin>"]


def test_verbose_adds_one_handler_however_often_it_runs() -> None:
    import logging

    logger = logging.getLogger("provision")
    before = list(logger.handlers)
    try:
        for args in (["check", "-v"], ["check"], ["check", "-v"]):
            runner.invoke(app, args)
        # One stderr handler (warnings always, everything with -v), never a second.
        ours = [h for h in logger.handlers if type(h).__module__ == "provision.cli_run"]
        assert len(ours) == 1
    finally:
        for handler in logger.handlers[:]:
            if handler not in before:
                logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_help_gives_each_command_an_uncut_purpose_examples_and_exit_codes() -> None:
    """A newcomer's first look: the command list is not cut, no "<list[str]>", and each
    command's examples only use flags that command has."""
    import re

    from provision.cli_help import _HELP, EXIT_MEANINGS

    top = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"})
    assert top.exit_code == 0
    for name, (purpose, examples, codes) in _HELP.items():
        assert f"{name}  " in top.output
        assert purpose in top.output.replace("\n", " ").replace("  ", " "), name
        own = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "100"})
        assert own.exit_code == 0, own.output
        assert "<list[str]>" not in own.output
        assert "Examples:" in own.output
        assert "Exit codes:" in own.output
        for example in examples:
            assert example.split("#")[0].strip() in own.output
            for flag in re.findall(r"(?<=\s)--[a-z][a-z-]*", example.split("#")[0]):
                target = example.split()[1]
                flags = CliRunner().invoke(app, [target, "--help"], env={"COLUMNS": "100"})
                assert flag in flags.output, (name, example, flag)
        for code in codes:
            assert f"{int(code):>3}  {EXIT_MEANINGS[code]}" in own.output


async def test_quiet_shows_only_what_failed_then_the_summary(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "box") as box:
        text = box.inbox_file.read_text()
        head, sales = text.split("- name: Sales", 1)
        mixed = box.inbox_file.parent / "mixed.yaml"  # beside its ${file:password}
        mixed.write_text(head + "- name: Sales" + sales.replace("${file:password}", "wrong"))
        args = ["check", str(mixed), "--ca-file", str(box.ca_file)]
        loud = await asyncio.to_thread(runner.invoke, app, args)
        quiet = await asyncio.to_thread(runner.invoke, app, [*args, "--quiet"])
    assert loud.exit_code == quiet.exit_code == 14
    assert "Support <support@example.com>" in loud.stdout
    assert "Support <support@example.com>" not in quiet.stdout
    assert "[FAIL] Sales <sales@example.com>" in quiet.stdout
    assert quiet.stdout.rstrip().splitlines()[-1].startswith("check: 2 inboxes, 1 passed, 1 failed")


async def test_set_names_the_server_it_wrote_to_and_plain_http(tmp_path: Path) -> None:
    result = await asyncio.to_thread(runner.invoke, app, ["set", "--sandbox", "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip().splitlines()
    assert lines[-2].startswith("Rocket.Chat: http://127.0.0.1:")
    assert "plain HTTP: credentials and passwords travel unencrypted" in lines[-2]
    assert lines[-1].startswith("set: 2 inboxes, 2 passed (2 created)")


def test_shell_completion_completes_commands_and_options() -> None:
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "provision")

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_PROVISION_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        done = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("provision ch") == ["check"]
    assert complete("provision check --ca") == ["--ca-file"]
    assert "--dry-run" in complete("provision set --d")


async def test_cert_days_reaches_the_probes_of_check() -> None:
    """The sandbox's certificates end in centuries: a huge --cert-days warns on both."""
    args = ["check", "--sandbox", "--json", "--cert-days", "500000"]
    warned = await asyncio.to_thread(runner.invoke, app, args)
    strict = await asyncio.to_thread(runner.invoke, app, [*args, "--strict"])
    default = await asyncio.to_thread(runner.invoke, app, ["check", "--sandbox", "--json"])

    doc = json.loads(warned.stdout)
    assert warned.exit_code == 0, warned.stdout
    assert doc["settings"]["cert_days"] == 500000
    codes = {
        (s["stage"], w["code"]) for i in doc["inboxes"] for s in i["stages"] for w in s["warnings"]
    }
    assert codes == {("smtp", "cert-expiring"), ("imap", "cert-expiring")}
    assert strict.exit_code == 12
    assert default.exit_code == 0
    assert "cert-expiring" not in default.stdout
