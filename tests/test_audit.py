"""`provision audit` end to end: inboxes created with `set` on the Rocket.Chat double (real
HTTP), each on its own real mail servers (aiosmtpd, pymap, trustme certificates), then
broken the ways inboxes break after going live, then found by `audit`.

The breaks: a password rotated at the provider (and Rocket.Chat switching the inbox off
after its failed IMAP logins), an expired certificate, an inbox left inactive that works
again, a certificate that expires soon; and drift between the files and the server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.audit import AuditTarget, audit_inboxes
from provision.commands.set import SetOptions, set_inboxes
from provision.errors import RocketChatAuthError, RocketChatCallError
from provision.inbox import load_inboxes
from provision.models import Inbox, ProbeOptions, Secret
from provision.results import Action, ExitCode, FailureClass, InboxResult, Report, Stage, Status
from provision.rocketchat.credentials import TokenAuth
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.rocketchat import RunningRocketChat, start_rocketchat
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat
from tests.servers.mailhost import MailHost

#: One mail account per inbox, so each can be broken alone. Rocket.Chat lists by name.
NAMES = ("Billing", "Helpdesk", "Sales", "Support")
TOKEN = "audit-token-3b9f"
runner = CliRunner()


def email(name: str) -> str:
    return f"{name.lower()}@example.com"


def password(name: str) -> str:
    return f"pw-{name.lower()}-5c1e"


@dataclass
class World:
    directory: Path
    ca_file: Path
    ca: SandboxCA
    hosts: dict[str, MailHost]
    rocketchat: RunningRocketChat
    double: FaultyRocketChat
    user_id: str
    env: dict[str, str] = field(default_factory=dict)

    def inbox_yaml(self, names: tuple[str, ...] = NAMES, **change: Any) -> str:
        """The inbox file; ``change`` maps a name to {"smtp_port": ...} overrides."""
        out = ["inboxes:"]
        for name in names:
            host = self.hosts[name]
            over = change.get(name, {})
            out.append(
                f"""\
  - name: {name}
    email: {email(name)}
    smtp:
      server: localhost
      port: {over.get("smtp_port", host.smtp.port)}
      username: {email(name)}
      password: ${{{over.get("smtp_password", name.upper() + "_PW")}}}
      secure: false
    imap:
      server: localhost
      port: {host.imap.port}
      username: {email(name)}
      password: ${{{name.upper()}_PW}}
      secure: true
      maxRetries: 10"""
            )
        return "\n".join(out) + "\n"

    def write(self, file: str, text: str) -> Path:
        path = self.directory / file
        path.write_text(text)
        return path

    def load(self, path: Path) -> list[Inbox]:
        return load_inboxes([str(path)], environ=self.env).inboxes

    def options(self, **kw: Any) -> ProbeOptions:
        return ProbeOptions(ca_file=self.ca_file, step_timeout=3, timeout=30, **kw)

    def target(self, **kw: Any) -> AuditTarget:
        credentials = TokenAuth(user_id=self.user_id, token=Secret(TOKEN))
        return AuditTarget(server=self.rocketchat.url, credentials=credentials, **kw)

    async def set(self, path: Path) -> Report:
        target = SetOptions(
            server=self.rocketchat.url,
            credentials=TokenAuth(user_id=self.user_id, token=Secret(TOKEN)),
        )
        return await set_inboxes(self.load(path), self.options(), target)

    async def audit(
        self, *, against: Path | None = None, options: ProbeOptions | None = None, **kw: Any
    ) -> Report:
        return await audit_inboxes(
            options or self.options(),
            self.target(**kw),
            against=self.load(against) if against else None,
            against_files=[str(against)] if against else (),
        )

    def cli(self, *args: str) -> Any:
        env = {
            **self.env,
            "ROCKETCHAT_URL": self.rocketchat.url,
            "ROCKETCHAT_USER_ID": self.user_id,
            "ROCKETCHAT_AUTH_TOKEN": TOKEN,
        }
        common = ["--ca-file", str(self.ca_file), "--step-timeout", "3", "--timeout", "30"]
        return runner.invoke(app, ["audit", *common, *args], env=env)


@pytest.fixture
async def world(tmp_path: Path, sandbox_ca: SandboxCA, ca_file: Path) -> AsyncIterator[World]:
    context = sandbox_ca.server_context(CertKind.VALID)
    hosts: dict[str, MailHost] = {}
    double = FaultyRocketChat()
    admin = double.add_admin("audit-admin", token=TOKEN)
    rocketchat = await start_rocketchat(double)
    try:
        for name in NAMES:
            hosts[name] = await MailHost.start(email(name), password(name), context)
        world = World(tmp_path, ca_file, sandbox_ca, hosts, rocketchat, double, admin.id)
        world.env = {f"{name.upper()}_PW": password(name) for name in NAMES}
        created = await world.set(world.write("inboxes.yaml", world.inbox_yaml()))
        assert [i.action for i in created.inboxes] == [Action.CREATED] * len(NAMES)
        yield world
    finally:
        await rocketchat.close()
        for host in hosts.values():
            await host.close()


def by_name(report: Report) -> dict[str, InboxResult]:
    return {inbox.name: inbox for inbox in report.inboxes}


def stage(result: InboxResult, which: Stage) -> Any:
    (found,) = [s for s in result.stages if s.stage is which]
    return found


def codes(stage_result: Any) -> list[str]:
    return [w.code for w in stage_result.warnings]


def context_for(ca: SandboxCA, *, days_left: float) -> ssl.SSLContext:
    now = dt.datetime.now(dt.UTC)
    leaf = ca.ca.issue_cert(
        "localhost",
        "127.0.0.1",
        not_before=now - dt.timedelta(days=60),
        not_after=now + dt.timedelta(days=days_left),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


# --------------------------------------------------------------------------- healthy


async def test_a_healthy_server_audits_clean_with_rocketchats_state(world: World) -> None:
    before = len(world.double.requests)
    report = await world.audit()

    assert report.exit_code is ExitCode.OK, report.to_json()
    assert report.command == "audit"
    assert [i.name for i in report.inboxes] == list(NAMES)
    for result in report.inboxes:
        assert [s.stage for s in result.stages] == [Stage.SMTP, Stage.IMAP, Stage.ROCKETCHAT]
        assert result.status() is Status.PASSED, result.to_json()
        stored = world.double.stored(world.double.inbox_id(result.email))
        state = result.to_json()["rocketchat"]
        assert state == {
            "id": stored["_id"],
            "active": True,
            "created_at": stored["_createdAt"],
            "updated_at": stored["_updatedAt"],
        }
        assert result.file is None  # read from Rocket.Chat, not from a file
    # Read-only: the list, and nothing else of the inboxes.
    seen = [(r.method, r.path) for r in world.double.requests[before:]]
    assert [p for p in seen if "email-inbox" in p[1]] == [("GET", "/api/v1/email-inbox.list")]
    assert {method for method, _ in seen} == {"GET"}


# --------------------------------------------------------------------------- breaks


async def test_each_break_is_found_with_class_hint_exit_code_and_state(world: World) -> None:
    double, hosts = world.double, world.hosts
    # Sales: the provider rotated the password; Rocket.Chat's IMAP logins then fail
    # maxRetries times and it switches the inbox off.
    await hosts["Sales"].rotate_password("rotated-at-provider-77")
    sales_id = double.imap_keeps_failing(email("Sales"))
    # Billing: the certificate expired.
    await hosts["Billing"].use_certificate(world.ca.server_context(CertKind.EXPIRED))
    # Helpdesk: left inactive by an outage that is over.
    double.switch_off(email("Helpdesk"))

    report = by_name(await world.audit())

    sales = report["Sales"]
    for probe in (Stage.SMTP, Stage.IMAP):
        assert stage(sales, probe).failure is FailureClass.AUTH_FAILED
        assert "password" in (stage(sales, probe).hint or "")
    state = stage(sales, Stage.ROCKETCHAT)
    assert codes(state) == ["switched-off"]
    (switched,) = state.warnings
    assert "most likely Rocket.Chat switched it off" in switched.message
    assert "imap.maxRetries=10" in switched.message
    assert "the SMTP login (auth-failed) and the IMAP login (auth-failed) fail:" in (
        switched.message
    )
    assert switched.field == "imap.password"  # what Rocket.Chat tripped over
    assert "imap.password" in (switched.hint or "")
    assert "turn it on again" in (switched.hint or "")
    assert sales.rocketchat is not None
    assert sales.rocketchat.active is False
    assert sales.rocketchat.inbox_id == sales_id
    assert sales.exit_code() is ExitCode.AUTH

    billing = report["Billing"]
    assert stage(billing, Stage.SMTP).failure is FailureClass.CERT_EXPIRED
    assert "renew" in (stage(billing, Stage.SMTP).hint or "")
    # Rocket.Chat does not verify IMAP certificates: it still works, with a warning.
    assert codes(stage(billing, Stage.IMAP)) == ["imap-cert-unverified"]
    assert stage(billing, Stage.ROCKETCHAT).status is Status.PASSED
    assert billing.exit_code() is ExitCode.TLS

    helpdesk = report["Helpdesk"]
    assert stage(helpdesk, Stage.SMTP).status is Status.PASSED
    (works,) = stage(helpdesk, Stage.ROCKETCHAT).warnings
    assert works.code == "inactive-works"
    assert "can be turned on again" in works.message
    assert helpdesk.exit_code() is ExitCode.OK
    assert helpdesk.exit_code(strict=True) is ExitCode.ROCKETCHAT

    assert report["Support"].status() is Status.PASSED
    # Billing comes first in Rocket.Chat's order: its TLS failure decides.
    assert (await world.audit()).exit_code is ExitCode.TLS


async def test_certificates_expiring_within_cert_days_warn_with_the_date(world: World) -> None:
    await world.hosts["Support"].use_certificate(context_for(world.ca, days_left=10.5))
    ends = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10.5)).date().isoformat()

    support = by_name(await world.audit(emails=(email("Support"),)))["Support"]
    for probe in (Stage.SMTP, Stage.IMAP):
        (expiring,) = stage(support, probe).warnings
        assert expiring.code == "cert-expiring"
        assert f"expires on {ends}" in expiring.message
    assert support.exit_code() is ExitCode.OK

    strict = await world.audit(options=world.options(strict=True), emails=(email("Support"),))
    assert strict.exit_code is ExitCode.TLS
    later = await world.audit(options=world.options(cert_days=7), emails=(email("Support"),))
    assert later.exit_code is ExitCode.OK
    assert by_name(later)["Support"].status() is Status.PASSED


async def test_email_limits_the_audit_and_reports_addresses_not_stored(world: World) -> None:
    await world.hosts["Sales"].rotate_password("rotated-at-provider-77")
    before = sum(1 for h in world.hosts.values() for _ in h.smtp.auth_attempts)

    only = await world.audit(emails=(email("Support"),))
    assert [i.name for i in only.inboxes] == ["Support"]
    assert only.exit_code is ExitCode.OK
    # The others were not probed at all.
    assert sum(1 for h in world.hosts.values() for _ in h.smtp.auth_attempts) == before + 1

    ghost = await world.audit(emails=("ghost@example.com", email("Support")))
    _support, missing = ghost.inboxes
    assert missing.email == "ghost@example.com"
    state = stage(missing, Stage.ROCKETCHAT)
    assert state.failure is FailureClass.NOT_STORED
    assert "case-sensitive" in (state.hint or "")
    assert {stage(missing, p).status for p in (Stage.SMTP, Stage.IMAP)} == {Status.SKIPPED}
    assert ghost.exit_code is ExitCode.DRIFT

    # A probe failure outranks the missing address, whatever the order.
    worse = await world.audit(emails=("ghost@example.com", email("Sales")))
    assert worse.exit_code is ExitCode.AUTH


# --------------------------------------------------------------------------- drift


async def test_no_drift_against_the_file_that_was_set(world: World) -> None:
    report = await world.audit(against=world.directory / "inboxes.yaml")
    assert report.exit_code is ExitCode.OK, report.to_json()
    for result in report.inboxes:
        drift = stage(result, Stage.DRIFT)
        assert drift.status is Status.PASSED
        assert drift.message.startswith(f"as described in {world.directory / 'inboxes.yaml'}:")
        assert result.file == str(world.directory / "inboxes.yaml")
        assert result.line is not None


async def test_drift_field_by_field_only_in_file_only_on_server(world: World) -> None:
    world.env["NEW_SUPPORT_PW"] = "a-new-password-not-yet-set"
    world.hosts["Extra"] = world.hosts["Support"]  # described, never set
    text = world.inbox_yaml(
        ("Billing", "Sales", "Support", "Extra"),
        Support={"smtp_port": 2525, "smtp_password": "NEW_SUPPORT_PW"},
    )
    world.env["EXTRA_PW"] = "extra-pw"
    drifted = world.write("drifted.yaml", text)

    report = await world.audit(against=drifted)
    results = by_name(report)

    support = stage(results["Support"], Stage.DRIFT)
    assert support.failure is FailureClass.DRIFT
    port = world.hosts["Support"].smtp.port
    assert f"smtp.port: {port} on the server, 2525 in the file" in support.message
    assert "smtp.password: differs" in support.message
    assert "imap.password" not in support.message  # unchanged
    assert {"field": "smtp.password", "change": "differs"} in support.facts["changes"]
    assert "a-new-password-not-yet-set" not in json.dumps(report.to_json())
    assert password("Support") not in json.dumps(report.to_json())
    assert support.field == "smtp.port"
    assert results["Support"].file == str(drifted)

    helpdesk = stage(results["Helpdesk"], Stage.DRIFT)
    assert helpdesk.failure is FailureClass.DRIFT
    assert helpdesk.message.startswith("only on the server")

    extra = results["Extra"]
    assert stage(extra, Stage.DRIFT).message.startswith("only in the file")
    assert stage(extra, Stage.ROCKETCHAT).status is Status.SKIPPED
    assert extra.file == str(drifted)
    assert stage(results["Billing"], Stage.DRIFT).status is Status.PASSED
    # Nothing failed a probe: drift decides.
    assert report.exit_code is ExitCode.DRIFT

    # Drift yields to a probe failure.
    await world.hosts["Billing"].use_certificate(world.ca.server_context(CertKind.EXPIRED))
    assert (await world.audit(against=drifted)).exit_code is ExitCode.TLS


async def test_a_stored_inbox_that_breaks_the_rules_is_reported_not_probed(world: World) -> None:
    doc = world.double.inboxes[world.double.inbox_id(email("Sales"))]
    doc["smtp"]["port"] = "587"  # as an old version or a database edit might leave it

    sales = by_name(await world.audit())["Sales"]

    assert {stage(sales, p).status for p in (Stage.SMTP, Stage.IMAP)} == {Status.SKIPPED}
    state = stage(sales, Stage.ROCKETCHAT)
    assert state.failure is FailureClass.ROCKETCHAT
    assert "smtp.port" in state.message
    assert sales.exit_code() is ExitCode.ROCKETCHAT


async def test_a_rocketchat_that_cannot_be_read_raises(world: World) -> None:
    bad = AuditTarget(
        server=world.rocketchat.url,
        credentials=TokenAuth(user_id=world.user_id, token=Secret("not-the-token")),
    )
    with pytest.raises(RocketChatAuthError):
        await audit_inboxes(world.options(), bad)


# --------------------------------------------------------------------------- command line


async def test_the_command_line_in_every_output_form(world: World) -> None:
    await world.hosts["Sales"].rotate_password("rotated-at-provider-77")
    world.double.imap_keeps_failing(email("Sales"))
    junit = world.directory / "audit.xml"
    summary = world.directory / "summary.md"
    summary.write_text("")

    text = await asyncio.to_thread(world.cli)
    as_json = await asyncio.to_thread(world.cli, "--json", "--junit", str(junit))
    github = await asyncio.to_thread(
        runner.invoke,
        app,
        ["audit", "--ca-file", str(world.ca_file), "--email", email("Sales")],
        env={
            **world.env,
            "ROCKETCHAT_URL": world.rocketchat.url,
            "ROCKETCHAT_USER_ID": world.user_id,
            "ROCKETCHAT_AUTH_TOKEN": TOKEN,
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(summary),
        },
    )

    assert text.exit_code == as_json.exit_code == github.exit_code == 14, text.stdout
    assert "switched-off" in text.stdout
    assert "rocketchat" in text.stdout
    assert "inactive (id " in text.stdout
    assert "audit: 4 inboxes" in text.stdout
    doc = json.loads(as_json.stdout)
    assert doc["command"] == "audit"
    assert doc["exit_code"] == 14
    sales = next(i for i in doc["inboxes"] if i["name"] == "Sales")
    assert sales["rocketchat"]["active"] is False
    assert [s["stage"] for s in sales["stages"]] == ["smtp", "imap", "rocketchat"]
    xml = junit.read_text()
    assert 'name="rocketchat"' in xml
    assert "auth-failed" in xml
    assert "::error" in github.stderr
    assert "auth-failed" in github.stderr
    assert "Sales" in summary.read_text()
    for result in (text, as_json, github):
        assert password("Sales") not in result.stdout + result.stderr


async def test_the_command_line_drift_and_errors(world: World) -> None:
    changed = world.write(
        "changed.yaml", world.inbox_yaml(Support={"smtp_password": "NEW_SUPPORT_PW"})
    )
    world.env["NEW_SUPPORT_PW"] = "another-password-9"

    drift = await asyncio.to_thread(world.cli, "--against", str(changed), "--json")
    assert drift.exit_code == 18, drift.stdout + drift.stderr
    doc = json.loads(drift.stdout)
    assert doc["settings"]["against"] == [str(changed)]
    support = next(i for i in doc["inboxes"] if i["name"] == "Support")
    assert support["stages"][-1]["class"] == "drift"
    as_text = await asyncio.to_thread(world.cli, "--against", str(changed))
    assert as_text.exit_code == 18
    assert "drift [smtp.password]: differs from" in as_text.stdout
    assert "smtp.password: differs" in as_text.stdout
    assert "steps: none" not in as_text.stdout  # Rocket.Chat's stages have no steps

    no_server = runner.invoke(app, ["audit"], env={"ROCKETCHAT_URL": ""})
    assert no_server.exit_code == 2
    missing_file = await asyncio.to_thread(world.cli, "--against", str(world.directory / "nope"))
    assert missing_file.exit_code == 2
    junit, summary = world.directory / "bad.xml", world.directory / "bad.md"
    summary.write_text("")
    bad_token = await asyncio.to_thread(
        runner.invoke,
        app,
        ["audit", "--json", "--junit", str(junit)],
        env={
            "ROCKETCHAT_URL": world.rocketchat.url,
            "ROCKETCHAT_USER_ID": world.user_id,
            "ROCKETCHAT_AUTH_TOKEN": "wrong-token",
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(summary),
        },
    )
    assert bad_token.exit_code == 20, bad_token.stdout + bad_token.stderr
    assert json.loads(bad_token.stdout)["exit_code"] == 20
    assert "Traceback" not in bad_token.stdout + bad_token.stderr
    # The CI outputs say what stopped the run, not "invalid input".
    assert 'type="rocketchat"' in junit.read_text()
    assert "Rocket.Chat could not be read (exit 20)" in summary.read_text()
    assert "title=provision%3A Rocket.Chat could not be read" in bad_token.stderr


async def test_stored_passwords_are_masked_in_later_rocketchat_errors(world: World) -> None:
    """A server that echoes a stored password in a later answer: the error masks it."""
    world.double.add_department("Support")
    text = world.inbox_yaml(("Support",)).replace(
        "    smtp:", "    department: Support\n    smtp:", 1
    )
    against = world.write("department.yaml", text)
    echo = f"departments unavailable for {password('Support')}"
    world.double.inject(
        "GET", "/api/v1/livechat/department", Fault.unsuccessful(echo, status=400), times=5
    )

    with pytest.raises(RocketChatCallError) as caught:
        await world.audit(against=against)

    shown = f"{caught.value} {caught.value.message} {caught.value.error} {caught.value.hint}"
    assert "departments unavailable for ***" in shown
    assert password("Support") not in shown


async def test_the_deadline_bounds_the_round_and_names_the_timeout(world: World) -> None:
    """A stored inbox whose servers accept and then say nothing: the run's deadline ends it."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answer, never close (until the test ends)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    world.double.add_inbox(
        {
            "active": True,
            "name": "Silent",
            "email": "silent@example.com",
            "smtp": {"server": "127.0.0.1", "port": port, "username": "s", "password": "p"}
            | {"secure": False},
            "imap": {"server": "127.0.0.1", "port": port, "username": "s", "password": "p"}
            | {"secure": False, "maxRetries": 10},
        }
    )
    options = ProbeOptions(ca_file=world.ca_file, step_timeout=20, timeout=1.5)
    try:
        report = await world.audit(options=options, emails=("silent@example.com",))
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()

    (silent_inbox,) = report.inboxes
    for probe in (Stage.SMTP, Stage.IMAP):
        found = stage(silent_inbox, probe)
        assert found.failure is FailureClass.DEADLINE, found
        assert "overall deadline ran out" in (found.message or "")
    assert report.elapsed_ms < 1.5 * 1000 + 2500  # the deadline plus the grace, at most
    assert report.exit_code is ExitCode.TRANSIENT


# --------------------------------------------------------------------------- beyond the login


async def test_round_trip_runs_only_for_inactive_inboxes(world: World) -> None:
    """An active inbox would import the test message, so only the inactive one gets the
    round trip (the in-process SMTP server swallows mail: never seen); the others say why
    they got none. --envelope runs for all."""
    world.double.switch_off(email("Sales"))
    options = world.options(round_trip=True, round_trip_timeout=0.5, envelope=True)
    report = await world.audit(options=options)

    results = by_name(report)
    trip = stage(results["Sales"], Stage.ROUND_TRIP)
    assert trip.failure is FailureClass.NOT_DELIVERED
    for name in ("Billing", "Helpdesk", "Support"):
        assert Stage.ROUND_TRIP not in [s.stage for s in results[name].stages]
        notes = stage(results[name], Stage.ROCKETCHAT).facts["notes"]
        assert notes == [
            "no round trip: the inbox is active, and Rocket.Chat would import the test message"
        ]
    for result in report.inboxes:
        steps = [s.step.value for s in stage(result, Stage.SMTP).steps]
        assert "mail-from" in steps
        assert "rcpt-to" in steps
    assert report.exit_code is ExitCode.MAILBOX  # not-delivered


async def test_the_unseen_count_starts_where_rocketchats_search_does(world: World) -> None:
    """Rocket.Chat searches UNSEEN SINCE the inbox's _createdAt: audit counts from that day."""
    report = await world.audit()
    for result in report.inboxes:
        created = world.double.stored(world.double.inbox_id(result.email))["_createdAt"]
        day = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).date().isoformat()
        imap = stage(result, Stage.IMAP)
        assert imap.facts["notes"][0].startswith(
            f"{imap.facts['unseen']} unseen messages in INBOX since {day}, the day Rocket.Chat"
        ), imap.facts["notes"]
