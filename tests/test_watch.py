"""``--serve ADDR:PORT --every DURATION``: the exporter serves the last completed round over
real HTTP, refreshes after each round, never overlaps rounds, logs into each server once per
round, answers 404 elsewhere and stops on SIGTERM as a real process. Waits are on the
exporter's own signals (its condition, or /metrics polled under a deadline), never on time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.check import check
from provision.errors import ConfigError, ConfigProblem, RocketChatUnavailableError
from provision.inbox import load_inboxes
from provision.models import ProbeOptions
from provision.results import FailureClass, InboxResult, Report, Stage, StageResult
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.imapd import start_imap_server
from provision.sandbox.smtpd import start_smtp_server
from provision.watch import Exporter, parse_duration, parse_listen

runner = CliRunner()
CANARY = "Canary-Watch-Pw-5d20"
ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def _http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """One request over a real socket; the status line, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()  # the exporter closes after each answer
    except ConnectionResetError:
        raw = b""  # dropped with our bytes unread (an oversized head): no answer either
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *rows = head.decode("ascii").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (r.partition(":") for r in rows)}
    return status, headers, body


async def _metrics(port: int) -> Samples:
    status, headers, body = await _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    return _samples(body.decode("utf-8"))


def _report(name: str = "Support") -> Report:
    inbox = InboxResult(name=name, email="support@example.com")
    inbox.stages = [StageResult(stage=Stage.SMTP, elapsed_ms=10), StageResult(stage=Stage.IMAP)]
    return Report(command="check", inboxes=[inbox], elapsed_ms=12.0)


@contextlib.asynccontextmanager
async def _running(exporter: Exporter) -> AsyncIterator[int]:
    """Run ``exporter`` on 127.0.0.1 (a port of the system's choosing) until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(exporter.run("127.0.0.1", 0, stop=stop))
    try:
        async with asyncio.timeout(10):
            await exporter.listening.wait()
        assert exporter.address is not None
        yield exporter.address[1]
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def _until(exporter: Exporter, done: Callable[[], bool]) -> None:
    async with asyncio.timeout(20), exporter.changed:
        await exporter.changed.wait_for(done)


def _exporter(
    one_round: Callable[[], Awaitable[Report]],
    *,
    every: float = 60.0,
    deadline: float = 30.0,
    quiet: bool = False,
) -> tuple[Exporter, list[str]]:
    lines: list[str] = []
    made = Exporter(
        one_round,
        command="check",
        every=every,
        deadline=deadline,
        log=lines.append,
        grace=0,
        quiet=quiet,
    )
    return made, lines


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("0.5s", 0.5), (" 2m ", 120)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "5x", "0s", "-1s", "1h30m", "", "s", "1.s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--every"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:9188", ("127.0.0.1", 9188)), (":0", ("", 0)), ("[::1]:80", ("::1", 80))],
)
def test_listen_addresses_parse(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text) == address


@pytest.mark.parametrize("text", ["9188", "host:", "host:x", "h:70000", "::1:80", "h:-1"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--serve"):
        parse_listen(text)


def _closed_port_inbox(tmp_path: Path) -> Path:
    """One inbox whose servers refuse at once (closed loopback ports)."""
    server = {"server": "127.0.0.1", "port": 9, "username": "u", "password": CANARY}
    inbox = {
        "name": "Closed",
        "email": "closed@example.com",
        "smtp": {**server, "secure": False},
        "imap": {**server, "secure": False},
    }
    path = tmp_path / "inbox.json"
    path.write_text(json.dumps(inbox))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--serve", "127.0.0.1:0", "--every", "5x"], "give a number and a unit"),
        (["--serve", "127.0.0.1:0", "--every", "0s"], "longer than 0"),
        (["--serve", "nowhere"], "give ADDR:PORT"),
        (["--every", "30s"], "--every needs --serve"),
        (["--serve", "127.0.0.1:0", "--json"], "do not give --json"),
        (["--serve", "127.0.0.1:0", "--metrics", "m.prom"], "do not give --metrics"),
        (["--serve", "127.0.0.1:0", "--junit", "j.xml"], "do not give --junit"),
        (["--serve", "127.0.0.1:0", "--offline"], "do not give --offline"),
    ],
)
def test_bad_serve_options_are_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["check", str(_closed_port_inbox(tmp_path)), *args])
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert "serving" not in result.stderr


def test_standard_input_cannot_be_served(tmp_path: Path) -> None:
    inbox = _closed_port_inbox(tmp_path).read_text()
    result = runner.invoke(app, ["check", "-", "--serve", "127.0.0.1:0"], input=inbox)
    assert result.exit_code == 2
    assert "give files, not '-'" in result.stderr


def test_bad_input_is_exit_2_before_listening(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: X\nemail: nope\nsmtp: {{password: {CANARY}}}\n")
    result = runner.invoke(app, ["check", str(bad), "--serve", "127.0.0.1:0"])
    assert result.exit_code == 2
    assert "email" in result.stderr
    assert "serving" not in result.stderr
    assert CANARY not in result.stderr


def test_an_address_in_use_is_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(
            app, ["check", str(_closed_port_inbox(tmp_path)), "--serve", f"127.0.0.1:{port}"]
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


# --- the exporter in process ------------------------------------------------------------


async def test_before_the_first_round_the_exposition_says_so_then_refreshes() -> None:
    release = asyncio.Event()

    async def one_round() -> Report:
        await release.wait()
        return _report()

    exporter, lines = _exporter(one_round)
    async with _running(exporter) as port:
        before = await _metrics(port)
        assert _get(before, "provision_exporter_rounds_total", command="check") == 0
        assert _get(before, "provision_exporter_round_running", command="check") == 1
        assert not {n for n in _names(before) if not n.startswith("provision_exporter_")}
        release.set()
        await _until(exporter, lambda: exporter.completed == 1)
        after = await _metrics(port)
    assert _get(after, "provision_exporter_rounds_total", command="check") == 1
    assert _get(after, "provision_exporter_round_running", command="check") == 0
    who = {"command": "check", "inbox": "Support", "email": "support@example.com"}
    assert _get(after, "provision_probe_up", **who, stage="smtp") == 1
    assert _get(after, "provision_last_run_success", command="check") == 1
    assert lines[0] == f"serving http://127.0.0.1:{port}/metrics, a round every 60 s"
    assert lines[1].startswith("round 1: 1 inbox, 0 failed, exit 0, ")
    assert lines[-1] == "stopped after 1 rounds"


async def test_quiet_logs_only_the_rounds_that_did_not_pass() -> None:
    rounds = itertools.count(1)

    async def one_round() -> Report:
        report = _report()
        if next(rounds) == 2:  # the second round's SMTP login fails
            report.inboxes[0].stages[0].fail(FailureClass.AUTH_FAILED, "535 wrong password")
        return report

    exporter, lines = _exporter(one_round, every=0.01, quiet=True)
    async with _running(exporter):
        await _until(exporter, lambda: exporter.completed >= 3)
    rounds_logged = [line for line in lines if line.startswith("round ")]
    assert rounds_logged[0].startswith("round 2: 1 inbox, 1 failed, exit ")
    assert not any(line.startswith(("round 1:", "round 3:")) for line in lines)


async def test_rounds_never_overlap_and_an_overrun_delays_the_next() -> None:
    running = 0
    most = 0
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def slow_round() -> Report:
        nonlocal running, most
        running += 1
        most = max(most, running)
        starts.append(loop.time())
        await asyncio.sleep(0.15)  # the round's own work: longer than --every
        running -= 1
        return _report()

    exporter, lines = _exporter(slow_round, every=0.05)
    async with _running(exporter) as port:
        await _until(exporter, lambda: exporter.completed >= 3)
        samples = await _metrics(port)
    assert most == 1
    assert all(b - a >= 0.149 for a, b in itertools.pairwise(starts))  # clock resolution
    assert _get(samples, "provision_exporter_overruns_total", command="check") >= 3
    overran = [line for line in lines if line.startswith("round 1 took ")]
    assert overran[0].endswith(" s, longer than --every 0.05 s: the next one starts now")


async def test_a_round_past_the_deadline_or_with_bad_input_keeps_the_last_round() -> None:
    outcomes = ["first", "config", "hang", "rocketchat", "last"]
    forever = asyncio.Event()
    go = asyncio.Event()

    async def one_round() -> Report:
        outcome = outcomes.pop(0) if outcomes else "hang"
        if outcome == "config":
            raise ConfigError([ConfigProblem("missing field", file="i.yaml", field="smtp")])
        if outcome == "hang":
            await forever.wait()
        if outcome == "rocketchat":
            raise RocketChatUnavailableError("Rocket.Chat answered 503", hint="try later")
        if outcome == "last":
            await go.wait()  # held until the test has seen round 1's metrics kept
        return _report(outcome)

    exporter, lines = _exporter(one_round, every=0.01, deadline=0.05)
    async with _running(exporter) as port:
        await _until(exporter, lambda: exporter.errors == 3)
        kept = await _metrics(port)
        go.set()
        await _until(exporter, lambda: exporter.completed == 2)
        fresh = await _metrics(port)
    assert _get(kept, "provision_exporter_round_errors_total", command="check") == 3
    assert _get(kept, "provision_exporter_rounds_total", command="check") == 1
    assert any(("inbox", "first") in labels for _, labels in kept)  # round 1's, still served
    assert any(("inbox", "last") in labels for _, labels in fresh)
    assert not any(("inbox", "first") in labels for _, labels in fresh)
    assert "round 2: bad input, last round kept: i.yaml: smtp: missing field" in lines
    assert "round 3: no report within the deadline (0.05 s)" in lines
    assert "round 4: Rocket.Chat: Rocket.Chat answered 503 (try later); last round kept" in lines


async def test_a_bug_in_a_round_ends_the_exporter_instead_of_serving_stale_rounds() -> None:
    async def broken_round() -> Report:
        raise RuntimeError("a bug")

    exporter, _ = _exporter(broken_round)
    with pytest.raises(RuntimeError, match="a bug"):
        async with asyncio.timeout(10):
            await exporter.run("127.0.0.1", 0)
    assert exporter.completed == 0


async def test_other_paths_methods_and_garbage_get_no_metrics() -> None:
    async def one_round() -> Report:
        return _report()

    exporter, _ = _exporter(one_round)
    async with _running(exporter) as port:
        await _until(exporter, lambda: exporter.completed == 1)
        for path in (b"/", b"/metricsx", b"/metrics/", b"/../metrics", b"/favicon.ico"):
            status, _, body = await _http(port, b"GET " + path + b" HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 404 Not Found", path
            assert b"provision_" not in body
        status, headers, body = await _http(port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 405 Method Not Allowed"
        assert headers["allow"] == "GET, HEAD"
        status, _, body = await _http(port, b"nonsense\r\n\r\n")
        assert status == "HTTP/1.1 400 Bad Request"
        status, headers, body = await _http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert body == b""
        assert int(headers["content-length"]) > 0
        status, _, body = await _http(port, b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert b"provision_probe_up" in body
        # A head past the size cap is dropped unanswered, and the exporter goes on.
        status, _, _ = await _http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
        assert status == ""
        assert await _metrics(port)


async def test_a_failing_login_is_tried_once_per_round(tmp_path: Path) -> None:
    """Wrong passwords at real SMTP and IMAP servers: one AUTH and one LOGIN per round,
    so a watch never locks the account out by retrying within a round."""
    ca = SandboxCA.create()
    context = ca.server_context(CertKind.VALID)
    user = "support@example.com"
    smtp = await start_smtp_server(mode="starttls", tls_context=context, users={user: "right"})
    imap = await start_imap_server(
        implicit_tls=True, tls_context=context, user=user, password="right"
    )
    ca_file = ca.write_ca(tmp_path / "ca.pem")
    inbox = {
        "name": "Support",
        "email": user,
        "smtp": {"server": "127.0.0.1", "port": smtp.port, "secure": False},
        "imap": {"server": "127.0.0.1", "port": imap.port, "secure": True},
    }
    for proto in ("smtp", "imap"):
        inbox[proto].update(username=user, password=CANARY)  # type: ignore[attr-defined]
    source = tmp_path / "inbox.json"
    source.write_text(json.dumps(inbox))
    options = ProbeOptions(ca_file=ca_file, step_timeout=5, timeout=20)
    seen: list[tuple[int, int]] = []

    async def one_round() -> Report:
        report = await check(load_inboxes([str(source)]).inboxes, options)
        seen.append((len(smtp.auth_attempts), imap.commands.count("LOGIN")))
        return report

    exporter, lines = _exporter(one_round, every=0.01)
    try:
        async with _running(exporter) as port:
            await _until(exporter, lambda: exporter.completed >= 3)
            samples = await _metrics(port)
    finally:
        await smtp.close()
        await imap.close()
    assert seen[:3] == [(1, 1), (2, 2), (3, 3)]
    assert not any(a.success for a in smtp.auth_attempts)
    who = {"command": "check", "inbox": "Support", "email": user}
    for stage in ("smtp", "imap"):
        assert _get(samples, "provision_probe_up", **who, stage=stage) == 0
        assert (
            _get(
                samples,
                "provision_probe_failure_info",
                **who,
                stage=stage,
                **{"class": "auth-failed"},
            )
            == 1
        )
    assert all(CANARY not in line for line in lines)


# --- the real process -------------------------------------------------------------------


async def _spawn(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provision",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


async def _line(stream: asyncio.StreamReader | None, start: str, seen: list[str]) -> str:
    """Read ``stream`` up to the first line that starts with ``start``."""
    assert stream is not None
    async with asyncio.timeout(30):
        while True:
            line = (await stream.readline()).decode()
            assert line, "the process ended early: " + "".join(seen)
            seen.append(line)
            if line.startswith(start):
                return line


async def _start(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int, list[str]]:
    """``provision ARGS`` as a child process; its port from the 'serving' line on stderr."""
    child = await _spawn(*args, cwd=cwd, env=env)
    lines: list[str] = []
    line = await _line(child.stderr, "serving http://127.0.0.1:", lines)
    return child, int(line.split(":")[2].split("/")[0]), lines


@contextlib.asynccontextmanager
async def _sandbox_process(directory: Path) -> AsyncIterator[Path]:
    """``provision sandbox`` as its own process (so that a probe cut off by SIGTERM
    mid-handshake leaves nothing half-open in this one); its directory of files."""
    box = await _spawn("sandbox", "--dir", str(directory), cwd=directory.parent)
    try:
        await _line(box.stdout, "check it with:", [])
        yield directory
    finally:
        box.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await box.communicate()


async def _poll(port: int, done: Callable[[Samples], bool]) -> Samples:
    """/metrics until ``done`` holds, under a deadline (a poll, not a timed wait)."""
    async with asyncio.timeout(30):
        while True:
            samples = await _metrics(port)
            if done(samples):
                return samples
            await asyncio.sleep(0.05)


async def _stop(child: asyncio.subprocess.Process, sig: signal.Signals) -> tuple[str, str]:
    child.send_signal(sig)
    async with asyncio.timeout(20):
        out, err = await child.communicate()
    return out.decode(), err.decode()


def _rounds(samples: Samples) -> float:
    return _get(samples, "provision_exporter_rounds_total", command="check")


async def test_the_exporter_process_serves_refreshes_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with _sandbox_process(tmp_path / "box") as box:
        wrong = box / "wrong.yaml"
        wrong.write_text((box / "inboxes.yaml").read_text().replace("${file:password}", CANARY, 1))
        secret = (box / "password").read_text().strip()
        args = ["check", str(wrong), "--ca-file", str(box / "ca.pem"), "--step-timeout", "5"]
        child, port, early = await _start(
            *args, "--serve", "127.0.0.1:0", "--every", "0.2s", cwd=tmp_path
        )
        try:
            first = await _poll(port, lambda s: _rounds(s) >= 1)
            stamp = _get(first, "provision_last_run_timestamp_seconds", command="check")
            later = await _poll(
                port,
                lambda s: _get(s, "provision_last_run_timestamp_seconds", command="check") > stamp,
            )
            status, _, body = await _http(port, b"GET / HTTP/1.1\r\n\r\n")
        finally:
            out, err = await _stop(child, signal.SIGTERM)
    assert child.returncode == 0, err
    assert status == "HTTP/1.1 404 Not Found"
    assert _rounds(later) > _rounds(first)
    support = {"command": "check", "inbox": "Support", "email": "support@example.com"}
    assert _get(later, "provision_probe_up", **support, stage="smtp") == 0
    assert _get(later, "provision_probe_up", **support, stage="imap") == 1
    assert _get(later, "provision_last_run_exit_code", command="check") == 14
    stderr = "".join(early) + err
    assert "stopped by SIGTERM after" in stderr
    assert "round 1: 2 inboxes, 1 failed, exit 14" in stderr
    assert out == ""
    for leaked in (CANARY, secret):
        assert leaked not in stderr
        assert leaked not in body.decode()


async def test_sigint_between_rounds_stops_it_cleanly(tmp_path: Path) -> None:
    child, port, _ = await _start(
        "check", str(_closed_port_inbox(tmp_path)), "--serve", "127.0.0.1:0", cwd=tmp_path
    )
    try:
        await _poll(port, lambda s: _rounds(s) >= 1)
    finally:
        _, err = await _stop(child, signal.SIGINT)
    assert child.returncode == 0, err
    assert "stopped by SIGINT after 1 rounds" in err
    assert "Traceback" not in err


async def test_a_file_broken_mid_run_is_a_round_error_logged_without_control_characters(
    tmp_path: Path,
) -> None:
    """Files are read again each round: one broken since the start keeps the last round
    served, counts an error, and its problem is logged with control characters escaped."""
    source = _closed_port_inbox(tmp_path)
    child, port, early = await _start(
        "check", str(source), "--serve", "127.0.0.1:0", "--every", "0.1s", cwd=tmp_path
    )
    try:
        await _poll(port, lambda s: _rounds(s) >= 1)
        broken = json.loads(source.read_text())
        broken["name"] = "Evil \x1b]0;retitled\x07"
        broken["smtp"]["port"] = "25"  # a port as text: a bad-input problem
        source.write_text(json.dumps(broken))
        errors = await _poll(
            port, lambda s: _get(s, "provision_exporter_round_errors_total", command="check") >= 1
        )
    finally:
        _, err = await _stop(child, signal.SIGTERM)
    assert child.returncode == 0, err
    closed = {"command": "check", "inbox": "Closed", "email": "closed@example.com"}
    assert _get(errors, "provision_inbox_up", **closed) == 0  # the last good round, kept
    logged = "".join(early) + err
    assert "bad input, last round kept" in logged
    assert "inbox 'Evil \\x1b]0;retitled\\x07': smtp.port" in logged
    assert "\x1b" not in logged
    assert "\x07" not in logged
    assert CANARY not in logged


async def test_many_rounds_leave_no_descriptor_behind(tmp_path: Path) -> None:
    """A long-lived exporter: 40 real check rounds (ports refused at once) and 40 scrapes
    leave the process with the descriptors it had after the first round."""
    inboxes = load_inboxes([str(_closed_port_inbox(tmp_path))]).inboxes
    options = ProbeOptions(step_timeout=2, timeout=10)

    async def one_round() -> Report:
        return await check(inboxes, options)

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    exporter, _ = _exporter(one_round, every=0.001)
    async with _running(exporter) as port:
        await _until(exporter, lambda: exporter.completed >= 1)
        await _metrics(port)
        before = descriptors()
        for _ in range(40):
            await _metrics(port)
        await _until(exporter, lambda: exporter.completed >= 41)
        after = descriptors()
    assert after <= before + 6, (before, after)  # a round in flight at most, not 40 leaks


async def test_sigterm_mid_round_cancels_it_and_exits_0(tmp_path: Path) -> None:
    """A round stuck on a server that never answers (a 30 s step cap) ends at SIGTERM."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepted, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = _closed_port_inbox(tmp_path)
    inbox = json.loads(source.read_text())
    for proto in ("smtp", "imap"):
        inbox[proto]["port"] = port
    source.write_text(json.dumps(inbox))
    try:
        args = ["check", str(source), "--step-timeout", "30", "--timeout", "60"]
        child, http, _ = await _start(*args, "--serve", "127.0.0.1:0", cwd=tmp_path)
        try:
            running = await _poll(
                http,
                lambda s: _get(s, "provision_exporter_round_running", command="check") == 1,
            )
            async with asyncio.timeout(10):  # the greeting wait is cut, not waited out
                _, err = await _stop(child, signal.SIGTERM)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()
    assert _rounds(running) == 0
    assert child.returncode == 0, err
    assert "stopped by SIGTERM after 0 rounds" in err
    assert "Traceback" not in err
