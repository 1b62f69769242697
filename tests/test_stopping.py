"""Stopping a run: ``provision set`` and ``check`` as processes of their own, signalled at exact
moments, against the Rocket.Chat double and the sandbox's mail servers over real sockets.

The moment is set without a sleep: the double holds chosen requests (``Fault.held``) and
the test waits until they have arrived (``wait_received``), or a mail server that never
greets tells the test it was reached; then the signal goes. After a stop the JSON report
and the JUnit file must both exist and say exactly what the double stored, the exit code
is 128 + the signal, and a rerun converges with no duplicate.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.commands.set import SetOptions, set_inboxes
from provision.inbox import load_inboxes
from provision.models import ProbeOptions
from provision.results import ExitCode, Report
from provision.rocketchat.credentials import TokenAuth
from provision.sandbox.runner import Sandbox, running_sandbox
from provision.stopping import GRACE, Stop
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat

BATCH = 4
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CODES = {signal.SIGHUP: 129, signal.SIGINT: 130, signal.SIGTERM: 143}
#: The actions README documents.
ACTIONS = {"created", "updated", "unchanged", "skipped", "failed", "not-started", "unknown"}
WRITTEN = {"created", "updated", "unchanged"}
INBOX = "/api/v1/email-inbox"
LIMIT = 20.0  # seconds any one wait may take before the test fails (never reached when green)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path / "box", double=FaultyRocketChat()) as sandbox:
        yield sandbox


def _double(box: Sandbox) -> FaultyRocketChat:
    assert isinstance(box.rocketchat, FaultyRocketChat)
    return box.rocketchat


def _batch(box: Sandbox, count: int = BATCH) -> Path:
    """``count`` inboxes on the sandbox's servers (its password file beside them)."""
    first = yaml.safe_load(box.inbox_file.read_text())["inboxes"][0]
    first.pop("department", None)
    inboxes = [
        {**first, "name": f"Inbox {i}", "email": f"inbox{i}@example.com"} for i in range(count)
    ]
    path = box.directory / "batch.json"
    path.write_text(json.dumps({"inboxes": inboxes}))
    return path


@dataclass
class Run:
    process: asyncio.subprocess.Process
    started: float
    stderr: bytes = b""

    async def until_stderr(self, text: bytes) -> None:
        """Read standard error until a line holds ``text``."""
        assert self.process.stderr is not None
        async with asyncio.timeout(LIMIT):
            while text not in self.stderr:
                line = await self.process.stderr.readline()
                assert line, f"stderr ended before {text!r}: {self.stderr!r}"
                self.stderr += line

    async def finish(self) -> tuple[int, bytes, bytes]:
        async with asyncio.timeout(LIMIT):
            out, err = await self.process.communicate()
        self.stderr += err
        assert b"Traceback" not in self.stderr, self.stderr.decode()
        assert self.process.returncode is not None
        return self.process.returncode, out, self.stderr


async def _start(box: Sandbox, *args: str, env: dict[str, str] | None = None) -> Run:
    env = {
        **os.environ,
        **(env or {}),
        "ROCKETCHAT_URL": box.rocketchat_url,
        "ROCKETCHAT_USER_ID": box.user_id,
        "ROCKETCHAT_AUTH_TOKEN": box.token.reveal(),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provision",
        *args,
        "--ca-file",
        str(box.ca_file),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return Run(process, time.monotonic())


async def _set(box: Sandbox, batch: Path, junit: Path, env: dict[str, str] | None = None) -> Run:
    return await _start(box, "set", str(batch), "--json", "--junit", str(junit), env=env)


def _stored(box: Sandbox) -> dict[str, str]:
    """Email -> id of every inbox the double holds (and no address twice)."""
    docs = list(_double(box).inboxes.values())
    emails = [str(d["email"]) for d in docs]
    assert len(emails) == len(set(emails)), emails
    return {str(d["email"]): str(d["_id"]) for d in docs}


def _check_stopped_report(
    out: bytes, code: int, junit: Path, sig: signal.Signals
) -> dict[str, Any]:
    """The JSON and JUnit of a stopped run: complete, not ok, naming the signal."""
    assert code == CODES[sig]
    doc: dict[str, Any] = json.loads(out)
    assert doc["ok"] is False
    assert doc["exit_code"] == CODES[sig]
    assert doc["settings"]["stopped_by"] == sig.name
    suite = ET.parse(junit).getroot().find("testsuite")  # noqa: S314 (our own output)
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["stopped_by"] == sig.name
    assert props["exit_code"] == str(CODES[sig])
    stopped = [c for c in suite.iter("testcase") if c.get("name") == "stopped"]
    assert len(stopped) == 1
    assert stopped[0].find("error") is not None
    assert int(suite.get("errors", "0")) >= 1
    cases = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase")}
    for inbox in doc["inboxes"]:
        for stage in inbox["stages"]:
            assert (inbox["name"], stage["stage"]) in cases
    return doc


def _actions(doc: Any) -> dict[str, str]:
    found = {i["email"]: i["action"] for i in doc["inboxes"]}
    assert set(found.values()) <= ACTIONS, found
    assert len(found) == BATCH
    return found


def _assert_matches_store(doc: dict[str, Any], box: Sandbox) -> None:
    """Every inbox the report calls written is stored with its id; none other is."""
    stored = _stored(box)
    for inbox in doc["inboxes"]:
        if inbox["action"] in WRITTEN:
            assert stored.get(inbox["email"]) == inbox["id"], inbox
        elif inbox["action"] == "not-started":
            assert inbox["email"] not in stored, inbox
            assert inbox["id"] is None
            assert {s["stage"]: s["status"] for s in inbox["stages"]}["submit"] == "skipped"
    written = {i["email"] for i in doc["inboxes"] if i["action"] in WRITTEN}
    unknown = {i["email"] for i in doc["inboxes"] if i["action"] == "unknown"}
    assert written <= set(stored) <= written | unknown


async def _set_here(
    box: Sandbox, batch: Path, *, stop: Stop | None = None, timeout: float = 30, **target: Any
) -> Report:
    """``set`` of ``batch`` in this process (the library call), against the box."""
    options = ProbeOptions(ca_file=box.ca_file, step_timeout=5, timeout=timeout)
    credentials = TokenAuth(user_id=box.user_id, token=box.token)
    target_options = SetOptions(server=box.rocketchat_url, credentials=credentials, **target)
    inboxes = load_inboxes([str(batch)]).inboxes
    return await set_inboxes(inboxes, options, target_options, stop=stop)


async def _rerun_converges(box: Sandbox, batch: Path, before: dict[str, str]) -> None:
    """A second run finishes the job: what was written is unchanged, nothing is doubled.

    In this process (the library call ``set`` makes): a process start per rerun is slow.
    """
    report = await _set_here(box, batch)
    assert report.exit_code is ExitCode.OK, report.to_json()
    actions = _actions(report.to_json())
    for email in before:
        assert actions[email] == "unchanged", (email, actions)
    assert set(actions.values()) <= {"created", "unchanged"}
    stored = _stored(box)
    assert len(stored) == BATCH
    assert {k: v for k, v in stored.items() if k in before} == before


# ----------------------------------------------------------------------------- set


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
async def test_set_stopped_before_any_write(
    box: Sandbox, tmp_path: Path, sig: signal.Signals
) -> None:
    """Both write slots wait on their search: nothing was written, everything says so."""
    double, release = _double(box), asyncio.Event()
    double.inject("GET", f"{INBOX}.search", Fault.held(release), times=2)
    batch, junit = _batch(box), tmp_path / "set.xml"
    run = await _set(box, batch, junit)
    async with asyncio.timeout(LIMIT):
        await double.wait_received("GET", f"{INBOX}.search", 2)
    run.process.send_signal(sig)
    code, out, err = await run.finish()
    release.set()

    doc = _check_stopped_report(out, code, junit, sig)
    assert set(_actions(doc).values()) == {"not-started"}
    assert _stored(box) == {}
    assert not double.requests_to("POST", INBOX)
    assert f"stopped: {sig.name} ended the run early".encode() not in out  # JSON, not text
    assert f"{sig.name} received; stopping".encode() in err
    await _rerun_converges(box, batch, {})


async def test_set_stopped_while_logging_in(box: Sandbox, tmp_path: Path) -> None:
    """The token check (``GET /api/v1/me``) hangs: nothing probed, nothing sent."""
    double, release = _double(box), asyncio.Event()
    double.inject("GET", "/api/v1/me", Fault.held(release))
    batch, junit = _batch(box), tmp_path / "set.xml"
    run = await _set(box, batch, junit)
    async with asyncio.timeout(LIMIT):
        await double.wait_received("GET", "/api/v1/me", 1)
    run.process.send_signal(signal.SIGTERM)
    code, out, _err = await run.finish()
    release.set()

    doc = _check_stopped_report(out, code, junit, signal.SIGTERM)
    assert set(_actions(doc).values()) == {"not-started"}
    assert {s["message"] for i in doc["inboxes"] for s in i["stages"][:2]} == {
        "not started: stopped by SIGTERM"
    }
    assert _stored(box) == {}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
async def test_set_stopped_during_writes(box: Sandbox, tmp_path: Path, sig: signal.Signals) -> None:
    """Two writes in flight finish within the grace; the two inboxes not reached stay unsent."""
    double, release = _double(box), asyncio.Event()
    double.inject("POST", INBOX, Fault.held(release), skip=1, times=2)
    batch, junit, summary = _batch(box), tmp_path / "set.xml", tmp_path / "summary.md"
    github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    run = await _set(box, batch, junit, env=github)
    async with asyncio.timeout(LIMIT):
        await double.wait_received("POST", INBOX, 3)
    run.process.send_signal(sig)
    await run.until_stderr(b"received; stopping")
    release.set()  # the held writes answer within the grace
    code, out, err = await run.finish()
    # GitHub: an error annotation and the summary say the run was stopped, and by what.
    assert f"::error title=provision set%3A stopped by {sig.name}::".encode() in err
    assert f"stopped: {sig.name} ended the run early" in summary.read_text()
    assert "| not-started |" in summary.read_text()

    doc = _check_stopped_report(out, code, junit, sig)
    actions = _actions(doc)
    assert sorted(actions.values()) == ["created"] * 3 + ["not-started"]
    _assert_matches_store(doc, box)
    assert len(_stored(box)) == 3
    await _rerun_converges(box, batch, _stored(box))


async def test_set_stopped_in_quiet_text_mode_prints_what_was_done(
    box: Sandbox, tmp_path: Path
) -> None:
    double, release = _double(box), asyncio.Event()
    double.inject("POST", INBOX, Fault.held(release), skip=1, times=2)
    run = await _start(box, "set", str(_batch(box)), "-q")
    async with asyncio.timeout(LIMIT):
        await double.wait_received("POST", INBOX, 3)
    run.process.send_signal(signal.SIGINT)
    await run.until_stderr(b"received; stopping")
    release.set()
    code, out, _err = await run.finish()

    text = out.decode()
    assert code == 130
    assert text.count("    => created (id ") == 3
    assert text.count("    => not-started") == 1
    assert "(3 created, 1 not-started)" in text
    assert "(exit 130)" in text
    assert "stopped: SIGINT ended the run early; each inbox shows what was done; 1 not " in text
    assert sorted(_stored(box)) == sorted(
        line.split("<")[1].split(">")[0]
        for block in text.split("\n\n")
        if "=> created" in block
        for line in block.splitlines()[:1]
    )


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
async def test_set_stopped_after_writes(box: Sandbox, tmp_path: Path, sig: signal.Signals) -> None:
    """Every write done, two read-backs in flight: all created, those two not read back."""
    double, release = _double(box), asyncio.Event()
    double.inject("GET", f"{INBOX}/:_id", Fault.held(release), skip=BATCH - 2, times=2)
    batch, junit = _batch(box), tmp_path / "set.xml"
    run = await _set(box, batch, junit)
    async with asyncio.timeout(LIMIT):
        await double.wait_received("GET", f"{INBOX}/:_id", BATCH)
    run.process.send_signal(sig)
    code, out, _err = await run.finish()
    release.set()

    doc = _check_stopped_report(out, code, junit, sig)
    assert set(_actions(doc).values()) == {"created"}
    _assert_matches_store(doc, box)
    verify = [{s["stage"]: s for s in i["stages"]}["verify"] for i in doc["inboxes"]]
    cut = [v for v in verify if v["status"] == "skipped"]
    assert len(cut) == 2
    assert all(v["message"] == f"not read back: stopped by {sig.name}" for v in cut)
    await _rerun_converges(box, batch, _stored(box))


async def test_a_write_without_an_answer_is_unknown_and_a_rerun_converges(
    box: Sandbox, tmp_path: Path
) -> None:
    """The grace runs out, the read-back does not find the writes: ``unknown``, with the
    hint to rerun; the writes land later, and the rerun finds them (no duplicate)."""
    double, release = _double(box), asyncio.Event()
    double.inject("POST", INBOX, Fault.held(release), skip=1, times=2)
    batch, junit = _batch(box), tmp_path / "set.xml"
    run = await _set(box, batch, junit)
    async with asyncio.timeout(LIMIT):
        await double.wait_received("POST", INBOX, 3)
    run.process.send_signal(signal.SIGTERM)
    code, out, _err = await run.finish()
    elapsed = time.monotonic() - run.started

    doc = _check_stopped_report(out, code, junit, signal.SIGTERM)
    actions = _actions(doc)
    assert sorted(actions.values()) == ["created", "not-started", "unknown", "unknown"]
    _assert_matches_store(doc, box)
    assert len(_stored(box)) == 1  # the held writes have not landed (yet)
    for inbox in doc["inboxes"]:
        if inbox["action"] == "unknown":
            submit = {s["stage"]: s for s in inbox["stages"]}["submit"]
            assert submit["status"] == "failed"
            assert submit["facts"]["write_state"] == "unknown"
            assert "rerun `provision set`" in submit["hint"]
    assert elapsed < GRACE + 10
    # They land after all: the rerun finds them as written.
    release.set()
    async with asyncio.timeout(LIMIT):
        await double.wait_answered("POST", INBOX, 3)
    assert len(_stored(box)) == 3
    await _rerun_converges(box, batch, _stored(box))


async def test_a_write_applied_without_an_answer_is_confirmed_by_the_read_back(
    box: Sandbox, tmp_path: Path
) -> None:
    double, release = _double(box), asyncio.Event()
    double.inject("POST", INBOX, Fault.held(release, apply=True), skip=1, times=2)
    batch, junit = _batch(box), tmp_path / "set.xml"
    run = await _set(box, batch, junit)
    async with asyncio.timeout(LIMIT):
        await double.wait_received("POST", INBOX, 3)
    run.process.send_signal(signal.SIGINT)
    code, out, _err = await run.finish()
    release.set()

    doc = _check_stopped_report(out, code, junit, signal.SIGINT)
    assert sorted(_actions(doc).values()) == ["created"] * 3 + ["not-started"]
    _assert_matches_store(doc, box)
    confirmed = [
        i
        for i in doc["inboxes"]
        if {s["stage"]: s for s in i["stages"]}["submit"]["facts"].get("write_state")
        == "confirmed-by-read-back"
    ]
    assert len(confirmed) == 2
    await _rerun_converges(box, batch, _stored(box))


async def test_a_second_signal_ends_at_once(box: Sandbox, tmp_path: Path) -> None:
    double, release = _double(box), asyncio.Event()
    double.inject("POST", INBOX, Fault.held(release), times=2)
    junit = tmp_path / "set.xml"
    run = await _set(box, _batch(box), junit)
    async with asyncio.timeout(LIMIT):
        await double.wait_received("POST", INBOX, 2)
    run.process.send_signal(signal.SIGINT)
    await run.until_stderr(b"received; stopping")
    second = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    code, out, err = await run.finish()
    release.set()

    assert code == 143
    assert time.monotonic() - second < GRACE  # did not wait for the held writes
    assert b"SIGTERM again; ended at once" in err
    assert out == b""
    assert not junit.exists()


# --------------------------------------------------------------------------- check


@dataclass
class Silent:
    """A server that accepts and never says a word; ``reached`` is set on the first client."""

    port: int
    reached: asyncio.Event
    server: asyncio.Server


@pytest.fixture
async def silent() -> AsyncIterator[Silent]:
    reached, done = asyncio.Event(), asyncio.Event()

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.set()
        await done.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield Silent(server.sockets[0].getsockname()[1], reached, server)
    done.set()
    server.close()


@pytest.mark.parametrize("hung", [0, 2], ids=["first-probe", "third-inbox"])
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
async def test_check_stopped_prints_its_json_and_junit(
    box: Sandbox, tmp_path: Path, silent: Silent, sig: signal.Signals, hung: int
) -> None:
    """One inbox at a time; inbox ``hung`` meets a silent SMTP server: the signal comes
    while it waits, so those before it are done, it is cut short and the rest never start."""
    batch = _batch(box)
    doc = json.loads(batch.read_text())
    doc["inboxes"][hung]["smtp"] = {**doc["inboxes"][hung]["smtp"], "port": silent.port}
    batch.write_text(json.dumps(doc))
    junit = tmp_path / "check.xml"
    run = await _start(
        box, "check", str(batch), "--json", "--junit", str(junit), "--concurrency", "1"
    )
    async with asyncio.timeout(LIMIT):
        await silent.reached.wait()
    run.process.send_signal(sig)
    code, out, _err = await run.finish()

    report = _check_stopped_report(out, code, junit, sig)
    statuses = [i["status"] for i in report["inboxes"]]
    assert statuses[:hung] == ["warning"] * hung or all(s == "passed" for s in statuses[:hung])
    assert statuses[hung:] == ["skipped"] * (BATCH - hung)
    messages = [{s["message"] for s in i["stages"]} for i in report["inboxes"][hung:]]
    assert messages[0] == {f"stopped by {sig.name} during the probe, before it finished"}
    assert all(m == {f"not started: stopped by {sig.name}"} for m in messages[1:])
    assert all("action" not in i for i in report["inboxes"])


async def test_check_stopped_in_text_mode_says_why(
    box: Sandbox, tmp_path: Path, silent: Silent
) -> None:
    batch = _batch(box, 3)
    doc = json.loads(batch.read_text())
    doc["inboxes"][1]["smtp"] = {**doc["inboxes"][1]["smtp"], "port": silent.port}
    batch.write_text(json.dumps(doc))
    run = await _start(box, "check", str(batch), "--concurrency", "1")
    async with asyncio.timeout(LIMIT):
        await silent.reached.wait()
    run.process.send_signal(signal.SIGTERM)
    code, out, _err = await run.finish()

    text = out.decode()
    assert code == 143
    assert "check: 3 inboxes" in text
    assert "(exit 143)" in text
    assert "stopped: SIGTERM ended the run early" in text
    assert "Inbox 0 <inbox0@example.com>" in text  # what was done is shown


# ------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
async def test_sandbox_stopped_removes_its_files(sig: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provision",
        "sandbox",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(LIMIT):
        first = (await process.stdout.readline()).decode()
    directory = Path(first.rsplit("files in ", 1)[1].strip())
    assert (directory / "password").is_file()
    assert (directory / "rocketchat.env").is_file()
    process.send_signal(sig)
    async with asyncio.timeout(LIMIT):
        _out, err = await process.communicate()
    assert process.returncode == CODES[sig], err
    assert b"Traceback" not in err
    assert not directory.exists()


async def test_sandbox_with_a_directory_removes_only_what_it_wrote(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("not the sandbox's")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provision",
        "sandbox",
        "--dir",
        str(tmp_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(LIMIT):
        await process.stdout.readline()
    assert {p.name for p in tmp_path.iterdir()} == {
        "notes.txt",
        "inboxes.yaml",
        "ca.pem",
        "password",
        "rocketchat.env",
    }
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(LIMIT):
        await process.communicate()
    assert process.returncode == 143
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# -------------------------------------------------------------------------- export


async def test_export_stopped_writes_nothing(box: Sandbox, tmp_path: Path) -> None:
    double, release = _double(box), asyncio.Event()
    double.inject("GET", f"{INBOX}.list", Fault.held(release))
    output = tmp_path / "exported.yaml"
    run = await _start(box, "export", "--output", str(output))
    async with asyncio.timeout(LIMIT):
        await double.wait_received("GET", f"{INBOX}.list", 1)
    run.process.send_signal(signal.SIGHUP)
    code, out, err = await run.finish()
    release.set()

    assert code == 129
    assert b"export: stopped by SIGHUP; nothing was written" in err
    assert out == b""
    assert not output.exists()


# ---------------------------------------------------------------------------- docs


def test_readme_documents_every_action_and_exit_code() -> None:
    from provision.results import Action

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("###", 1)[0]
    for code in ExitCode:
        assert f"\n| {int(code)} |" in table, code
    for action in Action:
        assert f"`{action.value}`" in readme, action
    # Dry-run actions, and those of inboxes only on the server (commands/prune.py).
    prune = {"deleted", "delete", "only-on-server"}
    assert ACTIONS | {"create", "update"} | prune == {a.value for a in Action}


# ------------------------------------------------------------------------ discover


async def test_discover_stopped_writes_nothing(tmp_path: Path) -> None:
    """Its first DNS query meets a resolver that never answers; the signal comes then."""
    asked = asyncio.Event()

    class Mute(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            asked.set()

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Mute, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    output = tmp_path / "found.yaml"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "provision",
            "discover",
            "support@example.com",
            "--nameserver",
            f"127.0.0.1:{port}",
            "--json",
            "-o",
            str(output),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        run = Run(process, time.monotonic())
        async with asyncio.timeout(LIMIT):
            await asked.wait()
        process.send_signal(signal.SIGTERM)
        code, out, err = await run.finish()
    finally:
        transport.close()

    assert code == 143
    assert b"discover: stopped by SIGTERM; nothing was written" in err
    assert json.loads(out) == {"ok": False, "exit_code": 143, "stopped_by": "SIGTERM"}
    assert not output.exists()


# ------------------------------------------------------------------------- library


async def test_a_library_caller_stops_set_with_its_own_stop(box: Sandbox) -> None:
    """No signal handler: ``Stop.request`` from the caller's own code does the same."""

    double, release = _double(box), asyncio.Event()
    double.inject("POST", INBOX, Fault.held(release), skip=1, times=1)
    stop = Stop()
    run = asyncio.ensure_future(_set_here(box, _batch(box), stop=stop, write_concurrency=1))
    async with asyncio.timeout(LIMIT):
        await double.wait_received("POST", INBOX, 2)
    stop.request(signal.SIGTERM)
    release.set()
    async with asyncio.timeout(LIMIT):
        report = await run

    assert report.stopped_by == "SIGTERM"
    assert report.exit_code is ExitCode.STOPPED_SIGTERM
    assert [i.action for i in report.inboxes] == ["created"] * 2 + ["not-started"] * 2
    _assert_matches_store(report.to_json(), box)


async def test_check_stopped_before_it_starts_probes_nothing(box: Sandbox) -> None:
    from provision.commands.check import check

    stop = Stop()
    stop.request(signal.SIGINT)
    report = await check(load_inboxes([str(_batch(box))]).inboxes, stop=stop)

    assert report.exit_code is ExitCode.STOPPED_SIGINT
    assert not report.ok
    assert {s.message for i in report.inboxes for s in i.stages} == {
        "not started: stopped by SIGINT"
    }


async def test_set_stopped_during_wait_active_keeps_the_write_and_says_the_wait_was_cut(
    box: Sandbox,
) -> None:

    double = _double(box)
    stop = Stop()
    run = asyncio.ensure_future(
        _set_here(box, _batch(box, 1), stop=stop, timeout=60, wait_active=30)
    )
    async with asyncio.timeout(LIMIT):
        await double.wait_received("GET", f"{INBOX}/:_id", 2)  # read back, then one poll
    stop.request(signal.SIGHUP)
    async with asyncio.timeout(LIMIT):
        report = await run

    (inbox,) = report.inboxes
    assert inbox.action == "created"
    verify = {s.stage: s for s in inbox.stages}["verify"]
    assert verify.message == "read back: as described; --wait-active cut short: stopped by SIGHUP"
    assert report.exit_code is ExitCode.STOPPED_SIGHUP


async def test_a_write_whose_answer_and_read_back_both_fail_is_unknown(box: Sandbox) -> None:
    """Not only a stop: a lost answer that cannot be read back is ``unknown`` too."""
    double = _double(box)
    double.inject("POST", INBOX, Fault.error(502, apply=True))
    double.inject("GET", f"{INBOX}.search", Fault.error(503), skip=1, times=10)
    report = await _set_here(box, _batch(box, 1))
    (inbox,) = report.inboxes
    assert inbox.action == "unknown"
    submit = {s.stage: s for s in inbox.stages}["submit"]
    assert submit.facts["write_state"] == "unknown"
    assert report.exit_code is ExitCode.ROCKETCHAT
    assert len(_stored(box)) == 1  # it did land: a rerun reports it unchanged


# ------------------------------------------------------------- a resolver that hangs

#: ``python -m provision`` with a system resolver that never answers for ``hang.test``:
#: ``getaddrinfo`` cannot be made to hang on loopback without root, so it is replaced
#: (it runs in a thread that nothing can cancel, which is the point of the test).
_HANGING_RESOLVER = """
import runpy, socket, sys, threading
never, real = threading.Event(), socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if host == "hang.test":
        sys.stderr.write("resolving hang.test\\n")
        sys.stderr.flush()
        never.wait()
    return real(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
sys.argv = ["provision", *sys.argv[1:]]
runpy.run_module("provision", run_name="__main__", alter_sys=True)
"""


async def test_a_hanging_resolver_does_not_hold_the_report_back(
    box: Sandbox, tmp_path: Path
) -> None:
    batch = _batch(box, 2)
    doc = json.loads(batch.read_text())
    doc["inboxes"][1]["smtp"] = {**doc["inboxes"][1]["smtp"], "server": "hang.test"}
    batch.write_text(json.dumps(doc))
    junit = tmp_path / "check.xml"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HANGING_RESOLVER,
        "check",
        str(batch),
        "--json",
        "--junit",
        str(junit),
        "--ca-file",
        str(box.ca_file),
        "--concurrency",
        "1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    run = Run(process, time.monotonic())
    await run.until_stderr(b"resolving hang.test")
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, out, _err = await run.finish()

    assert time.monotonic() - signalled < GRACE  # not held by the thread that still waits
    report = _check_stopped_report(out, code, junit, signal.SIGTERM)
    assert [i["status"] for i in report["inboxes"]][1] == "skipped"
    assert report["inboxes"][0]["stages"][0]["status"] in ("passed", "warning")


# --------------------------------------------------------------- standard input


async def test_a_signal_interrupts_a_read_of_standard_input_that_never_ends(
    tmp_path: Path,
) -> None:
    """``check -`` on a pipe whose writer never closes it: Python retries a read that a
    signal interrupts (PEP 475), so the first signal must end the read itself."""
    read, write = os.pipe()
    junit = tmp_path / "check.xml"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "provision",
            "check",
            "-",
            "--json",
            "--junit",
            str(junit),
            stdin=read,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        os.close(read)
        await _blocked_on_a_pipe(process.pid)
        process.send_signal(signal.SIGINT)
        code, out, _err = await Run(process, time.monotonic()).finish()
    finally:
        os.close(write)

    doc = _check_stopped_report(out, code, junit, signal.SIGINT)
    assert doc["inboxes"] == []


async def _blocked_on_a_pipe(pid: int) -> None:
    """Until the kernel shows the process asleep reading a pipe (its wait channel).

    Nothing else tells that a process sits in ``read()``; the check is repeated until
    then (it is no guess at a duration: a slow start only takes more rounds).
    """
    wchan = Path(f"/proc/{pid}/wchan")
    async with asyncio.timeout(LIMIT):
        while "pipe" not in wchan.read_text():
            await asyncio.sleep(0.005)


async def test_audit_stopped_reports_itself_stopped(box: Sandbox, tmp_path: Path) -> None:
    double, release = _double(box), asyncio.Event()
    double.inject("GET", f"{INBOX}.list", Fault.held(release))
    junit = tmp_path / "audit.xml"
    run = await _start(box, "audit", "--json", "--junit", str(junit))
    async with asyncio.timeout(LIMIT):
        await double.wait_received("GET", f"{INBOX}.list", 1)
    run.process.send_signal(signal.SIGTERM)
    code, out, _err = await run.finish()
    release.set()

    doc = _check_stopped_report(out, code, junit, signal.SIGTERM)
    assert doc["command"] == "audit"
    assert doc["inboxes"] == []


async def test_audit_stopped_during_the_probes_reports_each_inbox(
    box: Sandbox, tmp_path: Path, silent: Silent
) -> None:
    """Rocket.Chat was read; the third stored inbox's SMTP server never answers. A stop
    then leaves the first two probed, the third cut short and the rest not started,
    each with what Rocket.Chat says of it."""
    batch, junit = _batch(box), tmp_path / "set.xml"
    code, _out, _err = await (await _set(box, batch, junit)).finish()
    assert code == 0
    docs = sorted(_double(box).inboxes.values(), key=lambda d: str(d["email"]))
    (third,) = [d for d in docs if d["email"] == "inbox2@example.com"]
    third["smtp"]["port"] = silent.port
    junit = tmp_path / "audit.xml"
    run = await _start(box, "audit", "--json", "--junit", str(junit), "--concurrency", "1")
    async with asyncio.timeout(LIMIT):
        await silent.reached.wait()
    run.process.send_signal(signal.SIGTERM)
    code, out, _err = await run.finish()

    report = _check_stopped_report(out, code, junit, signal.SIGTERM)
    assert report["command"] == "audit"
    by_email = {i["email"]: i for i in report["inboxes"]}
    assert len(by_email) == BATCH
    for n in range(BATCH):
        inbox = by_email[f"inbox{n}@example.com"]
        stages = {s["stage"]: s for s in inbox["stages"]}
        assert stages["rocketchat"]["status"] == "passed"  # stored, active: read before the stop
        probes = {stages["smtp"]["message"], stages["imap"]["message"]}
        if n < 2:
            assert inbox["status"] in ("passed", "warning"), inbox
        elif n == 2:
            assert probes == {"stopped by SIGTERM during the probe, before it finished"}
        else:
            assert probes == {"not started: stopped by SIGTERM"}
