"""Secret canaries: no command, output mode or error path shows a password or token.

Real servers on 127.0.0.1 (aiosmtpd with STARTTLS, pymap over TLS, the Rocket.Chat
double over HTTP) accept canary credentials: an SMTP password, an IMAP password and a
Rocket.Chat token, each unique. Every way of running ``provision`` is exercised through
its command line: ``check`` (text, ``--json``, ``-v``, ``--junit``, GitHub Actions
annotations and step summary), ``set`` (``--dry-run``, create, unchanged, ``--json``,
``--junit``, ``-v``), ``export`` (standard output and ``--output``), and the error paths:
wrong passwords (themselves canaries), a bad token, an input file broken on the password
line, an unknown department, Rocket.Chat 500 and HTML errors that echo the secrets, and
a crash inside each probe whose exception text holds the passwords.

Everything a run leaves behind is searched: standard output and error, every report
file, and every log record of every logger at DEBUG (``provision``, aioimaplib,
aiosmtplib, httpx, httpcore, uvicorn, asyncio; only the mail servers' own loggers are
left out, they are the other side). A canary fails the test in any of its forms: as is,
base64 (AUTH LOGIN) and the AUTH PLAIN payloads ``base64("\\0user\\0pass")`` and
``base64("user\\0pass")``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from provision.cli import app
from provision.probes.imap import session as imap_session
from provision.probes.smtp import session as smtp_session
from provision.sandbox.ca import SandboxCA
from provision.sandbox.imapd import start_imap_server
from provision.sandbox.rocketchat import start_rocketchat
from provision.sandbox.smtpd import start_smtp_server
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat

USER = "support@example.com"
SMTP_CANARY = "Canary-smtp-4f1e9b77"
IMAP_CANARY = "Canary-imap-8c2d7a31"
TOKEN_CANARY = "Canary-token-5e3a91f0c4"
WRONG_CANARY = "Canary-wrong-0d6b2c58"  # a wrong password is a secret too
WRONG_TOKEN_CANARY = "Canary-badtoken-77e1a0"
CANARIES = (SMTP_CANARY, IMAP_CANARY, TOKEN_CANARY, WRONG_CANARY, WRONG_TOKEN_CANARY)

#: Loggers of the servers under test (the remote side): they may log what they receive.
SERVER_LOGGERS = ("mail.log", "pymap")
#: Loggers raised to DEBUG for every run.
LOGGERS = (
    "",
    "provision",
    "aioimaplib",
    "aioimaplib.aioimaplib",
    "aiosmtplib",
    "httpx",
    "httpcore",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "asyncio",
)

runner = CliRunner()


def forms(secret: str) -> list[str]:
    """The secret and the shapes it takes on the wire (AUTH LOGIN and PLAIN payloads)."""
    raw, user = secret.encode(), USER.encode()
    payloads = (raw, b"\0" + user + b"\0" + raw, user + b"\0" + raw)
    return [secret, *(base64.b64encode(p).decode() for p in payloads)]


@dataclass
class World:
    """The servers, the files and the environment of one test."""

    directory: Path
    ca_file: Path
    inbox_file: Path
    rocketchat_url: str
    rocketchat: FaultyRocketChat
    env: dict[str, str]
    smtp_port: int
    imap_port: int
    outputs: list[tuple[str, str]] = field(default_factory=list)

    def inbox_yaml(
        self, *, smtp_password: str = "${SMTP_PASSWORD}", department: str = "Support"
    ) -> str:
        """Two inboxes: passwords from the environment, from a file, and literal."""

        def inbox(name: str, email: str, smtp_pw: str) -> str:
            return (
                f"  - name: {name}\n"
                f"    email: {email}\n"
                f"    department: {department}\n"
                f"    smtp:\n"
                f"      server: localhost\n"
                f"      port: {self.smtp_port}\n"
                f"      username: {USER}\n"
                f'      password: "{smtp_pw}"\n'
                f"      secure: false\n"
                f"    imap:\n"
                f"      server: localhost\n"
                f"      port: {self.imap_port}\n"
                f"      username: {USER}\n"
                f'      password: "${{file:imap-password}}"\n'
                f"      secure: true\n"
                f"      maxRetries: 10\n"
            )

        literal = SMTP_CANARY if smtp_password == "${SMTP_PASSWORD}" else smtp_password
        return (
            "inboxes:\n"
            + inbox("Support", "support@example.com", smtp_password)
            + inbox("Sales", "sales@example.com", literal)
        )

    def write(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.write_text(text)
        return path

    async def run(
        self, label: str, args: list[str], *, env: dict[str, str] | None = None
    ) -> Result:
        """Run the command line in a thread (it has its own event loop); keep its output.

        ``-v`` adds a handler on the ``provision`` logger bound to that run's standard
        error; it is removed after the run, as a process of its own would drop it.
        """
        ours = logging.getLogger("provision")
        handlers = list(ours.handlers)
        try:
            result = await asyncio.to_thread(
                runner.invoke, app, args, env={**self.env, **(env or {})}, catch_exceptions=True
            )
        finally:
            for handler in ours.handlers[:]:
                if handler not in handlers:
                    ours.removeHandler(handler)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{label}: exception escaped: {type(result.exception).__name__}")
        self.outputs.append((f"{label} stdout", result.stdout))
        self.outputs.append((f"{label} stderr", result.stderr))
        assert "Traceback" not in result.stdout + result.stderr, label
        return result

    def keep_file(self, label: str, path: Path) -> str:
        text = path.read_text()
        self.outputs.append((label, text))
        return text


@pytest.fixture
async def world(tmp_path: Path, sandbox_ca: SandboxCA, ca_file: Path) -> AsyncIterator[World]:
    context = sandbox_ca.server_context()
    smtp = await start_smtp_server(mode="starttls", tls_context=context, users={USER: SMTP_CANARY})
    imap = await start_imap_server(
        implicit_tls=True, tls_context=context, user=USER, password=IMAP_CANARY
    )
    double = FaultyRocketChat()
    admin = double.add_admin("canary-admin", token=TOKEN_CANARY)
    double.add_department("Support")
    rocketchat = await start_rocketchat(double)
    (tmp_path / "imap-password").write_text(IMAP_CANARY + "\n")
    env = {
        "SMTP_PASSWORD": SMTP_CANARY,
        "ROCKETCHAT_URL": rocketchat.url,
        "ROCKETCHAT_USER_ID": admin.id,
        "ROCKETCHAT_AUTH_TOKEN": TOKEN_CANARY,
    }
    world = World(
        directory=tmp_path,
        ca_file=ca_file,
        inbox_file=tmp_path / "inboxes.yaml",
        rocketchat_url=rocketchat.url,
        rocketchat=double,
        env=env,
        smtp_port=smtp.port,
        imap_port=imap.port,
    )
    world.inbox_file.write_text(world.inbox_yaml())
    try:
        yield world
    finally:
        await rocketchat.close()
        await imap.close()
        await smtp.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG; ``provision``'s handlers and level restored afterwards (-v)."""
    ours = logging.getLogger("provision")
    handlers, level = list(ours.handlers), ours.level
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    try:
        yield caplog
    finally:
        for handler in ours.handlers[:]:
            if handler not in handlers:
                ours.removeHandler(handler)
        ours.setLevel(level)


def assert_no_canary(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """No canary, in any form, in any output, report file or log record."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = list(world.outputs)
    records = [r for r in caplog.records if not r.name.startswith(SERVER_LOGGERS)]
    texts += [(f"log record {r.name}", formatter.format(r)) for r in records]
    assert records, "no log record at all: the loggers were not captured"
    for label, text in texts:
        for canary in CANARIES:
            for form in forms(canary):
                assert form not in text, f"{canary!r} ({form!r}) leaked in {label}"


def probe_args(world: World) -> list[str]:
    return ["--ca-file", str(world.ca_file), "--step-timeout", "3", "--timeout", "30"]


# --------------------------------------------------------------------------- check


async def test_check_in_every_output_mode(world: World, logs: pytest.LogCaptureFixture) -> None:
    file, probe = str(world.inbox_file), probe_args(world)
    junit = world.directory / "check.xml"
    summary = world.directory / "summary.md"
    summary.write_text("")

    text = await world.run("check", ["check", file, *probe])
    as_json = await world.run("check --json", ["check", file, "--json", *probe])
    verbose = await world.run(
        "check -v --junit", ["check", file, "-v", "--junit", str(junit), *probe]
    )
    github = await world.run(
        "check on GitHub Actions",
        ["check", file, "--json", *probe],
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)},
    )

    for result in (text, as_json, verbose, github):
        assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(as_json.stdout)["ok"] is True
    assert "<testsuite" in world.keep_file("junit", junit)
    world.keep_file("step summary", summary)
    assert_no_canary(world, logs)


async def test_check_wrong_passwords_and_probe_crashes(
    world: World, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = probe_args(world)
    (world.directory / "imap-password").write_text(WRONG_CANARY + "\n")
    wrong = world.write("wrong.yaml", world.inbox_yaml(smtp_password=WRONG_CANARY))
    junit = world.directory / "wrong.xml"

    text = await world.run("wrong password", ["check", str(wrong), *probe])
    as_json = await world.run(
        "wrong password --json -v --junit",
        ["check", str(wrong), "--json", "-v", "--junit", str(junit), *probe],
    )
    assert text.exit_code == as_json.exit_code == 14, text.stdout
    doc = json.loads(as_json.stdout)
    assert {s["class"] for i in doc["inboxes"] for s in i["stages"]} == {"auth-failed"}
    world.keep_file("junit of the wrong password", junit)

    (world.directory / "imap-password").write_text(IMAP_CANARY + "\n")
    crash = f"boom: {SMTP_CANARY} {IMAP_CANARY} {WRONG_CANARY}"

    async def explode(*_: Any, **__: Any) -> None:
        raise RuntimeError(crash)

    monkeypatch.setattr(smtp_session.SmtpProbe, "_authenticate", explode)
    monkeypatch.setattr(imap_session.ImapRun, "_mailbox", explode)
    crashed = await world.run("probe crash", ["check", str(world.inbox_file), "-v", *probe])
    crashed_json = await world.run(
        "probe crash --json", ["check", str(world.inbox_file), "--json", *probe]
    )

    assert crashed.exit_code == crashed_json.exit_code == 1, crashed.stdout
    doc = json.loads(crashed_json.stdout)
    assert {s["class"] for i in doc["inboxes"] for s in i["stages"]} == {"internal-error"}
    assert "RuntimeError" in crashed.stdout
    assert_no_canary(world, logs)


async def test_broken_input_files_never_echo_the_password(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    good = world.inbox_yaml(smtp_password=SMTP_CANARY)
    broken = {
        "unterminated-quote.yaml": good.replace(f'"{SMTP_CANARY}"', f'"{SMTP_CANARY}', 1),
        "tab-indented.yaml": good.replace(
            f'      password: "{SMTP_CANARY}"', f'\t  password: "{SMTP_CANARY}"', 1
        ),
        "bad-mapping.yaml": good.replace(
            f'password: "{SMTP_CANARY}"', f"password: {SMTP_CANARY}: {SMTP_CANARY}", 1
        ),
        "number-password.yaml": good.replace(f'"{SMTP_CANARY}"', f"[{SMTP_CANARY}]", 1),
        "broken.json": (
            '{"name": "x", "email": "x@example.com", "smtp": {"password": "'
            + SMTP_CANARY
            + '",, "port": 1}}'
        ),
        # The separator lost: the password becomes part of a key.
        "colon-without-space.yaml": good.replace(
            f'password: "{SMTP_CANARY}"', f"password:{SMTP_CANARY}", 1
        ).replace("    smtp:\n", "    smtp: {", 1),
        "flow-colon-without-space.yaml": (
            "name: x\nemail: x@example.com\n"
            f"smtp: {{server: localhost, port: 1, username: u, password:{SMTP_CANARY}, "
            "secure: false}\n"
        ),
        "space-instead-of-colon.yaml": good.replace(
            f'password: "{SMTP_CANARY}"', f"password {SMTP_CANARY}:", 1
        ),
        "equals-instead-of-colon.yaml": good.replace(
            f'password: "{SMTP_CANARY}"', f"password={SMTP_CANARY}", 1
        ),
        "duplicated-broken-key.json": (
            '{"name": "x", "email": "x@example.com", "smtp": {'
            f'"password {SMTP_CANARY}": 1, "password {SMTP_CANARY}": 2}}}}'
        ),
    }
    for name, content in broken.items():
        path = world.write(name, content)
        for extra in ([], ["--json"]):
            result = await world.run(f"{name} {extra}", ["check", str(path), *extra])
            assert result.exit_code == 2, (name, result.stdout, result.stderr)
    # The key that swallowed the password is named by its known part, with a suggestion.
    doc = json.loads(result.stdout)  # the last file, with --json
    unknown, duplicate = [e for e in doc["errors"] if e["field"] == "smtp.password…"]
    assert "did you mean 'password'" in unknown["message"]
    assert duplicate["message"].startswith("duplicate key 'password…'")
    assert_no_canary(world, logs)


# --------------------------------------------------------------------------- set, export


async def test_set_and_export_in_every_output_mode(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    file, probe = str(world.inbox_file), probe_args(world)
    junit = world.directory / "set.xml"
    exported = world.directory / "exported.yaml"

    dry = await world.run("set --dry-run", ["set", file, "--dry-run", *probe])
    dry_json = await world.run("set --dry-run --json", ["set", file, "--dry-run", "--json", *probe])
    created = await world.run(
        "set -v --junit", ["set", file, "-v", "--junit", str(junit), "--send-test", *probe]
    )
    unchanged = await world.run("set --json", ["set", file, "--json", *probe])
    export_out = await world.run("export", ["export", "-v"])
    export_file = await world.run("export -o", ["export", "--output", str(exported)])

    for result in (dry, dry_json, created, unchanged, export_out, export_file):
        assert result.exit_code == 0, result.stdout + result.stderr
    assert [i["action"] for i in json.loads(unchanged.stdout)["inboxes"]] == ["unchanged"] * 2
    stored = [json.dumps(i, default=str) for i in world.rocketchat.inboxes.values()]
    assert len(stored) == 2
    assert SMTP_CANARY in stored[0]  # the secrets did reach Rocket.Chat, and only there
    world.keep_file("junit", junit)
    assert "SUPPORT_EXAMPLE_COM_SMTP_PASSWORD" in world.keep_file("exported file", exported)
    assert_no_canary(world, logs)


async def test_set_error_paths(world: World, logs: pytest.LogCaptureFixture) -> None:
    file, probe = str(world.inbox_file), probe_args(world)
    rc = world.rocketchat

    bad_token = await world.run(
        "set with a bad token",
        ["set", file, "--json", "-v", *probe],
        env={"ROCKETCHAT_AUTH_TOKEN": WRONG_TOKEN_CANARY},
    )
    export_bad_token = await world.run(
        "export with a bad token", ["export"], env={"ROCKETCHAT_AUTH_TOKEN": WRONG_TOKEN_CANARY}
    )
    unknown = world.write("unknown.yaml", world.inbox_yaml(department="No Such Department"))
    unknown_department = await world.run("unknown department", ["set", str(unknown), *probe])

    # Error bodies that echo what they were sent: the token and the passwords.
    echo = f"token {TOKEN_CANARY} body smtp {SMTP_CANARY} imap {IMAP_CANARY}"
    rc.inject(
        "POST",
        "/api/v1/email-inbox",
        Fault.unsuccessful(f"Match error: {echo}", status=500),
        times=20,
    )
    # A short deadline: the 5xx answers are retried with back-off while it lasts.
    json_500 = await world.run(
        "Rocket.Chat 500", ["set", file, "--json", "-v", *probe, "--timeout", "1.5"]
    )
    page = f"<html><body><h1>502 Bad Gateway</h1><pre>{echo}</pre></body></html>".encode()
    for path in ("/api/v1/email-inbox.search", "/api/v1/email-inbox.list"):
        rc.inject("*", path, Fault(status=502, body=page, content_type="text/html"), times=20)
    html_502 = await world.run("Rocket.Chat HTML 502", ["set", file, *probe, "--timeout", "1.5"])
    html_export = await world.run("export, HTML 502", ["export", "--timeout", "1.5"])

    assert bad_token.exit_code == 20, bad_token.stdout + bad_token.stderr
    assert export_bad_token.exit_code == 20, export_bad_token.stdout + export_bad_token.stderr
    assert unknown_department.exit_code == 2, unknown_department.stdout
    assert json_500.exit_code == 20, json_500.stdout
    assert html_502.exit_code == 20, html_502.stdout
    assert html_export.exit_code == 20, html_export.stdout + html_export.stderr
    assert "***" in json_500.stdout + html_502.stdout  # the echo arrived, masked
    assert rc.inboxes == {}
    assert_no_canary(world, logs)


# --------------------------------------------------------------------------- beyond the login


async def test_envelope_and_round_trip_in_every_output_mode(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    """--envelope (MAIL/RCPT/RSET) and --round-trip (DATA, IMAP search and delete): the
    sandbox's aiosmtpd swallows the message, so the round trip ends as never seen."""
    file, probe = str(world.inbox_file), probe_args(world)
    junit = world.directory / "round-trip.xml"
    trip = ["--round-trip", "--round-trip-timeout", "0.3"]

    envelope = await world.run("check --envelope", ["check", file, "--envelope", *probe])
    envelope_json = await world.run(
        "check --envelope --json -v", ["check", file, "--envelope", "--json", "-v", *probe]
    )
    set_envelope = await world.run(
        "set --envelope --dry-run", ["set", file, "--envelope", "--dry-run", *probe]
    )
    round_trip = await world.run("check --round-trip", ["check", file, *trip, *probe])
    round_trip_json = await world.run(
        "check --round-trip --json -v --junit",
        ["check", file, *trip, "--json", "-v", "--junit", str(junit), *probe],
    )

    for result in (envelope, envelope_json, set_envelope):
        assert result.exit_code == 0, result.stdout + result.stderr
    steps = [
        s["step"] for s in json.loads(envelope_json.stdout)["inboxes"][0]["stages"][0]["steps"]
    ]
    assert steps[-4:] == ["mail-from", "rcpt-to", "rset", "quit"]
    assert round_trip.exit_code == round_trip_json.exit_code == 15, round_trip.stdout
    stages = json.loads(round_trip_json.stdout)["inboxes"][0]["stages"]
    assert stages[-1]["stage"] == "round-trip"
    assert stages[-1]["class"] == "not-delivered"
    world.keep_file("junit of the round trip", junit)
    assert_no_canary(world, logs)


async def test_envelope_refusal_that_echoes_the_password_is_masked(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    from tests.servers.smtp_misbehaving import Script, start_scripted_server

    echo = f"553 5.7.1 Sender address rejected: not owned by user {USER} ({SMTP_CANARY})\r\n"
    server = await start_scripted_server(
        Script(replies={"MAIL": b"250 2.1.0 Ok\r\n", "RCPT": echo.encode()})
    )
    try:
        text = world.inbox_yaml().replace(f"port: {world.smtp_port}", f"port: {server.port}")
        path = world.write("echo.yaml", text)
        args = ["check", str(path), "--envelope", *probe_args(world)]
        shown = await world.run("envelope refusal", args)
        as_json = await world.run("envelope refusal --json -v", [*args, "--json", "-v"])
    finally:
        await server.close()

    assert shown.exit_code == as_json.exit_code == 15, shown.stdout
    assert "Sender address rejected" in shown.stdout
    assert "***" in shown.stdout


# --------------------------------------------------------------------------- audit


async def test_audit_in_every_output_mode_and_error_path(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    """The passwords come back from Rocket.Chat's API in clear: they must stay in memory."""
    file, probe = str(world.inbox_file), probe_args(world)
    rc = world.rocketchat
    created = await world.run("set", ["set", file, *probe])
    assert created.exit_code == 0, created.stdout
    junit = world.directory / "audit.xml"
    summary = world.directory / "audit-summary.md"
    summary.write_text("")

    healthy = await world.run("audit", ["audit", *probe])
    healthy_json = await world.run(
        "audit --json -v --junit --against",
        ["audit", "--json", "-v", "--junit", str(junit), "--against", file, *probe],
    )
    assert healthy.exit_code == healthy_json.exit_code == 0, healthy.stdout + healthy.stderr

    # The stored IMAP password of Sales is now a wrong one (a canary), and Rocket.Chat
    # switched the inbox off; its senderInfo quotes the stored SMTP password.
    (sales,) = [d for d in rc.inboxes.values() if d["email"] == "sales@example.com"]
    sales["imap"]["password"] = WRONG_CANARY
    sales["senderInfo"] = f"Sales {SMTP_CANARY}"
    rc.imap_keeps_failing("sales@example.com")
    broken = await world.run("audit, broken", ["audit", "-v", "--against", file, *probe])
    broken_json = await world.run(
        "audit, broken, --json on GitHub Actions",
        ["audit", "--json", "--against", file, "--junit", str(junit), *probe],
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert broken.exit_code == broken_json.exit_code == 14, broken.stdout + broken.stderr
    doc = json.loads(broken_json.stdout)
    (result,) = [i for i in doc["inboxes"] if i["email"] == "sales@example.com"]
    stages = {s["stage"]: s for s in result["stages"]}
    assert stages["imap"]["class"] == "auth-failed"
    assert stages["rocketchat"]["warnings"][0]["code"] == "switched-off"
    assert "imap.password: differs" in stages["drift"]["message"]
    assert "***" in stages["drift"]["message"]  # the senderInfo drift, its password masked
    world.keep_file("audit junit", junit)
    world.keep_file("audit step summary", summary)

    echo = f"token {TOKEN_CANARY} smtp {SMTP_CANARY} imap {IMAP_CANARY}"
    page = f"<html><body><h1>502 Bad Gateway</h1><pre>{echo}</pre></body></html>".encode()
    rc.inject(
        "*",
        "/api/v1/email-inbox.list",
        Fault(status=502, body=page, content_type="text/html"),
        times=20,
    )
    unreadable = await world.run("audit, HTML 502", ["audit", "--json", *probe, "--timeout", "1.5"])
    bad_token = await world.run(
        "audit with a bad token",
        ["audit", "-v", *probe],
        env={"ROCKETCHAT_AUTH_TOKEN": WRONG_TOKEN_CANARY},
    )
    assert unreadable.exit_code == bad_token.exit_code == 20, unreadable.stdout + unreadable.stderr
    assert_no_canary(world, logs)
