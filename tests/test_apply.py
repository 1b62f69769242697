"""`provision set` against the Rocket.Chat double over real HTTP, with real mail servers.

Assertions are on what the double saw: bodies and types, auth headers, which
requests were (not) made.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.set import SetOptions, set_inboxes
from provision.inbox import load_inboxes
from provision.models import ProbeOptions, Secret
from provision.results import Action, ExitCode, FailureClass, Report, Status
from provision.rocketchat.credentials import TokenAuth
from provision.sandbox.runner import Sandbox, running_sandbox
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat

INBOX_PATHS = ("/api/v1/email-inbox", "/api/v1/email-inbox.search")


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path / "box", double=FaultyRocketChat()) as sandbox:
        yield sandbox


def _target(box: Sandbox, **kw: object) -> SetOptions:
    return SetOptions(
        server=box.rocketchat_url,
        credentials=TokenAuth(user_id=box.user_id, token=box.token),
        **kw,  # type: ignore[arg-type]
    )


def _options(box: Sandbox, **kw: object) -> ProbeOptions:
    return ProbeOptions(ca_file=box.ca_file, step_timeout=3, timeout=30, **kw)  # type: ignore[arg-type]


async def _set(box: Sandbox, file: Path | None = None, **kw: object) -> Report:
    loaded = load_inboxes([str(file or box.inbox_file)])
    strict = bool(kw.pop("strict", False))
    return await set_inboxes(
        loaded.inboxes,
        _options(box, strict=strict),
        _target(box, **kw),
        input_warnings=loaded.warnings,
    )


def _inbox_requests(box: Sandbox) -> list[tuple[str, str]]:
    return [
        (r.method, r.path)
        for r in box.rocketchat.requests
        if r.path.startswith("/api/v1/email-inbox")
    ]


async def test_create_then_unchanged_with_exact_body(box: Sandbox) -> None:
    first = await _set(box)
    assert first.exit_code is ExitCode.OK
    assert [i.extra["action"] for i in first.inboxes] == [Action.CREATED, Action.CREATED]
    posts = box.rocketchat.requests_to("POST", "/api/v1/email-inbox")
    assert len(posts) == 2
    body = posts[0].body
    password = (box.directory / "password").read_text().strip()
    department = box.rocketchat.departments[0]
    assert body == {
        "active": True,
        "name": "Support",
        "email": "support@example.com",
        "description": "",
        "senderInfo": "Support (sandbox)",
        "department": department["_id"],  # the name "Support" resolved to its id
        "smtp": {
            "server": "localhost",
            "port": box.smtp_starttls_port,
            "username": "support@example.com",
            "password": password,
            "secure": False,
        },
        "imap": {
            "server": "localhost",
            "port": box.imap_tls_port,
            "username": "support@example.com",
            "password": password,
            "secure": True,
            "maxRetries": 10,
        },
    }
    assert "_id" not in body
    for request in box.rocketchat.requests:
        if request.path not in ("/api/info",):
            assert request.headers["x-auth-token"] == box.token.reveal()
            assert request.headers["x-user-id"] == box.user_id

    before = len(box.rocketchat.requests)
    second = await _set(box)
    assert [i.extra["action"] for i in second.inboxes] == [Action.UNCHANGED] * 2
    assert second.exit_code is ExitCode.OK
    later = box.rocketchat.requests[before:]
    assert not [r for r in later if r.method == "POST" and r.path == "/api/v1/email-inbox"]
    assert box.rocketchat.logged_out_tokens == []


async def test_password_change_is_an_update_shown_only_as_changed(box: Sandbox) -> None:
    await _set(box)
    stored = box.rocketchat.requests_to("POST", "/api/v1/email-inbox")
    first_id = None
    for inbox in box.rocketchat.inboxes.values():
        if inbox["email"] == "support@example.com":
            first_id = inbox["_id"]
            inbox["smtp"]["password"] = "changed-behind-our-back"
    report = await _set(box)
    support = report.inboxes[0]
    assert support.extra == {"action": Action.UPDATED, "id": first_id}
    submit = support.stages[2]
    assert submit.facts["changes"] == [{"field": "smtp.password", "change": "changed"}]
    assert "changed-behind-our-back" not in json.dumps(report.to_json())
    update = box.rocketchat.requests_to("POST", "/api/v1/email-inbox")[len(stored)]
    assert update.body["_id"] == first_id
    assert update.body["imap"]["maxRetries"] == 10


async def test_removing_the_department_sends_all_on_update(box: Sandbox) -> None:
    await _set(box)
    text = box.inbox_file.read_text().replace("    department: Support\n", "", 1)
    file = box.directory / "nodept.yaml"
    file.write_text(text)
    report = await _set(box, file)
    assert report.inboxes[0].extra["action"] == Action.UPDATED
    last = box.rocketchat.requests_to("POST", "/api/v1/email-inbox")[-1]
    assert last.body["department"] == "All"
    assert "department" not in box.rocketchat.stored(last.body["_id"])


async def test_failed_probe_sends_nothing_to_the_inbox_endpoints(box: Sandbox) -> None:
    text = box.inbox_file.read_text().replace("${file:password}", "wrong-password", 1)
    file = box.directory / "wrong.yaml"
    file.write_text(text)
    report = await _set(box, file)
    support, sales = report.inboxes
    assert support.stages[0].failure is FailureClass.AUTH_FAILED
    assert [s.status for s in support.stages[2:]] == [Status.SKIPPED, Status.SKIPPED]
    assert support.extra["action"] == Action.SKIPPED
    assert sales.extra["action"] == Action.CREATED
    searched = [
        dict(r.query).get("email")
        for r in box.rocketchat.requests_to("GET", "/api/v1/email-inbox.search")
    ]
    assert "support@example.com" not in searched
    assert [r.body["email"] for r in box.rocketchat.requests_to("POST", "/api/v1/email-inbox")] == [
        "sales@example.com"
    ]
    assert report.exit_code is ExitCode.AUTH


async def test_strict_warning_skips_submit(box: Sandbox) -> None:
    text = box.inbox_file.read_text().replace("maxRetries: 10", "maxRetries: 2")
    file = box.directory / "low.yaml"
    file.write_text(text)
    report = await _set(box, file, strict=True)
    assert {i.extra["action"] for i in report.inboxes} == {Action.SKIPPED}
    # Only the list that looks for inboxes on the server alone (commands/prune.py).
    assert _inbox_requests(box) == [("GET", "/api/v1/email-inbox.list")]
    assert report.exit_code is ExitCode.USAGE


async def test_bad_token_is_found_before_any_probe(box: Sandbox) -> None:
    loaded = load_inboxes([str(box.inbox_file)])
    target = SetOptions(
        server=box.rocketchat_url,
        credentials=TokenAuth(user_id=box.user_id, token=Secret("not-the-token-4411")),
    )
    report = await set_inboxes(loaded.inboxes, _options(box), target)
    assert report.exit_code is ExitCode.ROCKETCHAT
    for inbox in report.inboxes:
        assert [s.status for s in inbox.stages] == [
            Status.SKIPPED,
            Status.SKIPPED,
            Status.FAILED,
            Status.SKIPPED,
        ]
        assert inbox.stages[2].failure is FailureClass.ROCKETCHAT
    assert [r.path for r in box.rocketchat.requests] == ["/api/v1/me"]
    assert "not-the-token-4411" not in json.dumps(report.to_json())


async def test_dry_run_writes_nothing_and_plans(box: Sandbox) -> None:
    report = await _set(box, dry_run=True)
    assert [i.extra["action"] for i in report.inboxes] == [Action.CREATE, Action.CREATE]
    assert box.rocketchat.requests_to("POST", "/api/v1/email-inbox") == []
    changes = report.inboxes[0].stages[2].facts["changes"]
    assert {"field": "smtp.password", "change": "changed"} in changes
    password = (box.directory / "password").read_text().strip()
    assert password not in json.dumps(report.to_json())


async def test_server_error_on_write_is_reported_not_raised(box: Sandbox) -> None:
    box.rocketchat.inject("POST", "/api/v1/email-inbox", Fault.error(500), times=100)
    report = await _set(box)
    for inbox in report.inboxes:
        assert inbox.stages[2].failure is FailureClass.ROCKETCHAT
        assert inbox.extra["action"] == Action.FAILED
    assert report.exit_code is ExitCode.ROCKETCHAT
    assert box.rocketchat.inboxes == {}


async def test_send_test_is_requested_not_confirmed(box: Sandbox) -> None:
    report = await _set(box, send_test=True)
    submit = report.inboxes[0].stages[2]
    assert submit.facts["test_mail"] == "requested"
    assert "does not wait" in submit.facts["test_mail_note"]
    assert len(box.rocketchat.sent_tests) == 2


async def test_wait_active_fails_when_rocketchat_switches_the_inbox_off(box: Sandbox) -> None:
    password = (box.directory / "password").read_text().strip()
    box.rocketchat.bad_imap_passwords = {password}
    box.rocketchat.self_disable_delay = 0.2
    report = await _set(box, wait_active=3.0)
    verify = report.inboxes[0].stages[3]
    assert verify.failure is FailureClass.ROCKETCHAT
    assert "switched the inbox off" in (verify.message or "")
    assert verify.field == "imap.maxRetries"


async def test_unknown_department_name_is_an_input_error(box: Sandbox) -> None:
    from provision.errors import ConfigError

    text = box.inbox_file.read_text().replace("department: Support", "department: Suport", 1)
    file = box.directory / "dept.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        await _set(box, file)
    (problem,) = info.value.problems
    assert problem.field == "department"
    assert problem.line is not None
    assert _inbox_requests(box) == []


runner = CliRunner()


async def test_cli_set_twice_json_and_no_secret(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROCKETCHAT_USER_ID", box.user_id)
    monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", box.token.reveal())
    args = [
        "set",
        str(box.inbox_file),
        "--server",
        box.rocketchat_url,
        "--ca-file",
        str(box.ca_file),
        "--json",
    ]
    first = await asyncio.to_thread(runner.invoke, app, args)
    second = await asyncio.to_thread(runner.invoke, app, args)
    assert first.exit_code == 0, first.stdout + first.stderr
    doc = json.loads(second.stdout)
    assert [i["action"] for i in doc["inboxes"]] == ["unchanged", "unchanged"]
    assert [s["stage"] for s in doc["inboxes"][0]["stages"]] == ["smtp", "imap", "submit", "verify"]
    assert all(i["id"] for i in doc["inboxes"])
    password = (box.directory / "password").read_text().strip()
    for out in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert password not in out
        assert box.token.reveal() not in out


def test_cli_set_without_server_is_a_usage_error(tmp_path: Path) -> None:
    file = tmp_path / "i.yaml"
    file.write_text("{}")
    result = runner.invoke(app, ["set", str(file)])
    assert result.exit_code == 2
    assert "ROCKETCHAT_URL" in result.stderr


def test_cli_set_without_credentials_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["set", "--sandbox"])
    assert result.exit_code == 0, result.stdout  # the sandbox brings its own token
    file = tmp_path / "i.yaml"
    file.write_text(
        "name: a\nemail: a@example.com\n"
        "smtp: {server: localhost, port: 1, username: u, password: p, secure: true}\n"
        "imap: {server: localhost, port: 1, username: u, password: p, secure: true}\n"
    )
    result = runner.invoke(app, ["set", str(file), "--server", "https://chat.example.com"])
    assert result.exit_code == 2
    assert "ROCKETCHAT_AUTH_TOKEN" in result.stderr


def test_cli_set_refuses_plain_http_to_a_remote_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROCKETCHAT_USER_ID", "u")
    monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", "t")
    file = tmp_path / "i.yaml"
    file.write_text(
        "name: a\nemail: a@example.com\n"
        "smtp: {server: localhost, port: 1, username: u, password: p, secure: true}\n"
        "imap: {server: localhost, port: 1, username: u, password: p, secure: true}\n"
    )
    result = runner.invoke(app, ["set", str(file), "--server", "http://chat.example.com"])
    assert result.exit_code == 2
    assert "http" in result.stderr.lower()
