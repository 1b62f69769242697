"""The IMAP probe against real sockets on 127.0.0.1: pymap, and scripted misbehaving servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.imap import PLAN_PLAINTEXT, PLAN_TLS, probe_imap
from provision.probes.imap import session as imap_session
from provision.results import FailureClass, StageResult, Status, Step
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.imapd import RunningServer, start_imap_server
from tests.servers.imap_misbehaving import ScriptedImapServer, start_scripted_server

if TYPE_CHECKING:
    from tests.conftest import StartProxy

USER = "support@example.com"
PASSWORD = "canary-Pw-7f3a9c"
#: Short cap for cases where the server stays silent: the client's cap decides.
CAP = 0.5

StartPymap = Callable[..., Awaitable[RunningServer]]
StartScripted = Callable[..., Awaitable[ScriptedImapServer]]


# --------------------------------------------------------------------------- helpers


def make_inbox(
    port: int,
    *,
    secure: bool,
    server: str = "127.0.0.1",
    username: str = USER,
    password: str = PASSWORD,
) -> Inbox:
    smtp = SmtpSettings(
        server="smtp.invalid", port=465, username=USER, password=Secret("x"), secure=True
    )
    imap = ImapSettings(
        server=server, port=port, username=username, password=Secret(password), secure=secure
    )
    return Inbox(name="support", email=USER, smtp=smtp, imap=imap)


async def probe(
    inbox: Inbox, *, cap: float = 5.0, ca_file: Path | None = None, budget: float = 10.0
) -> StageResult:
    loop = asyncio.get_running_loop()
    options = ProbeOptions(step_timeout=cap, ca_file=ca_file)
    return await probe_imap(inbox, options, deadline=loop.time() + budget)


def steps(result: StageResult) -> dict[str, str]:
    """Last status of each step by name."""
    return {s.step.value: s.status.value for s in result.steps}


def warning_codes(result: StageResult) -> list[str]:
    return [w.code for w in result.warnings]


def recording_sni(ctx: ssl.SSLContext) -> list[str | None]:
    """Record the SNI name of every handshake the server context sees."""
    names: list[str | None] = []

    def callback(_sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = callback
    return names


@pytest.fixture
async def pymap() -> AsyncIterator[StartPymap]:
    started: list[RunningServer] = []

    async def start(**kwargs: Any) -> RunningServer:
        kwargs.setdefault("tls_context", None)
        kwargs.setdefault("user", USER)
        kwargs.setdefault("password", PASSWORD)
        server = await start_imap_server(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    started: list[ScriptedImapServer] = []

    async def start(name: str, *, tls_context: ssl.SSLContext | None = None) -> ScriptedImapServer:
        server = await start_scripted_server(name, tls_context=tls_context)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


# --------------------------------------------------------------------------- pymap: passes


async def test_probe_imap_implicit_tls_valid_cert_passes_without_sni(
    pymap: StartPymap, sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    ctx = sandbox_ca.server_context(CertKind.VALID)
    sni = recording_sni(ctx)
    server = await pymap(implicit_tls=True, tls_context=ctx)

    result = await probe(make_inbox(server.port, secure=True, server="localhost"), ca_file=ca_file)

    assert result.status is Status.PASSED, result.to_json()
    assert result.warnings == []
    passed = [s.step for s in result.steps if s.status is Status.PASSED]
    assert passed[-6:] == [
        Step.TLS,
        Step.GREETING,
        Step.CAPABILITIES,
        Step.AUTH,
        Step.MAILBOX,
        Step.QUIT,
    ]
    facts = result.facts
    assert facts["plan"] == PLAN_TLS
    assert facts["tls"]["version"] in {"TLSv1.2", "TLSv1.3"}
    assert facts["tls"]["certificate"]["names"][0] == "localhost"
    assert facts["certificate_verified"] is True
    assert facts["certificate_check"] == "verified against the system store and --ca-file"
    assert facts["greeting"].startswith("* OK")
    assert "IMAP4REV1" in facts["capabilities"]
    assert facts["idle"] is True
    assert facts["exists"] == 0
    assert facts["address"] == f"127.0.0.1:{server.port}"
    # The probe's own session sends no SNI (node-imap); only the verifying check does.
    assert sni.count(None) == 1
    assert sni.count("localhost") == 1
    # Capabilities came from the greeting; nothing beyond what Rocket.Chat does.
    assert server.commands == ["LOGIN", "SELECT", "SEARCH", "LOGOUT"]


async def test_probe_imap_implicit_tls_takes_5_round_trips_and_logout_reaches_the_server(
    pymap: StartPymap, sandbox_ca: SandboxCA, ca_file: Path, turn_proxy: StartProxy
) -> None:
    server = await pymap(implicit_tls=True, tls_context=sandbox_ca.server_context(CertKind.VALID))
    proxy = await turn_proxy(server.port)

    result = await probe(make_inbox(proxy.port, secure=True, server="localhost"), ca_file=ca_file)

    assert result.status is Status.PASSED, result.to_json()
    assert result.facts["exists"] == 0
    assert result.facts["unseen"] == 0
    assert result.steps[-1].detail == "LOGOUT sent; the reply is not awaited"
    assert await proxy.idle()
    # The session (it sent the most) and the credential-free certificate check.
    assert len(proxy.connections) == 2, proxy.connections
    session = max(proxy.connections, key=lambda c: c.bytes_up)
    # TCP, TLS handshake, greeting, LOGIN, SELECT + SEARCH in one write; BYE came after.
    assert session.round_trips <= 5, session
    assert session.after_close > 0, session
    assert server.commands == ["LOGIN", "SELECT", "SEARCH", "LOGOUT"]


async def test_probe_imap_plaintext_passes_with_plaintext_warning(pymap: StartPymap) -> None:
    server = await pymap(implicit_tls=False)

    result = await probe(make_inbox(server.port, secure=False))

    assert result.status is Status.WARNING
    assert result.failure is None
    assert warning_codes(result) == ["plaintext-credentials"]
    assert result.warnings[0].field == "imap.secure"
    assert "993" in (result.warnings[0].hint or "")
    assert result.facts["plan"] == PLAN_PLAINTEXT
    assert "tls" not in steps(result)
    assert "STARTTLS" not in server.commands


async def test_probe_imap_non_ascii_password_is_sent_as_utf8(pymap: StartPymap) -> None:
    password = "pässwörd-ñ"
    server = await pymap(implicit_tls=False, password=password)

    result = await probe(make_inbox(server.port, secure=False, password=password))

    assert result.failure is None, result.to_json()


@pytest.mark.parametrize(
    ("limit", "said"),
    [
        ("RC_CONNECT_TIMEOUT", "Timed out while connecting to server"),
        ("RC_AUTH_TIMEOUT", "Timed out while authenticating with server"),
    ],
)
async def test_probe_imap_slower_than_rocketchat_warns(
    pymap: StartPymap, monkeypatch: pytest.MonkeyPatch, limit: str, said: str
) -> None:
    monkeypatch.setattr(imap_session, limit, 0.0)
    server = await pymap(implicit_tls=False)

    result = await probe(make_inbox(server.port, secure=False))

    slow = [w for w in result.warnings if w.code == "slower-than-rocketchat"]
    assert len(slow) == 1
    assert said in slow[0].message
    assert slow[0].field == "imap.server"


# --------------------------------------------------------------------------- pymap: failures


async def test_probe_imap_wrong_password_is_auth_failed_without_retry(
    pymap: StartPymap, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioimaplib")
    server = await pymap(implicit_tls=False)

    result = await probe(make_inbox(server.port, secure=False, password="wrong-Pw-canary"))

    assert "wrong-Pw-canary" not in json.dumps(result.to_json()) + caplog.text

    assert result.failure is FailureClass.AUTH_FAILED
    assert result.field == "imap.password"
    assert "AUTHENTICATIONFAILED" in (result.message or "")
    assert "imap.username" in (result.hint or "")
    assert server.commands == ["LOGIN"]


async def test_probe_imap_logindisabled_fails_before_login(pymap: StartPymap) -> None:
    server = await pymap(implicit_tls=False, login_disabled=True)

    result = await probe(make_inbox(server.port, secure=False))

    assert result.failure is FailureClass.TLS_REQUIRED
    assert result.field == "imap.secure"
    assert "993" in (result.hint or "")
    assert "imap.secure: true" in (result.hint or "")
    assert "LOGIN" not in server.commands
    assert "STARTTLS" not in server.commands
    assert steps(result)["auth"] == "skipped"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        pytest.param(CertKind.EXPIRED, "expired", id="expired"),
        pytest.param(CertKind.WRONG_HOST, "Hostname mismatch", id="wrong-host"),
        pytest.param(CertKind.SELF_SIGNED, "unable to get local issuer", id="untrusted"),
    ],
)
async def test_probe_imap_bad_certificate_passes_with_warning(
    pymap: StartPymap, sandbox_ca: SandboxCA, ca_file: Path, kind: str, reason: str
) -> None:
    ctx = sandbox_ca.server_context(kind)
    sni = recording_sni(ctx)
    server = await pymap(implicit_tls=True, tls_context=ctx)

    result = await probe(make_inbox(server.port, secure=True, server="localhost"), ca_file=ca_file)

    assert result.status is Status.WARNING, result.to_json()
    assert warning_codes(result) == ["imap-cert-unverified"]
    finding = result.warnings[0]
    assert finding.field == "imap.server"
    assert reason in finding.message
    assert "sha256" in finding.message
    assert "does not verify IMAP certificates" in (finding.hint or "")
    assert result.facts["certificate_verified"] is False
    assert len(result.facts["tls"]["certificate"]["sha256"]) == 64
    assert None in sni
    assert server.commands == ["LOGIN", "SELECT", "SEARCH", "LOGOUT"]


@pytest.mark.parametrize(("cert_days", "warned"), [(21, True), (5, False)])
async def test_probe_imap_warns_of_a_certificate_expiring_within_cert_days(
    pymap: StartPymap, sandbox_ca: SandboxCA, ca_file: Path, cert_days: int, warned: bool
) -> None:
    now = dt.datetime.now(dt.UTC)
    ends = now + dt.timedelta(days=5, hours=1)
    leaf = sandbox_ca.ca.issue_cert(
        "localhost", not_before=now - dt.timedelta(days=80), not_after=ends
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    server = await pymap(implicit_tls=True, tls_context=ctx)
    options = ProbeOptions(step_timeout=5.0, ca_file=ca_file, cert_days=cert_days)
    inbox = make_inbox(server.port, secure=True, server="localhost")

    result = await probe_imap(inbox, options, deadline=asyncio.get_running_loop().time() + 10)

    assert warning_codes(result) == (["cert-expiring"] if warned else []), result.to_json()
    if warned:
        finding = result.warnings[0]
        assert finding.field == "imap.server"
        assert f"expires on {ends.date().isoformat()} (in 5 days" in finding.message
        assert "--cert-days" in finding.message


async def test_probe_imap_private_ca_without_ca_file_warns(
    pymap: StartPymap, sandbox_ca: SandboxCA
) -> None:
    server = await pymap(implicit_tls=True, tls_context=sandbox_ca.server_context())

    result = await probe(make_inbox(server.port, secure=True, server="localhost"))

    assert warning_codes(result) == ["imap-cert-unverified"]
    assert "--ca-file" in (result.warnings[0].hint or "")


async def test_probe_imap_plaintext_to_tls_port_is_confirmed(
    pymap: StartPymap, sandbox_ca: SandboxCA
) -> None:
    server = await pymap(implicit_tls=True, tls_context=sandbox_ca.server_context())

    result = await probe(make_inbox(server.port, secure=False), cap=CAP)

    assert result.failure is FailureClass.PLAINTEXT_ON_TLS_PORT
    assert result.field == "imap.secure"
    assert result.hint == (
        f"port {server.port} speaks TLS from the first byte: set imap.secure: true"
    )
    assert result.facts["confirmed_mode"] == "implicit-tls"
    assert "LOGIN" not in server.commands


async def test_probe_imap_plaintext_to_tls_port_is_found_long_before_the_step_cap(
    pymap: StartPymap, sandbox_ca: SandboxCA
) -> None:
    """With a 30 s cap the answer comes from the early TLS check, not from the cap."""
    server = await pymap(implicit_tls=True, tls_context=sandbox_ca.server_context())

    async with asyncio.timeout(10):
        result = await probe(make_inbox(server.port, secure=False), cap=30, budget=60)

    assert result.failure is FailureClass.PLAINTEXT_ON_TLS_PORT
    assert result.field == "imap.secure"
    assert "set imap.secure: true" in (result.hint or "")
    greeting = next(s for s in result.steps if s.step.value == "greeting")
    assert greeting.elapsed_ms < 30_000 / 2
    assert "LOGIN" not in server.commands


async def test_probe_imap_tls_to_plaintext_port_is_confirmed(pymap: StartPymap) -> None:
    server = await pymap(implicit_tls=False)

    result = await probe(make_inbox(server.port, secure=True), cap=CAP)

    assert result.failure is FailureClass.TLS_ON_PLAINTEXT_PORT
    assert result.field == "imap.secure"
    assert result.hint == (
        f"port {server.port} speaks plaintext: set imap.secure: false "
        "(or better use 993 with secure: true)"
    )
    assert result.facts["confirmed_mode"] == "plaintext"
    assert "LOGIN" not in server.commands  # the server only saw our ClientHello as junk


async def test_probe_imap_port_closed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = await probe(make_inbox(port, secure=True))

    assert result.failure is FailureClass.PORT_CLOSED
    assert result.field == "imap.port"


async def test_probe_imap_deadline_names_the_step(scripted: StartScripted) -> None:
    server = await scripted("silent")

    result = await probe(make_inbox(server.port, secure=False), cap=5.0, budget=0.3)

    assert result.failure is FailureClass.DEADLINE
    assert "greeting" in (result.message or "")
    assert steps(result)["greeting"] == "failed"


# --------------------------------------------------------------------------- scripted servers

CASES = [
    # (script, secure, class, field, text expected in message or hint)
    ("silent", False, FailureClass.SLOW_GREETING, "imap.port", "no greeting"),
    ("silent", True, FailureClass.TIMEOUT, "imap.port", "TLS handshake"),
    ("greeting-never-ends", False, FailureClass.PROTOCOL_ERROR, "imap.port", "never ended"),
    ("greeting-flood", False, FailureClass.PROTOCOL_ERROR, "imap.port", "exceeded"),
    ("tls-alert", False, FailureClass.PLAINTEXT_ON_TLS_PORT, "imap.secure", "TLS record"),
    ("closes-at-once", False, FailureClass.RESET, "imap.port", "without a greeting"),
    ("closes-at-once", True, FailureClass.RESET, "imap.port", "TLS handshake"),
    ("healthy", True, FailureClass.TLS_ON_PLAINTEXT_PORT, "imap.secure", "speaks plaintext"),
    ("bye", False, FailureClass.REJECTED_AT_GREETING, "imap.server", "shutting down"),
    ("bye-unavailable", False, FailureClass.TRANSIENT, "imap.server", "UNAVAILABLE"),
    ("smtp-banner", False, FailureClass.WRONG_SERVICE, "imap.port", "an SMTP server"),
    ("smtp-banner", True, FailureClass.WRONG_SERVICE, "imap.port", "an SMTP server"),
    ("pop3-banner", False, FailureClass.WRONG_SERVICE, "imap.port", "a POP3 server"),
    ("garbage", False, FailureClass.PROTOCOL_ERROR, "imap.port", "not an IMAP greeting"),
    ("logindisabled-via-capability", False, FailureClass.TLS_REQUIRED, "imap.secure", "993"),
    ("drop-at-login", False, FailureClass.RESET, "imap.password", "LOGIN without a word"),
    (
        "silence-at-login",
        False,
        FailureClass.TIMEOUT,
        "imap.password",
        "Timed out while authenticating with server",
    ),
    ("bye-at-login", False, FailureClass.THROTTLED, "imap.username", "Maximum number"),
    ("login-wrong-tag", False, FailureClass.PROTOCOL_ERROR, "imap.port", "could not be parsed"),
    ("login-unavailable", False, FailureClass.THROTTLED, "imap.username", "UNAVAILABLE"),
    (
        "login-gmail-app-password",
        False,
        FailureClass.APP_PASSWORD_REQUIRED,
        "imap.password",
        "app password",
    ),
    ("login-m365", False, FailureClass.AUTH_FAILED, "imap.password", "LOGIN failed."),
    ("login-privacy-required", False, FailureClass.TLS_REQUIRED, "imap.secure", "993"),
    ("login-invalid-state", False, FailureClass.TLS_REQUIRED, "imap.secure", "Invalid state"),
    ("select-read-only", False, FailureClass.MAILBOX_READ_ONLY, "imap.username", "\\Seen"),
    ("select-nonexistent", False, FailureClass.MAILBOX, "imap.username", "no INBOX"),
    ("select-not-connected", False, FailureClass.MAILBOX, "imap.username", "not connected"),
    ("search-bad", False, FailureClass.MAILBOX, "imap.server", "SEARCH UNSEEN SINCE"),
]


@pytest.mark.parametrize(
    ("script", "secure", "failure", "field", "text"),
    [pytest.param(*case, id=f"{case[0]}-{'tls' if case[1] else 'plain'}") for case in CASES],
)
async def test_probe_imap_misbehaving_server(
    scripted: StartScripted,
    script: str,
    secure: bool,
    failure: FailureClass,
    field: str,
    text: str,
) -> None:
    server = await scripted(script)

    result = await probe(make_inbox(server.port, secure=secure), cap=CAP)

    assert result.status is Status.FAILED
    assert result.failure is failure, result.to_json()
    assert result.field == field
    assert text in f"{result.message} {result.hint}"
    assert result.hint


TLS_CASES = [
    # (script behind implicit TLS, secure, class, field, text expected in message or hint)
    ("silent", True, FailureClass.SLOW_GREETING, "imap.port", "no greeting"),
    ("closes-at-once", True, FailureClass.RESET, "imap.port", "right after the TLS handshake"),
    ("smtp-banner", True, FailureClass.WRONG_SERVICE, "imap.port", "SMTP server answers on"),
    ("smtp-banner", False, FailureClass.WRONG_SERVICE, "imap.port", "over TLS"),
]


@pytest.mark.parametrize(
    ("script", "secure", "failure", "field", "text"),
    [pytest.param(*case, id=f"{case[0]}-{'tls' if case[1] else 'plain'}") for case in TLS_CASES],
)
async def test_probe_imap_misbehaving_tls_server(
    scripted: StartScripted,
    sandbox_ca: SandboxCA,
    script: str,
    secure: bool,
    failure: FailureClass,
    field: str,
    text: str,
) -> None:
    server = await scripted(script, tls_context=sandbox_ca.server_context())

    result = await probe(make_inbox(server.port, secure=secure), cap=CAP)

    assert result.failure is failure, result.to_json()
    assert result.field == field
    assert text in f"{result.message} {result.hint}"


async def test_probe_imap_plaintext_to_scripted_tls_only_port(
    scripted: StartScripted, sandbox_ca: SandboxCA
) -> None:
    server = await scripted("healthy", tls_context=sandbox_ca.server_context())

    result = await probe(make_inbox(server.port, secure=False), cap=CAP)

    assert result.failure is FailureClass.PLAINTEXT_ON_TLS_PORT
    assert "set imap.secure: true" in (result.hint or "")
    assert result.facts["confirmed_mode"] == "implicit-tls"
    assert server.commands == []


async def test_probe_imap_m365_login_failed_is_basic_auth_disabled(
    scripted: StartScripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await scripted("login-m365")
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        assert host == "outlook.office365.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)

    result = await probe(make_inbox(server.port, secure=False, server="outlook.office365.com"))

    assert result.failure is FailureClass.BASIC_AUTH_DISABLED
    assert result.field == "imap.password"


async def test_probe_imap_speaks_like_node_imap(scripted: StartScripted) -> None:
    server = await scripted("no-caps-in-greeting")
    username, password = 'sup port "desk"', 'pa\\ss"word'

    result = await probe(
        make_inbox(server.port, secure=False, username=username, password=password)
    )

    assert result.failure is None, result.to_json()
    assert server.commands == ["CAPABILITY", "LOGIN", "SELECT", "SEARCH", "LOGOUT"]
    login, select, search = (line.split(b" ", 1)[1] for line in server.lines[1:4])
    assert login == b'LOGIN "sup port \\"desk\\"" "pa\\\\ss\\"word"\r\n'
    assert select == b'SELECT "INBOX"\r\n'
    assert re.fullmatch(rb"SEARCH UNSEEN SINCE \d{1,2}-[A-Z][a-z]{2}-\d{4}\r\n", search)
    assert result.facts["exists"] == 3
    assert result.facts["unseen"] == 2
    assert result.facts["idle"] is True


async def test_probe_imap_preauth_skips_login(scripted: StartScripted) -> None:
    server = await scripted("preauth")

    result = await probe(make_inbox(server.port, secure=False))

    assert result.failure is None
    assert result.facts["preauth"] is True
    assert steps(result)["auth"] == "skipped"
    assert "LOGIN" not in server.commands


async def test_probe_imap_unanswered_logout_does_not_fail(scripted: StartScripted) -> None:
    server = await scripted("logout-silent")

    result = await probe(make_inbox(server.port, secure=False), cap=CAP)

    assert result.failure is None
    # LOGOUT is sent and the connection closed at once: a silent answer costs nothing.
    quit_step = result.steps[-1]
    assert (quit_step.step, quit_step.status) == (Step.QUIT, Status.PASSED)
    assert quit_step.detail == "LOGOUT sent; the reply is not awaited"
    await server.close()  # the conversation has read all there is
    assert server.commands[-1] == "LOGOUT"


async def test_probe_imap_control_characters_never_reach_the_wire(
    scripted: StartScripted,
) -> None:
    server = await scripted("healthy")

    result = await probe(make_inbox(server.port, secure=False, password="a\r\nb"))

    assert result.failure is FailureClass.NON_ASCII_CREDENTIALS
    assert "LOGIN" not in server.commands


@pytest.mark.parametrize("script", ["login-echoes-password", "login-wrong-tag", "healthy"])
async def test_probe_imap_password_never_in_output_or_logs(
    scripted: StartScripted, caplog: pytest.LogCaptureFixture, script: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioimaplib")
    caplog.set_level(logging.DEBUG, logger="provision")
    caplog.set_level(logging.DEBUG, logger="asyncio")
    server = await scripted(script)
    password = 'canary"\\Pw-7f3a9c'

    result = await probe(make_inbox(server.port, secure=False, password=password), cap=CAP)

    assert "LOGIN" in server.commands
    dumped = json.dumps(result.to_json())
    for form in (password, 'canary\\"\\\\Pw-7f3a9c', "7f3a9c"):
        assert form not in dumped
        assert form not in caplog.text
