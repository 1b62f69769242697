"""`provision set --prune` against the Rocket.Chat double over real HTTP, with real mail servers.

The sandbox's file holds two inboxes (support@, sales@example.com); inboxes stored
directly in the double play the ones removed from the file. Assertions are on the
double's store and request log, and on the report, JSON, JUnit and exit codes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.prune import PruneOptions, Pruning, plan_prune
from provision.commands.set import SetOptions, set_inboxes
from provision.errors import ConfigError
from provision.inbox import load_inboxes
from provision.models import ProbeOptions
from provision.render.github import render_summary
from provision.render.junit import render_junit
from provision.render.text import render_text
from provision.results import Action, ExitCode, FailureClass, Report, Stage, Status
from provision.rocketchat.client import open_rocketchat
from provision.rocketchat.credentials import TokenAuth
from provision.rocketchat.transport import RocketChatOptions
from provision.sandbox.runner import Sandbox, running_sandbox
from provision.stopping import Stop
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat
from tests.test_rocketchat_double import inbox_body

INBOX = "/api/v1/email-inbox"
runner = CliRunner()


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path / "box", double=FaultyRocketChat()) as sandbox:
        yield sandbox


def _double(box: Sandbox) -> FaultyRocketChat:
    assert isinstance(box.rocketchat, FaultyRocketChat)
    return box.rocketchat


def _seed(box: Sandbox, *emails: str, **changes: Any) -> list[str]:
    """Inboxes only on the server (in no file), named after their address."""
    return [
        box.rocketchat.add_inbox(
            inbox_body(name=email.split("@")[0].title(), email=email, **changes)
        )
        for email in emails
    ]


async def _set(
    box: Sandbox, file: Path | None = None, *, step_timeout: float = 3, **kw: Any
) -> Report:
    loaded = load_inboxes([str(file or box.inbox_file)])
    strict = bool(kw.pop("strict", False))
    prune = PruneOptions(
        enabled=kw.pop("prune", True),
        scopes=tuple(kw.pop("scopes", ())),
        max_delete=kw.pop("max_delete", 5),
    )
    target = SetOptions(
        server=box.rocketchat_url,
        credentials=TokenAuth(user_id=box.user_id, token=box.token),
        prune=prune,
        **kw,
    )
    options = ProbeOptions(
        ca_file=box.ca_file, step_timeout=step_timeout, timeout=30, strict=strict
    )
    return await set_inboxes(loaded.inboxes, options, target, input_warnings=loaded.warnings)


def _pruned(report: Report) -> list[tuple[str, Action | None]]:
    return [(r.email, r.action) for r in report.inboxes if r.file is None]


def _deletes(box: Sandbox) -> list[int | None]:
    return [r.status for r in box.rocketchat.requests if r.method == "DELETE"]


def _emails(box: Sandbox) -> set[str]:
    return {str(doc["email"]) for doc in box.rocketchat.inboxes.values()}


# ------------------------------------------------------------------- the plan


def test_plan_is_exact_by_address_and_scope_is_the_domain_case_insensitively(
    tmp_path: Path,
) -> None:
    file = tmp_path / "support.yaml"
    file.write_text(
        "name: Support\nemail: support@example.com\n"
        "smtp: {server: localhost, port: 1, username: u, password: p, secure: true}\n"
        "imap: {server: localhost, port: 1, username: u, password: p, secure: true}\n"
    )
    stored = [
        {"_id": "1", "email": "support@example.com"},
        {"_id": "2", "email": "Support@example.com"},  # another inbox to Rocket.Chat
        {"_id": "3", "email": "x@Elsewhere.ORG"},
        {"_id": "4", "email": "y@sub.elsewhere.org"},
        {"email": "no-id@example.com"},
    ]
    inboxes = load_inboxes([str(file)]).inboxes
    everything = plan_prune(stored, inboxes, PruneOptions(enabled=True))
    assert [d["_id"] for d in everything] == ["2", "3", "4"]
    scoped = plan_prune(stored, inboxes, PruneOptions(enabled=True, scopes=("elsewhere.org",)))
    assert [d["_id"] for d in scoped] == ["3"]


# ------------------------------------------------------------------ deletions


async def test_prune_one_then_rerun_changes_nothing(box: Sandbox) -> None:
    [old] = _seed(box, "old@example.com")
    report = await _set(box)
    assert report.exit_code is ExitCode.OK
    assert [i.action for i in report.inboxes] == [Action.CREATED, Action.CREATED, Action.DELETED]
    pruned = report.inboxes[2]
    assert (pruned.name, pruned.email, pruned.inbox_id) == ("Old", "old@example.com", old)
    [stage] = pruned.stages
    assert (stage.stage, stage.status) == (Stage.PRUNE, Status.PASSED)
    assert stage.facts["delete_state"] == "deleted"
    assert box.rocketchat.deleted == [old]
    assert _emails(box) == {"support@example.com", "sales@example.com"}
    # Deletions come after every write.
    writes = [r.method for r in box.rocketchat.requests if r.method in ("POST", "DELETE")]
    assert writes == ["POST", "POST", "DELETE"]

    before = len(box.rocketchat.requests)
    again = await _set(box)
    assert [i.action for i in again.inboxes] == [Action.UNCHANGED, Action.UNCHANGED]
    assert not [r for r in box.rocketchat.requests[before:] if r.method in ("POST", "DELETE")]
    assert again.exit_code is ExitCode.OK


async def test_prune_several_one_at_a_time(box: Sandbox) -> None:
    ids = _seed(box, "b@example.com", "a@example.com", "c@example.com")
    report = await _set(box)
    assert _pruned(report) == [
        ("a@example.com", Action.DELETED),
        ("b@example.com", Action.DELETED),
        ("c@example.com", Action.DELETED),
    ]
    assert sorted(box.rocketchat.deleted) == sorted(ids)
    # Each DELETE is confirmed by its read-back before the next one is sent.
    sequence = [
        (r.method, r.path.rsplit("/", 1)[-1])
        for r in box.rocketchat.requests
        if r.method == "DELETE" or (r.method == "GET" and r.path.rsplit("/", 1)[-1] in ids)
    ]
    order = [box.rocketchat.deleted[i // 2] for i in range(6)]
    assert sequence == [(m, i) for m, i in zip(["DELETE", "GET"] * 3, order, strict=True)]


async def test_failed_probe_refuses_every_deletion(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    text = box.inbox_file.read_text().replace("${file:password}", "wrong-password", 1)
    file = box.directory / "wrong.yaml"
    file.write_text(text)
    report = await _set(box, file)
    assert report.exit_code is ExitCode.AUTH
    assert _pruned(report) == [("old@example.com", Action.SKIPPED)]
    stage = report.inboxes[2].stages[0]
    assert stage.status is Status.SKIPPED
    assert "--prune refused because 'Support' <support@example.com> failed" in (stage.message or "")
    assert _deletes(box) == []
    assert "old@example.com" in _emails(box)


async def test_strict_warning_refuses_deletions_too(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    text = box.inbox_file.read_text().replace("maxRetries: 10", "maxRetries: 2")
    file = box.directory / "low.yaml"
    file.write_text(text)
    report = await _set(box, file, strict=True)
    assert _pruned(report) == [("old@example.com", Action.SKIPPED)]
    assert _deletes(box) == []


async def test_scope_limits_deletions_and_lists_the_rest(box: Sandbox) -> None:
    [kept] = _seed(box, "old@example.com")
    [gone] = _seed(box, "x@Elsewhere.ORG")
    report = await _set(box, scopes=["elsewhere.org"])
    assert _pruned(report) == [
        ("x@Elsewhere.ORG", Action.DELETED),
        ("old@example.com", Action.ONLY_ON_SERVER),
    ]
    assert box.rocketchat.deleted == [gone]
    assert kept in box.rocketchat.inboxes
    assert "outside --prune-scope" in (report.inboxes[3].stages[0].message or "")
    assert report.exit_code is ExitCode.OK


async def test_cap_stops_the_run_before_any_probe_or_write(box: Sandbox) -> None:
    _seed(box, *(f"old{n}@example.com" for n in range(6)))
    with pytest.raises(ConfigError) as caught:
        await _set(box)
    [problem] = caught.value.problems
    assert "--max-delete 5" in str(problem)
    assert "would delete 6 inboxes" in str(problem)
    assert [r.method for r in box.rocketchat.requests if r.path.startswith(INBOX)] == ["GET"]
    report = await _set(box, max_delete=6)
    assert len(box.rocketchat.deleted) == 6
    assert report.exit_code is ExitCode.OK


async def test_no_inbox_in_the_files_refuses(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    target = SetOptions(
        server=box.rocketchat_url,
        credentials=TokenAuth(user_id=box.user_id, token=box.token),
        prune=PruneOptions(enabled=True),
    )
    with pytest.raises(ConfigError, match="the files hold no inbox"):
        await set_inboxes([], ProbeOptions(ca_file=box.ca_file, timeout=30), target)
    assert _deletes(box) == []


async def test_dry_run_lists_the_plan_and_writes_nothing(box: Sandbox) -> None:
    department = box.rocketchat.departments[0]
    [old] = _seed(box, "old@example.com", department=department["_id"])
    store = copy.deepcopy(box.rocketchat.inboxes)
    report = await _set(box, dry_run=True)
    assert _pruned(report) == [("old@example.com", Action.DELETE)]
    stage = report.inboxes[2].stages[0]
    assert stage.facts["name"] == "Old"
    assert stage.facts["address"] == "old@example.com"
    assert stage.facts["department"] == department["name"]
    assert box.rocketchat.inboxes == store
    assert not [r for r in box.rocketchat.requests if r.method in ("POST", "DELETE")]
    text = render_text(report)
    assert f"Old <old@example.com> | department {department['name']}" in text
    assert f"would delete inbox {old}" in text
    assert "=> delete" in text


async def test_dry_run_shows_the_refusal_when_a_probe_fails(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    text = box.inbox_file.read_text().replace("${file:password}", "wrong-password", 1)
    file = box.directory / "wrong.yaml"
    file.write_text(text)
    report = await _set(box, file, dry_run=True)
    assert _pruned(report) == [("old@example.com", Action.SKIPPED)]


async def test_without_prune_server_only_inboxes_are_listed_only(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    box.rocketchat.add_inbox(inbox_body(name="Evil\x1b[2J", email="evil@example.com"))
    report = await _set(box, prune=False)
    assert _pruned(report) == [
        ("evil@example.com", Action.ONLY_ON_SERVER),
        ("old@example.com", Action.ONLY_ON_SERVER),
    ]
    # Server text reaches the terminal only escaped.
    assert "\x1b" not in render_text(report)
    assert "Evil\\x1b[2J" in render_text(report)
    assert {r.stages[0].status for r in report.inboxes[2:]} == {Status.SKIPPED}
    assert "only on the server" in render_text(report)
    assert report.exit_code is ExitCode.OK
    assert _deletes(box) == []


# -------------------------------------------------------------------- faults


_REFUSED = Fault(
    status=403,
    body=json.dumps(
        {
            "success": False,
            "error": "User does not have the permissions required for this action "
            "[error-unauthorized]",
        }
    ).encode(),
)


async def test_list_refused_fails_a_prune_but_only_notes_it_without(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    _double(box).inject("GET", f"{INBOX}.list", _REFUSED)
    plain = await _set(box, prune=False)
    assert plain.exit_code is ExitCode.OK
    assert plain.settings["only_on_server"].startswith("not listed: ")
    assert _pruned(plain) == []
    writes = len(box.rocketchat.requests_to("POST", INBOX))
    _double(box).inject("GET", f"{INBOX}.list", _REFUSED)
    pruning = await _set(box)
    assert pruning.exit_code is ExitCode.ROCKETCHAT
    assert len(box.rocketchat.requests_to("POST", INBOX)) == writes  # nothing more written
    assert _deletes(box) == []


async def test_500_on_delete_is_retried_after_a_read_back(box: Sandbox) -> None:
    [old] = _seed(box, "old@example.com")
    _double(box).inject("DELETE", f"{INBOX}/:_id", Fault.error(500))
    report = await _set(box)
    assert _pruned(report) == [("old@example.com", Action.DELETED)]
    assert _deletes(box) == [500, 200]
    assert box.rocketchat.deleted == [old]  # once
    stage = report.inboxes[2].stages[0]
    assert stage.facts["delete_requests"] == 2
    assert report.exit_code is ExitCode.OK


async def test_delete_that_keeps_failing_is_reported_not_deleted(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    _double(box).inject("DELETE", f"{INBOX}/:_id", Fault.error(503), times=100)
    report = await _set(box)
    assert _pruned(report) == [("old@example.com", Action.FAILED)]
    stage = report.inboxes[2].stages[0]
    assert stage.failure is FailureClass.ROCKETCHAT
    assert stage.facts["delete_state"] == "not-deleted"
    assert report.exit_code is ExitCode.ROCKETCHAT
    assert "old@example.com" in _emails(box)


async def test_timeout_after_a_delete_that_went_through_is_deleted(box: Sandbox) -> None:
    """The prune on its own, with a short HTTP timeout (the probes need a longer one)."""
    [old] = _seed(box, "old@example.com")
    _double(box).inject("DELETE", f"{INBOX}/:_id", Fault.held(asyncio.Event(), apply=True))
    loaded = load_inboxes([str(box.inbox_file)])
    report = Report(command="set")
    async with open_rocketchat(
        box.rocketchat_url,
        TokenAuth(user_id=box.user_id, token=box.token),
        RocketChatOptions(step_timeout=0.3, ca_file=box.ca_file),
    ) as rc:
        pruning = Pruning(options=PruneOptions(enabled=True), dry_run=False)
        await pruning.prepare(rc, loaded.inboxes)
        await pruning.run(rc, report, strict=False)
    assert _pruned(report) == [("old@example.com", Action.DELETED)]
    assert report.inboxes[0].stages[0].facts["delete_requests"] == 1
    assert len(_deletes(box)) == 1
    assert box.rocketchat.deleted == [old]


async def test_deadline_passed_before_a_deletion_is_reported_not_started(box: Sandbox) -> None:
    [old] = _seed(box, "old@example.com")
    loaded = load_inboxes([str(box.inbox_file)])
    report = Report(command="set")
    async with open_rocketchat(
        box.rocketchat_url,
        TokenAuth(user_id=box.user_id, token=box.token),
        RocketChatOptions(ca_file=box.ca_file),
    ) as rc:
        pruning = Pruning(options=PruneOptions(enabled=True), dry_run=False)
        await pruning.prepare(rc, loaded.inboxes)
        rc.deadline = time.monotonic() - 1
        await pruning.run(rc, report, strict=False)
    [result] = report.inboxes
    assert result.action is Action.NOT_STARTED
    assert result.stages[0].failure is FailureClass.DEADLINE
    assert result.stages[0].facts["delete_state"] == "not-started"
    assert report.exit_code is ExitCode.TRANSIENT
    assert _deletes(box) == []
    assert old in box.rocketchat.inboxes


async def _stop_while_deleting(box: Sandbox, fault: Fault) -> asyncio.Task[Report]:
    """Prune a@ and b@example.com; SIGTERM once the first DELETE has arrived."""
    double, stop = _double(box), Stop()
    double.inject("DELETE", f"{INBOX}/:_id", fault)
    loaded = load_inboxes([str(box.inbox_file)])
    target = SetOptions(
        server=box.rocketchat_url,
        credentials=TokenAuth(user_id=box.user_id, token=box.token),
        prune=PruneOptions(enabled=True),
    )
    options = ProbeOptions(ca_file=box.ca_file, step_timeout=3, timeout=30)
    run = asyncio.create_task(set_inboxes(loaded.inboxes, options, target, stop=stop))
    async with asyncio.timeout(20):
        await double.wait_received("DELETE", f"{INBOX}/:_id", 1)
    stop.request(signal.SIGTERM)
    return run


async def test_stop_during_a_deletion_lets_it_finish_and_starts_no_other(box: Sandbox) -> None:
    first, second = _seed(box, "a@example.com", "b@example.com")
    release = asyncio.Event()
    run = await _stop_while_deleting(box, Fault.held(release))
    release.set()  # the DELETE in flight answers within the grace
    async with asyncio.timeout(20):
        report = await run
    assert report.exit_code is ExitCode.STOPPED_SIGTERM
    assert report.settings["stopped_by"] == "SIGTERM"
    assert [i.action for i in report.inboxes[:2]] == [Action.CREATED, Action.CREATED]
    assert _pruned(report) == [
        ("a@example.com", Action.DELETED),
        ("b@example.com", Action.NOT_STARTED),
    ]
    done, not_started = (r.stages[0] for r in report.inboxes[2:])
    assert done.facts["delete_state"] == "deleted"
    assert not_started.facts["delete_state"] == "not-started"
    assert "stopped by SIGTERM" in (not_started.message or "")
    assert box.rocketchat.deleted == [first]
    assert second in box.rocketchat.inboxes
    assert len(_deletes(box)) == 1


async def test_stop_during_the_probes_starts_no_deletion(box: Sandbox) -> None:
    _seed(box, "old@example.com")
    stop = Stop()
    loaded = load_inboxes([str(box.inbox_file)])
    target = SetOptions(
        server=box.rocketchat_url,
        credentials=TokenAuth(user_id=box.user_id, token=box.token),
        prune=PruneOptions(enabled=True),
    )
    options = ProbeOptions(ca_file=box.ca_file, step_timeout=3, timeout=30)
    seen: list[str] = []

    def probed(result: object) -> None:
        seen.append("probed")
        stop.request(signal.SIGINT)  # as soon as the first inbox's probes are done

    report = await set_inboxes(loaded.inboxes, options, target, stop=stop, on_inbox_done=probed)
    assert seen
    assert report.exit_code is ExitCode.STOPPED_SIGINT
    [(email, action)] = _pruned(report)
    assert (email, action) == ("old@example.com", Action.NOT_STARTED)
    assert "stopped by SIGINT" in (report.inboxes[-1].stages[0].message or "")
    assert _deletes(box) == []


async def test_stop_with_a_deletion_unanswered_reads_it_back(box: Sandbox) -> None:
    """The DELETE went through, its answer never comes: after the grace, a read-back."""
    first, _second = _seed(box, "a@example.com", "b@example.com")
    run = await _stop_while_deleting(box, Fault.held(asyncio.Event(), apply=True))
    async with asyncio.timeout(20):
        report = await run
    assert _pruned(report) == [
        ("a@example.com", Action.DELETED),
        ("b@example.com", Action.NOT_STARTED),
    ]
    stage = report.inboxes[2].stages[0]
    assert stage.facts["write_state"] == "confirmed-by-read-back"
    assert box.rocketchat.deleted == [first]
    assert report.exit_code is ExitCode.STOPPED_SIGTERM


# ------------------------------------------------------------------------ CLI


def _cli_args(box: Sandbox, *extra: str) -> list[str]:
    return [
        "set",
        str(box.inbox_file),
        "--server",
        box.rocketchat_url,
        "--ca-file",
        str(box.ca_file),
        *extra,
    ]


async def test_cli_prune_json_junit_and_summary(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROCKETCHAT_USER_ID", box.user_id)
    monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", box.token.reveal())
    [old] = _seed(box, "old@example.com")
    junit = tmp_path / "report.xml"
    args = _cli_args(box, "--prune", "--json", "--junit", str(junit))
    result = await asyncio.to_thread(runner.invoke, app, args)
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["settings"]["prune"] is True
    assert (doc["settings"]["prune_scope"], doc["settings"]["max_delete"]) == ([], 5)
    pruned = doc["inboxes"][2]
    assert (pruned["email"], pruned["action"], pruned["id"], pruned["file"]) == (
        "old@example.com",
        "deleted",
        old,
        None,
    )
    assert [s["stage"] for s in pruned["stages"]] == ["prune"]
    assert pruned["stages"][0]["status"] == "passed"
    cases = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 (our own output)
    prune_cases = [c for c in cases if c.get("name") == "prune"]
    assert [c.get("classname") for c in prune_cases] == ["Old"]
    assert prune_cases[0].find("failure") is None


async def test_cli_cap_and_flag_errors_are_exit_2(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROCKETCHAT_USER_ID", box.user_id)
    monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", box.token.reveal())
    _seed(box, "a@example.com", "b@example.com")
    capped = await asyncio.to_thread(
        runner.invoke, app, _cli_args(box, "--prune", "--max-delete", "1")
    )
    assert capped.exit_code == 2
    assert "--max-delete 1: --prune would delete 2 inboxes" in capped.stderr
    assert "Traceback" not in capped.stderr + capped.stdout
    alone = await asyncio.to_thread(runner.invoke, app, _cli_args(box, "--prune-scope", "x.org"))
    assert alone.exit_code == 2
    assert "only apply with --prune" in alone.stderr
    bad = await asyncio.to_thread(
        runner.invoke, app, _cli_args(box, "--prune", "--prune-scope", "a@x.org")
    )
    assert (bad.exit_code, "give a domain" in bad.stderr) == (2, True)
    assert _deletes(box) == []
    assert not box.rocketchat.requests_to("POST", INBOX)


async def test_cli_invalid_file_deletes_nothing(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROCKETCHAT_USER_ID", box.user_id)
    monkeypatch.setenv("ROCKETCHAT_AUTH_TOKEN", box.token.reveal())
    _seed(box, "old@example.com")
    broken = box.directory / "broken.yaml"
    broken.write_text(box.inbox_file.read_text().replace("port: ", "port: x", 1))
    args = ["set", str(broken), "--server", box.rocketchat_url, "--prune"]
    result = await asyncio.to_thread(runner.invoke, app, args)
    assert result.exit_code == 2
    assert [r for r in box.rocketchat.requests if r.path.startswith(INBOX)] == []


def test_summary_and_junit_show_a_dry_run_plan() -> None:
    from provision.results import InboxResult, StageResult

    report = Report(command="set", settings={"dry_run": True})
    stage = StageResult(stage=Stage.PRUNE, message="would delete inbox abc")
    stage.facts.update(name="Old", address="old@example.com")
    report.inboxes.append(
        InboxResult(name="Old", email="old@example.com", stages=[stage], action=Action.DELETE)
    )
    summary = render_summary(report)
    assert "| prune | action |" in summary
    # No probe ran for it: empty SMTP and IMAP cells.
    assert "| Old &lt;old@example.com&gt; |  |  | ✅ passed | delete |  |" in summary
    junit = ET.fromstring(render_junit(report))  # noqa: S314 (our own output)
    [case] = junit.iter("testcase")
    assert case.get("name") == "prune"
    assert case.findtext("system-out") == "would delete inbox abc"
