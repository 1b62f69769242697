"""CI-native reports: JUnit XML, GitHub annotations and step summary, progress, and the
example CI files. Real runs go against the sandbox's servers over loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.check import check
from provision.inbox import load_inboxes
from provision.models import ProbeOptions
from provision.render.ci import CiOutputs
from provision.render.github import (
    ANNOTATION_LIMIT,
    Annotation,
    escape_data,
    escape_property,
    render_annotations,
    render_summary,
    report_annotations,
)
from provision.render.junit import render_junit
from provision.render.progress import Progress
from provision.results import (
    FailureClass,
    Finding,
    InboxResult,
    Report,
    Stage,
    StageResult,
    Status,
)
from provision.sandbox.runner import Sandbox, running_sandbox

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CANARY = "Canary-Ci-Pw-4b7e21"


def _wrong_smtp_password(box: Sandbox) -> tuple[Path, int]:
    """The sandbox's inbox file with Support's SMTP password wrong (the canary), written
    beside the original (so ``${file:password}`` still resolves); the canary's line."""
    text = box.inbox_file.read_text().replace("${file:password}", CANARY, 1)
    wrong = box.directory / "wrong.yaml"
    wrong.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if CANARY in row)
    assert "password" in text.splitlines()[line - 1]
    return wrong, line


def _assert_no_secret(*outputs: str) -> None:
    b64 = base64.b64encode(CANARY.encode()).decode()
    for out in outputs:
        assert CANARY not in out
        assert b64 not in out


def _parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 (our own output, not untrusted input)


def _counts(xml: str) -> dict[str, int]:
    root = _parse(xml)
    suite = root.find("testsuite")
    assert suite is not None
    return {key: int(suite.get(key, "-1")) for key in ("tests", "failures", "errors", "skipped")}


def _case(xml: str, classname: str, name: str) -> ET.Element:
    found = [
        case
        for case in _parse(xml).iter("testcase")
        if case.get("classname") == classname and case.get("name") == name
    ]
    assert len(found) == 1, xml
    return found[0]


# --- JUnit from real runs ---------------------------------------------------------------


async def test_junit_of_a_check_run_has_a_testcase_per_inbox_and_stage(tmp_path: Path) -> None:
    done: list[InboxResult] = []
    async with running_sandbox(tmp_path / "box") as box:
        wrong, line = _wrong_smtp_password(box)
        loaded = load_inboxes([str(wrong)])
        report = await check(
            loaded.inboxes,
            ProbeOptions(ca_file=box.ca_file, step_timeout=5, timeout=30),
            input_warnings=loaded.warnings,
            on_inbox_done=done.append,
        )
    assert sorted(r.name for r in done) == ["Sales", "Support"]  # the progress hook saw both
    xml = render_junit(report, loaded.inboxes)
    assert _counts(xml) == {"tests": 4, "failures": 1, "errors": 0, "skipped": 0}
    suite = _parse(xml).find("testsuite")
    assert suite is not None
    assert suite.get("name") == "provision check"
    failed = _case(xml, "Support", "smtp")
    assert failed.get("file") == str(wrong)
    assert failed.get("line") == str(line)
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == "auth-failed"
    assert failure.text is not None
    assert failure.text.startswith("auth-failed: ")
    assert "\nhint: " in failure.text
    assert f"field: smtp.password ({wrong}:{line})" in failure.text
    for name, stage in (("Support", "imap"), ("Sales", "smtp"), ("Sales", "imap")):
        case = _case(xml, name, stage)
        assert case.find("failure") is None
        assert float(case.get("time", "0")) > 0
    _assert_no_secret(xml, render_summary(report, loaded.inboxes))
    _assert_no_secret(render_annotations(report_annotations(report, loaded.inboxes)))


async def test_cli_check_under_github_actions(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    junit = tmp_path / "out" / "check.xml"
    junit.parent.mkdir()
    async with running_sandbox(tmp_path / "box") as box:
        wrong, line = _wrong_smtp_password(box)
        result = await asyncio.to_thread(
            runner.invoke,
            app,
            ["check", str(wrong), "--ca-file", str(box.ca_file), "--json", "--junit", str(junit)],
            env={
                "GITHUB_ACTIONS": "true",
                "GITHUB_STEP_SUMMARY": str(summary),
                "GITHUB_WORKSPACE": str(tmp_path),
            },
        )
    assert result.exit_code == 14, result.stdout + result.stderr
    assert json.loads(result.stdout)["exit_code"] == 14  # stdout is still only JSON
    errors = [row for row in result.stderr.splitlines() if row.startswith("::error ")]
    assert len(errors) == 1, result.stderr
    # file relative to the workspace, line of smtp.password, title and message escaped
    assert errors[0].startswith(
        f"::error file=box/wrong.yaml,line={line},title=Support%3A smtp auth-failed::"
    )
    assert "%0Ahint: " in errors[0]
    assert errors[0].endswith("%0Afield: smtp.password")
    assert not [row for row in result.stderr.splitlines() if row.startswith("::warning")]
    markdown = summary.read_text()
    assert markdown.startswith("earlier step\n")  # appended, not overwritten
    assert "### ❌ provision check: 2 inboxes, 1 passed, 1 failed (exit 14" in markdown
    assert "| Inbox | SMTP | IMAP | Problems |" in markdown
    support = next(row for row in markdown.splitlines() if row.startswith("| Support"))
    assert "❌ failed | ✅ passed" in support
    assert f"`auth-failed` `smtp.password` at `{wrong}:{line}`" in support
    sales = next(row for row in markdown.splitlines() if row.startswith("| Sales"))
    assert sales.count("✅ passed") == 2
    xml = junit.read_text()
    assert _counts(xml) == {"tests": 4, "failures": 1, "errors": 0, "skipped": 0}
    assert "\r" not in result.stderr  # stderr is not a terminal: no progress
    _assert_no_secret(result.stdout, result.stderr, markdown, xml)


async def test_cli_set_junit_and_summary_show_skipped_stages_and_actions(
    tmp_path: Path,
) -> None:
    summary = tmp_path / "summary.md"
    junit = tmp_path / "set.xml"
    async with running_sandbox(tmp_path / "box") as box:
        wrong, line = _wrong_smtp_password(box)
        result = await asyncio.to_thread(
            runner.invoke,
            app,
            ["set", str(wrong), "--ca-file", str(box.ca_file), "--junit", str(junit)],
            env={
                "GITHUB_ACTIONS": "true",
                "GITHUB_STEP_SUMMARY": str(summary),
                "ROCKETCHAT_URL": box.rocketchat_url,
                "ROCKETCHAT_USER_ID": box.user_id,
                "ROCKETCHAT_AUTH_TOKEN": box.token.reveal(),
            },
        )
        token = box.token.reveal()
    assert result.exit_code == 14, result.stdout + result.stderr
    xml = junit.read_text()
    # Support: smtp failed, submit and verify skipped; Sales: all four passed (created)
    assert _counts(xml) == {"tests": 8, "failures": 1, "errors": 0, "skipped": 2}
    assert _case(xml, "Support", "submit").find("skipped") is not None
    assert _case(xml, "Support", "verify").find("skipped") is not None
    created = _case(xml, "Sales", "submit").findtext("system-out") or ""
    assert created.startswith("created inbox ")
    assert _parse(xml).find("testsuite").get("name") == "provision set"  # type: ignore[union-attr]
    errors = [row for row in result.stderr.splitlines() if row.startswith("::error ")]
    assert len(errors) == 1, result.stderr
    assert f"file={wrong},line={line}," in errors[0]  # no workspace: the path as given
    markdown = summary.read_text()
    assert "| Inbox | SMTP | IMAP | submit | verify | action | Problems |" in markdown
    support = next(row for row in markdown.splitlines() if row.startswith("| Support"))
    assert "| ❌ failed | ✅ passed | ⏭️ skipped | ⏭️ skipped | skipped |" in support
    sales = next(row for row in markdown.splitlines() if row.startswith("| Sales"))
    assert "| created |" in sales
    _assert_no_secret(result.stdout, result.stderr, markdown, xml)
    for out in (result.stdout, result.stderr, markdown, xml):
        assert token not in out


def test_cli_without_github_actions_writes_no_annotations(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    result = runner.invoke(
        app,
        ["check", str(tmp_path / "missing.yaml")],
        env={"GITHUB_ACTIONS": "false", "GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 2
    assert "::error" not in result.stdout + result.stderr
    assert not summary.exists()


# --- input errors and bad --junit paths ---------------------------------------------------


def test_bad_input_is_annotated_and_reported_in_junit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nemail: not-an-address\n")
    junit = tmp_path / "input.xml"
    summary = tmp_path / "summary.md"
    result = runner.invoke(
        app,
        ["check", str(bad), "--junit", str(junit), "--json"],
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 2
    assert json.loads(result.stdout)["exit_code"] == 2
    assert f"::error file={bad},line=2,title=provision%3A invalid input" in result.stderr
    xml = junit.read_text()
    counts = _counts(xml)
    assert counts["tests"] == counts["failures"] >= 3  # email, smtp, imap at least
    failure = next(_parse(xml).iter("failure"))
    assert failure.get("message") == "invalid-input"
    assert "provision check: invalid input (exit 2)" in summary.read_text()


@pytest.mark.parametrize("command", ["check", "set"])
def test_unwritable_junit_path_is_exit_2_before_any_probe(tmp_path: Path, command: str) -> None:
    inbox = tmp_path / "i.yaml"
    inbox.write_text("{}")  # would be a bad-input error if it were read
    for target, reason in (
        (tmp_path / "no-such-dir" / "r.xml", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        result = runner.invoke(
            app,
            [command, str(inbox), "--junit", str(target)]
            + (["--server", "https://chat.invalid"] if command == "set" else []),
        )
        assert result.exit_code == 2
        assert "cannot write the JUnit report" in result.stderr
        assert reason in result.stderr
        assert "inbox" not in result.stderr.replace(str(inbox), "")  # the file was never read
        assert result.stdout == ""


def test_junit_write_failure_after_a_passing_run_is_exit_2(tmp_path: Path) -> None:
    target = tmp_path / "gone" / "r.xml"
    target.parent.mkdir()
    ci = CiOutputs.from_environ("check", target, environ={}, stream=io.StringIO())
    target.parent.rmdir()
    error = ci.finish(Report(command="check"))
    assert error is not None
    assert "cannot write the JUnit report" in error


# --- the renderers on synthetic reports -------------------------------------------------


def _inbox_file(tmp_path: Path, max_retries: int = 10) -> Path:
    path = tmp_path / "inboxes.yaml"
    path.write_text(
        "inboxes:\n"
        "  - name: Support | <b>Desk</b>\n"
        "    email: support@example.com\n"
        "    smtp:\n"
        "      server: smtp.example.com\n"
        "      port: 587\n"
        "      username: support@example.com\n"
        f"      password: {CANARY}\n"
        "      secure: false\n"
        "    imap:\n"
        "      server: imap.example.com\n"
        "      port: 993\n"
        "      username: support@example.com\n"
        f"      password: {CANARY}\n"
        "      secure: true\n"
        f"      maxRetries: {max_retries}\n"
    )
    return path


def _report(tmp_path: Path, *, strict: bool = False, max_retries: int = 10) -> tuple[Report, Any]:
    loaded = load_inboxes([str(_inbox_file(tmp_path, max_retries))])
    inbox = loaded.inboxes[0]
    smtp = StageResult(stage=Stage.SMTP, elapsed_ms=12.5)
    smtp.warn(
        Finding(
            code="plaintext-credentials",
            message="AUTH in clear: the server offered no STARTTLS\x1b[31m\x00",
            hint="use port 465 with smtp.secure: true",
            field="smtp.secure",
        )
    )
    imap = StageResult(stage=Stage.IMAP, elapsed_ms=8.0)
    result = InboxResult(
        name=inbox.name,
        email=inbox.email,
        file=inbox.source.file,
        line=inbox.source.line,
        stages=[smtp, imap],
        warnings=list(loaded.warnings_for(0)),
    )
    return Report(command="check", strict=strict, inboxes=[result]), loaded.inboxes


def test_warnings_are_system_out_or_failures_under_strict(tmp_path: Path) -> None:
    report, inboxes = _report(tmp_path, max_retries=2)
    xml = render_junit(report, inboxes)  # control characters must not break the XML
    assert _counts(xml) == {"tests": 2, "failures": 0, "errors": 0, "skipped": 0}
    name = "Support | <b>Desk</b>"
    smtp = _case(xml, name, "smtp")
    out = smtp.findtext("system-out") or ""
    assert out.startswith("warning plaintext-credentials [smtp.secure at ")
    assert "\\x1b[31m\\x00" in out  # escaped visibly, not dropped silently
    imap = _case(xml, name, "imap")  # the input warning belongs with the imap stage
    assert "warning low-max-retries [imap.maxRetries" in (imap.findtext("system-out") or "")

    strict, inboxes = _report(tmp_path, strict=True, max_retries=2)
    xml = render_junit(strict, inboxes)
    assert _counts(xml) == {"tests": 2, "failures": 2, "errors": 0, "skipped": 0}
    failure = _case(xml, name, "imap").find("failure")
    assert failure is not None
    assert failure.get("message") == "low-max-retries"
    assert failure.get("type") == "warning"
    _assert_no_secret(xml)


def test_warning_annotations_point_at_their_field(tmp_path: Path) -> None:
    report, inboxes = _report(tmp_path, max_retries=2)
    text = _inbox_file(tmp_path, 2).read_text().splitlines()
    secure_line = next(n for n, row in enumerate(text, 1) if "secure: false" in row)
    retries_line = next(n for n, row in enumerate(text, 1) if "maxRetries" in row)
    lines = render_annotations(report_annotations(report, inboxes)).splitlines()
    assert [row.split(" ", 1)[0] for row in lines] == ["::warning", "::warning"]
    assert {int(re.search(r",line=(\d+),", row).group(1)) for row in lines} == {  # type: ignore[union-attr]
        secure_line,
        retries_line,
    }
    strict, inboxes = _report(tmp_path, strict=True, max_retries=2)
    lines = render_annotations(report_annotations(strict, inboxes)).splitlines()
    assert [row.split(" ", 1)[0] for row in lines] == ["::error", "::error"]
    _assert_no_secret(*lines)


def test_escaping_follows_the_actions_toolkit() -> None:
    assert escape_data("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext: a,b"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = Annotation("error", "x\ny", title="T: 1,2", file="dir/a,b:c.yaml", line=3).command()
    assert line == "::error file=dir/a%2Cb%3Ac.yaml,line=3,title=T%3A 1%2C2::x%0Ay"
    assert Annotation("warning", "plain").command() == "::warning::plain"


def test_annotations_are_capped_like_github_with_a_notice() -> None:
    many = [Annotation("error", f"e{i}") for i in range(15)]
    many += [Annotation("warning", f"w{i}") for i in range(3)]
    lines = render_annotations(many).splitlines()
    assert sum(row.startswith("::error") for row in lines) == ANNOTATION_LIMIT
    assert sum(row.startswith("::warning") for row in lines) == 3
    assert lines[-1].startswith("::notice title=provision::5 more errors not annotated")


def test_stdin_has_no_file_and_paths_are_made_relative_to_the_workspace(tmp_path: Path) -> None:
    result = InboxResult(name="A", email="a@example.com", file="<stdin>", line=3)
    result.stages.append(StageResult(stage=Stage.SMTP).fail(FailureClass.AUTH_FAILED, "no"))
    report = Report(command="check", inboxes=[result])
    (only,) = report_annotations(report, workspace=str(tmp_path))
    assert only.file is None
    assert only.command().startswith("::error title=")
    result.file = "conf/inboxes.yaml"
    (only,) = report_annotations(report, workspace=str(tmp_path), cwd=str(tmp_path / "sub"))
    assert only.file == "sub/conf/inboxes.yaml"
    (only,) = report_annotations(report, workspace="/elsewhere", cwd=str(tmp_path))
    assert only.file == "conf/inboxes.yaml"


def test_summary_escapes_markdown_and_html(tmp_path: Path) -> None:
    report, inboxes = _report(tmp_path)
    markdown = render_summary(report, inboxes)
    row = next(r for r in markdown.splitlines() if r.startswith("| Support"))
    assert "<b>" not in markdown
    assert "Support \\| &lt;b&gt;Desk&lt;/b&gt; &lt;support@example.com&gt;" in row
    assert row.count(" | ") == 3  # inbox, smtp, imap, problems: no cell broken by a '|'
    assert "⚠️ `plaintext-credentials` `smtp.secure`" in row


def test_summary_of_a_large_batch_lists_only_what_did_not_pass() -> None:
    inboxes = []
    for i in range(150):
        result = InboxResult(name=f"n{i}", email=f"n{i}@example.com")
        smtp = StageResult(stage=Stage.SMTP)
        if i % 50 == 0:
            smtp.fail(FailureClass.PORT_CLOSED, "refused")
        result.stages += [smtp, StageResult(stage=Stage.IMAP)]
        inboxes.append(result)
    markdown = render_summary(Report(command="check", inboxes=inboxes))
    rows = [r for r in markdown.splitlines() if r.startswith("| n")]
    assert [r.split(" ", 2)[1] for r in rows] == ["n0", "n50", "n100"]
    assert "147 more inboxes passed (not listed)." in markdown


def test_internal_error_is_a_junit_error_and_skipped_carries_its_reason() -> None:
    result = InboxResult(name="A", email="a@example.com")
    result.stages.append(
        StageResult(stage=Stage.SMTP).fail(FailureClass.INTERNAL, "internal error (KeyError)")
    )
    skipped = StageResult(stage=Stage.SUBMIT, status=Status.SKIPPED, message="not sent")
    result.stages.append(skipped)
    xml = render_junit(Report(command="set", inboxes=[result]))
    assert _counts(xml) == {"tests": 2, "failures": 0, "errors": 1, "skipped": 1}
    node = _case(xml, "A", "submit").find("skipped")
    assert node is not None
    assert node.get("message") == "not sent"


# --- progress -------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _result(status: Status) -> InboxResult:
    stage = StageResult(stage=Stage.SMTP)
    if status is Status.FAILED:
        stage.fail(FailureClass.AUTH_FAILED, "no")
    return InboxResult(name="x", email="x@example.com", stages=[stage])


def test_progress_redraws_one_line_on_a_terminal() -> None:
    tty = _Terminal()
    progress = Progress(3, tty, interval=0)
    progress.start()
    for status in (Status.PASSED, Status.FAILED, Status.PASSED):
        progress(_result(status))
    progress.close()
    out = tty.getvalue()
    assert "\n" not in out
    assert "\r\x1b[K[0/3] probing..." in out
    assert "\r\x1b[K[2/3] probing... (1 failed)" in out
    assert "\r\x1b[K[3/3] probing... (1 failed)" in out
    assert out.endswith("\r\x1b[K")


def test_progress_is_silent_off_a_terminal_or_for_one_inbox(tmp_path: Path) -> None:
    loaded = load_inboxes([str(_inbox_file(tmp_path))])
    quiet = io.StringIO()
    ci = CiOutputs.from_environ("check", environ={}, stream=quiet)
    assert ci.started(loaded.inboxes * 3) is None
    ci.finish(Report(command="check"))
    assert quiet.getvalue() == ""
    tty = _Terminal()
    ci = CiOutputs.from_environ("check", environ={}, stream=tty)
    assert ci.started(loaded.inboxes) is None  # one inbox: nothing to show
    assert tty.getvalue() == ""
    callback = ci.started(loaded.inboxes * 2)
    assert callback is not None
    callback(_result(Status.PASSED))
    ci.finish(Report(command="check"))
    assert tty.getvalue().endswith("\r\x1b[K")


def test_progress_for_set_says_what_comes_after_the_probes() -> None:
    tty = _Terminal()
    progress = Progress(2, tty, after="submitting to Rocket.Chat...", interval=0)
    progress(_result(Status.PASSED))
    progress(_result(Status.PASSED))
    assert tty.getvalue().endswith("[2/2] probed; submitting to Rocket.Chat...")


# --- the example CI files ---------------------------------------------------------------------


def _scripts(node: object) -> Iterator[str]:
    """Every shell script in a CI file: GitHub `run:`, GitLab `script:`/`before_script:`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                yield value
            elif key in ("script", "before_script", "after_script"):
                yield from ([value] if isinstance(value, str) else value)
            else:
                yield from _scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scripts(item)


def _provision_commands(path: Path) -> list[list[str]]:
    commands = []
    for script in _scripts(yaml.safe_load(path.read_text())):
        for line in script.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "provision":
                commands.append(words[1:])
    return commands


def _help_options(command: str) -> set[str]:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.stdout
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", result.stdout))


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_example_ci_files_run_commands_that_exist(name: str, tmp_path: Path) -> None:
    commands = _provision_commands(EXAMPLES / name)
    assert [c[0] for c in commands] == ["check", "set"]  # check on review, set on deploy
    for command, *args in commands:
        options = {a.split("=", 1)[0] for a in args if a.startswith("--")}
        assert "--junit" in options
        assert options <= _help_options(command), (command, options)
        files = [a for a in args if not a.startswith("-") and a.endswith((".yaml", ".yml"))]
        assert files == ["examples/inboxes.yaml"]
        # The arguments parse (values where an option needs one), without running anything.
        import typer.main

        group = typer.main.get_command(app)
        sub = group.commands[command]  # type: ignore[attr-defined]
        sub.make_context(command, list(args), resilient_parsing=False)


def test_example_ci_files_take_every_secret_from_the_secret_store() -> None:
    document = yaml.safe_load((EXAMPLES / "inboxes.yaml").read_text())
    passwords = [i[p]["password"] for i in document["inboxes"] for p in ("smtp", "imap")]
    variables = {re.fullmatch(r"\$\{([A-Z0-9_]+)\}", p).group(1) for p in passwords}  # type: ignore[union-attr]
    assert variables == {
        "SUPPORT_SMTP_PASSWORD",
        "SUPPORT_IMAP_PASSWORD",
        "SALES_SMTP_PASSWORD",
        "SALES_IMAP_PASSWORD",
    }
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as True
    assert {"pull_request", "push"} <= set(triggers)
    steps = {
        job: [s for s in spec["steps"] if "provision " in str(s.get("run", ""))]
        for job, spec in workflow["jobs"].items()
    }
    needs = {
        "check": variables,
        "set": variables | {f"ROCKETCHAT_{v}" for v in ("URL", "USER_ID", "AUTH_TOKEN")},
    }
    for job, (step,) in steps.items():
        env = step["env"]
        assert set(env) == needs[job]
        for key, value in env.items():
            assert value == f"${{{{ secrets.{key} }}}}"
    gitlab = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    for job in ("check inboxes", "set inboxes"):
        assert gitlab[job]["artifacts"]["reports"]["junit"].endswith(".xml")
        assert gitlab[job]["artifacts"]["when"] == "always"
    assert "merge_request_event" in str(gitlab["check inboxes"]["rules"])
    assert "CI_DEFAULT_BRANCH" in str(gitlab["set inboxes"]["rules"])
    # No secret value is written in any example: only names.
    for path in EXAMPLES.iterdir():
        assert not re.search(
            r"(?i)(password|token)\s*[:=]\s*['\"]?[A-Za-z0-9]{8,}", path.read_text()
        )


def test_example_inbox_file_is_valid() -> None:
    env = dict.fromkeys(
        (
            "SUPPORT_SMTP_PASSWORD",
            "SUPPORT_IMAP_PASSWORD",
            "SALES_SMTP_PASSWORD",
            "SALES_IMAP_PASSWORD",
        ),
        "x-Example-1",
    )
    loaded = load_inboxes([str(EXAMPLES / "inboxes.yaml")], environ=env)
    assert [i.name for i in loaded.inboxes] == ["Support", "Sales"]
    assert loaded.warnings == {}
