"""provision discover end to end, with real parts only: an authoritative DNS server
(dnslib), an HTTPS autoconfig server (trustme certificate) and the sandbox's SMTP
(aiosmtpd) and IMAP (pymap) servers, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision import ProbeOptions, check, load_inboxes
from provision.discover.candidates import Origin, Protocol, Transport
from provision.discover.dns import parse_nameserver
from provision.discover.inboxfile import inbox_file
from provision.discover.search import Discovery, SearchOptions, search
from provision.results import ExitCode
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.imapd import start_imap_server
from provision.sandbox.smtpd import start_smtp_server
from tests.servers.autoconfig import running_https
from tests.servers.dns import Zone, running_dns

USER = "support@example.test"
PASSWORD = "discover-test-secret"
NAMES = (
    "localhost",
    "127.0.0.1",
    "example.test",
    "autoconfig.example.test",
    "mx-smtp.example.test",
    "srv-imap.example.test",
    "smtp.example.test",
    "imap.example.test",
)


def _server_context(sandbox_ca: SandboxCA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sandbox_ca.ca.issue_cert(*NAMES).configure_cert(context)
    return context


@dataclass
class Ports:
    smtp_implicit: int
    smtp_starttls: int
    smtp_untrusted: int
    imap_implicit: int
    imap_login_disabled: int


@contextlib.asynccontextmanager
async def mail_servers(sandbox_ca: SandboxCA) -> AsyncIterator[Ports]:
    good = _server_context(sandbox_ca)
    users = {USER: PASSWORD}
    async with contextlib.AsyncExitStack() as stack:
        implicit = await start_smtp_server(mode="implicit", tls_context=good, users=users)
        stack.push_async_callback(implicit.close)
        starttls = await start_smtp_server(mode="starttls", tls_context=good, users=users)
        stack.push_async_callback(starttls.close)
        untrusted = await start_smtp_server(
            mode="starttls",
            tls_context=sandbox_ca.server_context(CertKind.SELF_SIGNED),
            users=users,
        )
        stack.push_async_callback(untrusted.close)
        imaps = await start_imap_server(
            implicit_tls=True, tls_context=good, user=USER, password=PASSWORD
        )
        stack.push_async_callback(imaps.close)
        disabled = await start_imap_server(
            implicit_tls=False, tls_context=good, user=USER, password=PASSWORD, login_disabled=True
        )
        stack.push_async_callback(disabled.close)
        yield Ports(implicit.port, starttls.port, untrusted.port, imaps.port, disabled.port)


def _autoconfig(smtp_host: str, smtp_port: int, imap_host: str, imap_port: int) -> bytes:
    return f"""<?xml version="1.0"?>
<clientConfig version="1.1">
  <emailProvider id="example.test">
    <domain>example.test</domain>
    <incomingServer type="imap">
      <hostname>{imap_host}</hostname><port>{imap_port}</port>
      <socketType>SSL</socketType><authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>pop.example.test</hostname><port>995</port><socketType>SSL</socketType>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{smtp_host}</hostname><port>{smtp_port}</port>
      <socketType>STARTTLS</socketType><authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
""".encode()


def _options(nameserver: str, https_port: int, ca_file: Path, ports: Ports) -> SearchOptions:
    return SearchOptions(
        step_timeout=3.0,
        timeout=20.0,
        nameserver=parse_nameserver(nameserver),
        ca_file=ca_file,
        ehlo_name="discover.test",
        https_port=https_port,
        guess_ports={
            Protocol.SMTP: ((ports.smtp_starttls, Transport.STARTTLS),),
            Protocol.IMAP: ((ports.imap_implicit, Transport.TLS),),
        },
    )


def _row(discovery: Discovery, origin: Origin, protocol: Protocol, port: int | None = None) -> str:
    for a in discovery.assessments:
        c = a.candidate
        if c.origin is origin and c.protocol is protocol and port in (None, c.port):
            return f"{c.host}:{c.port} {a.verdict} secure={a.secure} {a.reason}"
    raise AssertionError(f"no {origin} {protocol} candidate")


async def test_every_source_is_found_in_order_and_unusable_candidates_are_explained(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    async with mail_servers(sandbox_ca) as ports:
        zone = (
            Zone()
            .add("_submissions._tcp.example.test", "SRV", f"0 1 {ports.smtp_implicit} localhost.")
            .add(
                "_imaps._tcp.example.test",
                "SRV",
                f"0 1 {ports.imap_implicit} srv-imap.example.test.",
            )
            .add("_imap._tcp.example.test", "SRV", f"0 1 {ports.imap_login_disabled} localhost.")
            .add("example.test", "MX", "10 example-test.mail.protection.outlook.com.")
            .add("example.test", "A", "127.0.0.1")
            .add("localhost", "A", "127.0.0.1")
            .add("srv-imap.example.test", "A", "127.0.0.1")
            .add("mx-smtp.example.test", "A", "127.0.0.1")
            .add("smtp.example.test", "A", "127.0.0.1")
            .add("imap.example.test", "A", "127.0.0.1")
        )
        documents = {
            # autoconfig.example.test does not resolve: the .well-known URL is next.
            "/.well-known/autoconfig/mail/config-v1.1.xml": _autoconfig(
                "mx-smtp.example.test",
                ports.smtp_untrusted,
                "srv-imap.example.test",
                ports.imap_implicit,
            ),
        }
        async with (
            running_dns(zone) as dns,
            running_https(documents, _server_context(sandbox_ca)) as web,
        ):
            discovery = await search(USER, _options(dns.nameserver, web.port, ca_file, ports))

    origins = [a.candidate.origin for a in discovery.assessments]
    assert origins == sorted(origins, key=list(Origin).index), "SRV, autoconfig, provider, guess"
    assert set(origins) == set(Origin)

    # SRV: _submissions first, implicit TLS, so secure: true; _imaps is usable too.
    assert _row(discovery, Origin.SRV, Protocol.SMTP).startswith(
        f"localhost:{ports.smtp_implicit} usable secure=True"
    )
    assert f"srv-imap.example.test:{ports.imap_implicit} usable secure=True" in _row(
        discovery, Origin.SRV, Protocol.IMAP
    )
    # The autoconfig IMAP server is the SRV one: folded into it, not listed twice.
    imap_srv = next(a for a in discovery.assessments if a.candidate.host == "srv-imap.example.test")
    assert any("config-v1.1.xml" in also for also in imap_srv.candidate.also)
    # _imap._tcp on a server that only allows logins after STARTTLS: unusable, explained.
    disabled = _row(discovery, Origin.SRV, Protocol.IMAP, ports.imap_login_disabled)
    assert "unusable" in disabled
    assert "LOGINDISABLED" in disabled
    assert "993" in disabled
    # autoconfig's SMTP server has a certificate nobody trusts: nodemailer would fail.
    untrusted = _row(discovery, Origin.AUTOCONFIG, Protocol.SMTP)
    assert "unusable" in untrusted
    assert "certificate" in untrusted
    assert "STARTTLS" in untrusted
    # MX -> Microsoft 365, whose hosts do not resolve in this closed network.
    provider = _row(discovery, Origin.PROVIDER, Protocol.SMTP)
    assert provider.startswith("smtp.office365.com:587 unusable")
    assert "does not resolve" in provider
    microsoft = next(a for a in discovery.assessments if a.candidate.origin is Origin.PROVIDER)
    assert "basic authentication" in " ".join(microsoft.candidate.notes)
    # The usual names: smtp. speaks STARTTLS (secure: false), mail. does not exist.
    assert f"smtp.example.test:{ports.smtp_starttls} usable secure=False" in _row(
        discovery, Origin.GUESS, Protocol.SMTP
    )
    mail = [a for a in discovery.assessments if a.candidate.host == "mail.example.test"]
    assert mail
    assert all("does not resolve" in a.reason for a in mail)

    assert next(a.outcome.split(":")[0] for a in discovery.autoconfig) == "autoconfig.example.test"
    assert discovery.autoconfig[-1].outcome == "2 servers"
    assert web.requests == [("/.well-known/autoconfig/mail/config-v1.1.xml", "example.test")]
    assert {q.rdtype for q in dns.questions} >= {"SRV", "MX", "A", "AAAA"}

    best_smtp, best_imap = discovery.best(Protocol.SMTP), discovery.best(Protocol.IMAP)
    assert best_smtp is not None
    assert best_smtp.candidate.origin is Origin.SRV
    assert best_imap is not None
    assert best_imap.candidate.host == "srv-imap.example.test"
    assert best_imap.tls["certificate"]["names"]
    assert discovery.complete
    assert PASSWORD not in str(discovery.to_json())


async def test_the_written_inbox_file_passes_check_against_the_same_servers(
    sandbox_ca: SandboxCA, ca_file: Path, tmp_path: Path
) -> None:
    async with mail_servers(sandbox_ca) as ports:
        zone = (
            Zone()
            .add("_submission._tcp.example.test", "SRV", f"0 1 {ports.smtp_starttls} localhost.")
            .add("_imaps._tcp.example.test", "SRV", f"0 1 {ports.imap_implicit} localhost.")
            .add("localhost", "A", "127.0.0.1")
        )
        async with running_dns(zone) as dns:
            options = _options(dns.nameserver, 9, ca_file, ports)
            discovery = await search(USER, options)
        text = inbox_file(discovery, password_from="DISCOVER_PASSWORD")
        assert text is not None
        assert PASSWORD not in text
        assert "${DISCOVER_PASSWORD}" in text
        path = tmp_path / "inbox.yaml"
        path.write_text(text)
        loaded = load_inboxes([str(path)], environ={"DISCOVER_PASSWORD": PASSWORD})
        inbox = loaded.inboxes[0]
        assert (inbox.smtp.port, inbox.smtp.secure) == (ports.smtp_starttls, False)
        assert (inbox.imap.port, inbox.imap.secure) == (ports.imap_implicit, True)
        report = await check(loaded.inboxes, ProbeOptions(ca_file=ca_file, timeout=20.0))
    assert report.ok, report


async def test_no_answer_from_dns_is_one_message_and_nothing_else_is_tried() -> None:
    async with running_dns(Zone()) as dns:
        closed = dns.nameserver
    started = time.monotonic()
    discovery = await search(
        USER, SearchOptions(step_timeout=0.5, timeout=30.0, nameserver=parse_nameserver(closed))
    )
    assert time.monotonic() - started < 1.5  # one capped query, not one per lookup
    assert discovery.offline
    assert f"name server {closed}" in discovery.message
    assert "nothing else" in discovery.message
    assert discovery.assessments == []
    assert discovery.autoconfig == []
    assert inbox_file(discovery) is None


async def test_the_search_stops_at_the_deadline(sandbox_ca: SandboxCA, ca_file: Path) -> None:
    async with running_dns(Zone().add("example.test", "MX", "10 mx.example.test.")) as dns:
        started = time.monotonic()
        discovery = await search(
            USER,
            SearchOptions(
                step_timeout=5.0, timeout=0.0, nameserver=parse_nameserver(dns.nameserver)
            ),
        )
    assert time.monotonic() - started < 1.0
    assert discovery.offline
    assert "deadline" in discovery.message


def test_an_address_without_a_domain_is_refused_before_any_lookup() -> None:
    with pytest.raises(ValueError, match="not an email address"):
        asyncio.run(search("support"))


async def test_cli_logs_in_writes_the_file_and_reports_json(
    sandbox_ca: SandboxCA, ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from provision.cli import app

    monkeypatch.setenv("DISCOVER_PASSWORD", PASSWORD)
    runner = CliRunner()
    async with mail_servers(sandbox_ca) as ports:
        zone = (
            Zone()
            .add("_submissions._tcp.example.test", "SRV", f"0 1 {ports.smtp_implicit} localhost.")
            .add("_imaps._tcp.example.test", "SRV", f"0 1 {ports.imap_implicit} localhost.")
            .add("localhost", "A", "127.0.0.1")
        )
        async with running_dns(zone) as dns:
            base = [
                "discover", USER, "--nameserver", dns.nameserver, "--ca-file", str(ca_file),
                "--step-timeout", "3", "--timeout", "20", "--password-from", "DISCOVER_PASSWORD",
            ]  # fmt: skip
            out = tmp_path / "inbox.yaml"
            written = await asyncio.to_thread(runner.invoke, app, [*base, "-o", str(out)])
            as_json = await asyncio.to_thread(runner.invoke, app, [*base, "--json"])
            wrong = await asyncio.to_thread(
                runner.invoke, app, [*base, "--json"], env={"DISCOVER_PASSWORD": "wrong"}
            )
            checked = await asyncio.to_thread(
                runner.invoke, app, ["check", str(out), "--ca-file", str(ca_file)]
            )
    assert written.exit_code == 0, written.output
    assert "login with the password: passed" in written.stderr
    assert f"localhost:{ports.smtp_implicit}" in written.stderr
    assert "${DISCOVER_PASSWORD}" in out.read_text()
    assert checked.exit_code == 0, checked.output
    doc = json.loads(as_json.stdout)
    assert (doc["command"], doc["exit_code"], doc["login"]["ok"]) == ("discover", 0, True)
    assert [c["origin"] for c in doc["candidates"]][:2] == ["srv", "srv"]
    assert json.loads(wrong.stdout)["exit_code"] == 14  # authentication, as check says
    for result in (written, as_json, wrong):
        assert PASSWORD not in result.output


async def test_cli_nothing_usable_is_exit_17_and_a_bad_nameserver_is_usage() -> None:
    from typer.testing import CliRunner

    from provision.cli import app

    runner = CliRunner()
    async with running_dns(Zone().add("example.test", "MX", "10 mx.example.test.")) as dns:
        nothing = await asyncio.to_thread(
            runner.invoke, app, ["discover", USER, "--nameserver", dns.nameserver, "--json"]
        )
    bad = runner.invoke(app, ["discover", USER, "--nameserver", "dns.example"])
    assert nothing.exit_code == 17, nothing.output
    assert json.loads(nothing.stdout)["inbox_file"] is None
    assert "nothing usable" in nothing.stderr
    assert bad.exit_code == 2
    assert "not an IP address" in bad.stderr


async def test_a_login_that_fails_at_one_server_moves_on_to_the_next_candidate(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    """The SRV-preferred submission server drops the connection at AUTH (a server's
    fault, not the password's): the next usable candidate is logged into, the file names
    it, and the report shows both attempts; a wrong password is never retried elsewhere."""
    from provision.commands.discover import discover
    from tests.servers.faults import DROP
    from tests.servers.smtp_misbehaving import Script, start_scripted_server

    broken = await start_scripted_server(
        Script(replies={"AUTH": DROP}), tls_context=_server_context(sandbox_ca)
    )
    try:
        async with mail_servers(sandbox_ca) as ports:
            srv = "SRV"
            zone = (
                Zone()
                .add("_submissions._tcp.example.test", srv, f"0 1 {broken.port} localhost.")
                .add("_submission._tcp.example.test", srv, f"0 1 {ports.smtp_starttls} localhost.")
                .add("_imaps._tcp.example.test", srv, f"0 1 {ports.imap_implicit} localhost.")
                .add("localhost", "A", "127.0.0.1")
            )
            async with running_dns(zone) as dns:
                options = _options(dns.nameserver, 9, ca_file, ports)
                good = await discover(
                    USER, options, password_from="DISCOVER_PASSWORD", login=True,
                    environ={"DISCOVER_PASSWORD": PASSWORD},
                )  # fmt: skip
                wrong = await discover(
                    USER, options, password_from="DISCOVER_PASSWORD", login=True,
                    environ={"DISCOVER_PASSWORD": "not-the-password"},
                )  # fmt: skip
    finally:
        await broken.close()
    assert good.discovery.best(Protocol.SMTP) is not None
    assert good.discovery.best(Protocol.SMTP).candidate.port == broken.port  # type: ignore[union-attr]
    assert [a.smtp.candidate.port for a in good.attempts] == [broken.port, ports.smtp_starttls]
    first = good.attempts[0].to_json()["stages"]
    assert (first["smtp"]["status"], first["imap"]["status"]) == ("failed", "passed")
    assert good.exit_code is ExitCode.OK
    assert good.login is not None
    assert good.login.ok
    assert good.inbox_file is not None
    assert f"port: {ports.smtp_starttls}\n" in good.inbox_file
    assert f"port: {broken.port}\n" not in good.inbox_file
    doc = good.to_json()
    assert [a["smtp"] for a in doc["login_attempts"]] == [
        f"localhost:{broken.port}",
        f"localhost:{ports.smtp_starttls}",
    ]
    assert PASSWORD not in json.dumps(doc)
    from provision.render.discover import render_discover_table

    table = render_discover_table(good)
    assert f"login attempt 1: smtp localhost:{broken.port} failed (" in table
    assert f"login attempt 2: smtp localhost:{ports.smtp_starttls} passed" in table
    assert table.endswith("login with the password: passed")
    # A wrong password (IMAP says so at once) ends the tries: no more failed logins
    # toward a lockout, and the file keeps the best candidates.
    assert [a.smtp.candidate.port for a in wrong.attempts] == [broken.port]
    assert wrong.attempts[0].to_json()["stages"]["imap"]["class"] == "auth-failed"
    assert wrong.exit_code is not ExitCode.OK
