"""The SMTP probe against real sockets on 127.0.0.1: aiosmtpd and scripted servers.

Every case asserts the failure class, the field to change and a hint that names the
fix; servers record what they received, so the tests also check what the probe sent
(one AUTH at most, AUTH only after STARTTLS, QUIT on success, never MAIL).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.smtp import nodemailer_hostname, probe_smtp, secret_forms
from provision.results import FailureClass, StageResult, Status, Step
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.smtpd import Mode, RunningServer, start_smtp_server
from tests.servers.faults import DROP, Seq
from tests.servers.smtp_misbehaving import Script, ScriptedSmtpServer, start_scripted_server

if TYPE_CHECKING:
    from tests.conftest import StartProxy

USER = "alice@example.test"
PASSWORD = "Canary-9f2c-s3cret"  # a canary: it must never show up anywhere
STEP = 0.5  # step cap for these tests: short, so silent servers cost half a second

F = FailureClass
StartServer = Callable[..., Awaitable[RunningServer]]
StartScripted = Callable[..., Awaitable[ScriptedSmtpServer]]


def make_inbox(
    port: int,
    *,
    secure: bool,
    server: str = "127.0.0.1",
    username: str = USER,
    password: str = PASSWORD,
) -> Inbox:
    return Inbox(
        name="Support",
        email=USER,
        smtp=SmtpSettings(
            server=server, port=port, username=username, password=Secret(password), secure=secure
        ),
        imap=ImapSettings(
            server="127.0.0.1", port=993, username=USER, password=Secret("unused"), secure=True
        ),
    )


async def probe(
    port: int,
    *,
    secure: bool,
    ca_file: Path | None = None,
    step: float = STEP,
    budget: float = 10.0,
    verify: bool = True,
    **inbox: Any,
) -> StageResult:
    options = ProbeOptions(step_timeout=step, ca_file=ca_file, smtp_verify=verify)
    deadline = asyncio.get_running_loop().time() + budget
    return await probe_smtp(make_inbox(port, secure=secure, **inbox), options, deadline=deadline)


def steps(result: StageResult) -> list[tuple[str, str]]:
    return [(s.step.value, s.status.value) for s in result.steps]


def assert_failed(
    result: StageResult, failure: FailureClass, field: str | None, *hint_words: str
) -> None:
    assert result.status is Status.FAILED, result.to_json()
    assert result.failure is failure, result.to_json()
    assert result.field == field
    assert result.message
    assert result.hint
    for word in hint_words:
        assert word in result.hint, result.hint


def assert_no_secret(text: str) -> None:
    for form in secret_forms(USER, PASSWORD):
        assert form not in text


@pytest.fixture
async def smtp_server() -> AsyncIterator[StartServer]:
    started: list[RunningServer] = []

    async def start(
        mode: str, tls_context: ssl.SSLContext | None = None, **kw: Any
    ) -> RunningServer:
        server = await start_smtp_server(
            mode=cast(Mode, mode), tls_context=tls_context, users={USER: PASSWORD}, **kw
        )
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    started: list[ScriptedSmtpServer] = []

    async def start(script: str | Script, **kw: Any) -> ScriptedSmtpServer:
        server = await start_scripted_server(script, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture(scope="module")
def valid_context(sandbox_ca: SandboxCA) -> ssl.SSLContext:
    return sandbox_ca.server_context(CertKind.VALID)


# -- passing sessions ---------------------------------------------------------------


async def test_probe_smtp_starttls_587_style_passes(
    smtp_server: StartServer, valid_context: ssl.SSLContext, ca_file: Path
) -> None:
    server = await smtp_server("starttls", valid_context)

    result = await probe(server.port, secure=False, ca_file=ca_file)

    assert result.status is Status.PASSED, result.to_json()
    assert [s for s, _ in steps(result)] == [
        "resolve", "connect", "greeting",
        "capabilities", "starttls", "capabilities", "auth", "quit",
    ]  # fmt: skip
    # AUTH is offered only after STARTTLS (aiosmtpd's auth_require_tls) and sent only then.
    assert [(c.verb, c.tls) for c in server.commands] == [
        ("EHLO", False), ("STARTTLS", False), ("EHLO", True), ("AUTH", True), ("QUIT", True),
    ]  # fmt: skip
    facts = result.facts
    assert not any(c.startswith("AUTH") for c in facts["capabilities_before_starttls"])
    assert "AUTH LOGIN PLAIN" in facts["capabilities"]
    assert facts["plan"] == "plaintext, then STARTTLS if offered"
    assert facts["address"] == f"127.0.0.1:{server.port}"
    assert facts["greeting"].startswith("220 smtp.sandbox.test")
    assert facts["auth_mechanism"] == "PLAIN"
    assert facts["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert facts["tls"]["verified"] is True
    assert "localhost" in facts["tls"]["certificate"]["names"]
    assert facts["ehlo_name"] == nodemailer_hostname()


async def test_probe_smtp_implicit_tls_465_style_passes(
    smtp_server: StartServer, valid_context: ssl.SSLContext, ca_file: Path
) -> None:
    server = await smtp_server("implicit", valid_context)

    result = await probe(server.port, secure=True, ca_file=ca_file, server="localhost")

    assert result.status is Status.PASSED, result.to_json()
    assert [s for s, _ in steps(result)][2:] == ["tls", "greeting", "capabilities", "auth", "quit"]
    assert [(c.verb, c.tls) for c in server.commands] == [
        ("EHLO", True), ("AUTH", True), ("QUIT", True),
    ]  # fmt: skip
    assert result.facts["plan"] == "implicit TLS"
    assert result.facts["sni"] == "localhost"
    assert result.facts["tls"]["certificate"]["days_left"] > 14
    assert result.warnings == []


@pytest.mark.parametrize(
    ("offered", "used"),
    [
        (("PLAIN", "LOGIN"), "PLAIN"),
        (("LOGIN",), "LOGIN"),
        (("CRAM-MD5",), "CRAM-MD5"),
        (("CRAM-MD5", "LOGIN"), "LOGIN"),
    ],
    ids=["login+plain->plain", "login", "cram-md5", "cram-md5+login->login"],
)
async def test_probe_smtp_uses_nodemailer_mechanism_order(
    smtp_server: StartServer,
    valid_context: ssl.SSLContext,
    ca_file: Path,
    offered: tuple[str, ...],
    used: str,
) -> None:
    server = await smtp_server("implicit", valid_context, auth_mechanisms=offered)

    result = await probe(server.port, secure=True, ca_file=ca_file)

    assert result.status is Status.PASSED, result.to_json()
    assert result.facts["auth_mechanism"] == used
    assert [(a.mechanism, a.username, a.success) for a in server.auth_attempts] == [
        (used, USER, True)
    ]


async def test_probe_smtp_plaintext_without_starttls_passes_with_warning(
    smtp_server: StartServer,
) -> None:
    server = await smtp_server("plain")

    result = await probe(server.port, secure=False)

    assert result.status is Status.WARNING, result.to_json()
    assert [w.code for w in result.warnings] == ["plaintext-credentials"]
    assert result.warnings[0].field == "smtp.secure"
    assert ("starttls", "skipped") in steps(result)
    assert [(c.verb, c.tls) for c in server.commands][1] == ("AUTH", False)


async def test_probe_smtp_verify_off_passes_untrusted_cert_with_warning(
    smtp_server: StartServer, sandbox_ca: SandboxCA
) -> None:
    server = await smtp_server("implicit", sandbox_ca.server_context(CertKind.SELF_SIGNED))

    result = await probe(server.port, secure=True, verify=False)

    assert result.status is Status.WARNING, result.to_json()
    assert [w.code for w in result.warnings] == ["smtp-verify-off"]
    assert result.facts["tls"]["verified"] is False


async def test_probe_smtp_warns_about_certificate_expiring_soon(
    smtp_server: StartServer, sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf = sandbox_ca.ca.issue_cert(
        "127.0.0.1", not_before=now - dt.timedelta(days=80), not_after=now + dt.timedelta(days=5)
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    server = await smtp_server("implicit", context)

    result = await probe(server.port, secure=True, ca_file=ca_file)

    assert result.status is Status.WARNING, result.to_json()
    assert [w.code for w in result.warnings] == ["cert-expiring"]
    day = (now + dt.timedelta(days=5)).date().isoformat()
    assert f"expires on {day}" in result.warnings[0].message
    assert day in (result.warnings[0].hint or "")


# -- authentication failures --------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_probe_smtp_wrong_password_makes_exactly_one_attempt(
    smtp_server: StartServer, valid_context: ssl.SSLContext, ca_file: Path, mechanism: str
) -> None:
    # Offer all three, so aiosmtplib's login() would have gone on to the next one.
    offered = ("PLAIN", "LOGIN", "CRAM-MD5")
    preferred = offered[offered.index(mechanism) :]
    server = await smtp_server("implicit", valid_context, auth_mechanisms=preferred)

    result = await probe(server.port, secure=True, ca_file=ca_file, password="wrong-password")

    assert_failed(result, F.AUTH_FAILED, "smtp.password", "smtp.username", "one attempt")
    assert "535" in (result.message or "")
    assert [(a.mechanism, a.success) for a in server.auth_attempts] == [(mechanism, False)]
    assert server.verbs().count("AUTH") == 1
    assert "MAIL" not in server.verbs()
    assert steps(result)[-1] == ("auth", "failed")


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [(USER, "", "smtp.password"), ("", PASSWORD, "smtp.username")],
    ids=["no-password", "no-username"],
)
async def test_probe_smtp_missing_credentials_like_nodemailer(
    smtp_server: StartServer,
    valid_context: ssl.SSLContext,
    ca_file: Path,
    username: str,
    password: str,
    field: str,
) -> None:
    server = await smtp_server("implicit", valid_context)

    result = await probe(
        server.port, secure=True, ca_file=ca_file, username=username, password=password
    )

    assert_failed(result, F.AUTH_FAILED, field, "smtp.username", "smtp.password")
    assert 'Missing credentials for "PLAIN"' in (result.message or "")
    assert "AUTH" not in server.verbs()


async def test_probe_smtp_auth_offered_only_after_starttls_that_is_not_offered(
    smtp_server: StartServer,
) -> None:
    # A plaintext port whose server offers AUTH only on encrypted sessions.
    server = await smtp_server("plain", require_tls_for_auth=True)

    result = await probe(server.port, secure=False)

    assert_failed(result, F.AUTH_NOT_ADVERTISED, "smtp.port", "465", "587", "smtp.secure")
    assert "AUTH" not in server.verbs()


# -- certificates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "failure"),
    [
        (CertKind.EXPIRED, F.CERT_EXPIRED),
        (CertKind.WRONG_HOST, F.CERT_HOSTNAME),
        (CertKind.SELF_SIGNED, F.CERT_UNTRUSTED),
    ],
)
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
async def test_probe_smtp_bad_certificate_fails_with_facts(
    smtp_server: StartServer,
    sandbox_ca: SandboxCA,
    ca_file: Path,
    kind: str,
    failure: FailureClass,
    mode: str,
) -> None:
    server = await smtp_server(mode, sandbox_ca.server_context(kind))

    result = await probe(server.port, secure=mode == "implicit", ca_file=ca_file)

    assert_failed(result, failure, "smtp.server")
    assert steps(result)[-1] == ("tls" if mode == "implicit" else "starttls", "failed")
    tls_facts = result.facts["tls"]
    assert tls_facts["verified"] is False
    certificate = tls_facts["certificate"]
    assert certificate["names"]
    assert certificate["not_after"]
    if kind == CertKind.EXPIRED:
        assert certificate["days_left"] < 0
        assert "renew" in (result.hint or "")
    if kind == CertKind.WRONG_HOST:
        assert certificate["names"] == ["mail.other.example"]
        assert "mail.other.example" in (result.hint or "")
    if kind == CertKind.SELF_SIGNED:
        assert "--ca-file" in (result.hint or "")
    assert "AUTH" not in server.verbs()


async def test_probe_smtp_private_ca_without_ca_file_is_untrusted(
    smtp_server: StartServer, valid_context: ssl.SSLContext
) -> None:
    server = await smtp_server("implicit", valid_context)

    result = await probe(server.port, secure=True)

    assert_failed(result, F.CERT_UNTRUSTED, "smtp.server", "--ca-file")
    assert "provision sandbox CA" in result.facts["tls"]["certificate"]["issuer"]


# -- TLS mode mismatches ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "plain"])
async def test_probe_smtp_tls_to_plaintext_port_says_set_secure_false(
    smtp_server: StartServer, valid_context: ssl.SSLContext, ca_file: Path, mode: str
) -> None:
    server = await smtp_server(mode, valid_context if mode == "starttls" else None)

    result = await probe(server.port, secure=True, ca_file=ca_file)

    assert_failed(result, F.TLS_ON_PLAINTEXT_PORT, "smtp.secure", f"port {server.port}")
    assert result.facts["confirmed_mode"] == "plaintext"
    assert result.facts["mode_check"]["outcome"].startswith("220 ")
    if mode == "starttls":
        assert "set smtp.secure: false" in (result.hint or "")
    else:
        assert "offers no STARTTLS" in (result.hint or "")
    # The check connection said EHLO and nothing else: no credentials.
    assert server.verbs() == ["EHLO"]


async def test_probe_smtp_plaintext_to_tls_port_says_set_secure_true(
    smtp_server: StartServer, valid_context: ssl.SSLContext, ca_file: Path
) -> None:
    server = await smtp_server("implicit", valid_context)

    result = await probe(server.port, secure=False, ca_file=ca_file)

    assert_failed(result, F.PLAINTEXT_ON_TLS_PORT, "smtp.secure", "set smtp.secure: true")
    assert f"port {server.port}" in (result.hint or "")
    assert steps(result)[-1] == ("greeting", "failed")
    assert result.facts["confirmed_mode"] == "implicit-tls"
    assert result.facts["mode_check"]["outcome"].startswith("220 ")
    assert server.verbs() == []


async def test_probe_smtp_plaintext_to_tls_port_is_found_long_before_the_step_cap(
    smtp_server: StartServer, valid_context: ssl.SSLContext, ca_file: Path
) -> None:
    """With a 30 s cap the answer comes from the early TLS check, not from the cap."""
    server = await smtp_server("implicit", valid_context)

    async with asyncio.timeout(10):
        result = await probe(server.port, secure=False, ca_file=ca_file, step=30, budget=60)

    assert_failed(result, F.PLAINTEXT_ON_TLS_PORT, "smtp.secure", "set smtp.secure: true")
    greeting = next(s for s in result.steps if s.step.value == "greeting")
    assert greeting.elapsed_ms < 30_000 / 2
    assert result.facts["confirmed_mode"] == "implicit-tls"
    assert server.verbs() == []


# -- network ------------------------------------------------------------------------


async def test_probe_smtp_port_closed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there any more.

    result = await probe(port, secure=False)

    assert_failed(result, F.PORT_CLOSED, "smtp.port", "smtp.port")
    assert steps(result) == [("resolve", "passed"), ("connect", "failed")]


async def test_probe_smtp_dns_name_not_found() -> None:
    # RFC 6761: .invalid never resolves; the local resolver answers at once.
    result = await probe(25, secure=False, server="no-such-host.invalid")

    assert_failed(result, F.DNS_NOT_FOUND, "smtp.server", "smtp.server")
    assert steps(result) == [("resolve", "failed")]


async def test_probe_smtp_deadline_names_the_step(scripted: StartScripted) -> None:
    server = await scripted("silent-banner")

    result = await probe(server.port, secure=False, step=5.0, budget=0.3)

    assert_failed(result, F.DEADLINE, None, "--timeout")
    assert "greeting" in (result.message or "")
    assert "mode_check" not in result.facts  # no time left for a second connection


async def test_probe_smtp_deadline_already_spent() -> None:
    result = await probe(25, secure=False, budget=-1.0)

    assert_failed(result, F.DEADLINE, "smtp.server", "--timeout")
    assert steps(result) == [("resolve", "failed")]


# -- misbehaving servers --------------------------------------------------------------

MISBEHAVING = [
    # (script, expected class, field, words in the hint, step that failed)
    ("silent-banner", F.SLOW_GREETING, "smtp.port", ("--step-timeout",), "greeting"),
    ("slow-banner", F.SLOW_GREETING, "smtp.port", ("--step-timeout",), "greeting"),
    ("banner-never-ends", F.PROTOCOL_ERROR, "smtp.port", ("smtp.port",), "greeting"),
    ("banner-flood", F.PROTOCOL_ERROR, "smtp.port", ("smtp.port",), "greeting"),
    ("tls-alert-banner", F.PLAINTEXT_ON_TLS_PORT, "smtp.secure", ("secure: true",), "greeting"),
    ("closes-at-once", F.RESET, "smtp.port", ("smtp.port",), "greeting"),
    ("garbage-banner", F.PROTOCOL_ERROR, "smtp.port", ("smtp.port",), "greeting"),
    ("pop3-banner", F.WRONG_SERVICE, "smtp.port", ("587", "465"), "greeting"),
    ("imap-banner", F.WRONG_SERVICE, "smtp.port", ("587", "465"), "greeting"),
    ("http-banner", F.WRONG_SERVICE, "smtp.port", ("587", "465"), "greeting"),
    ("554-banner", F.REJECTED_AT_GREETING, "smtp.server", ("address",), "greeting"),
    ("421-banner", F.TRANSIENT, "smtp.server", ("retry",), "greeting"),
    ("ehlo-refused", F.EHLO_REFUSED, None, ("--ehlo-name",), "capabilities"),
    ("ehlo-and-helo-refused", F.EHLO_REFUSED, None, ("--ehlo-name",), "capabilities"),
    ("ehlo-421", F.TRANSIENT, "smtp.server", ("retry",), "capabilities"),
    ("ehlo-silent", F.TIMEOUT, "smtp.server", ("smtp.server",), "capabilities"),
    ("starttls-refused", F.STARTTLS_REFUSED, "smtp.secure", ("465",), "starttls"),
    ("starttls-broken", F.TLS_ERROR, "smtp.server", ("STARTTLS",), "starttls"),
    ("starttls-drop", F.RESET, "smtp.server", ("smtp.secure",), "starttls"),
    ("no-auth", F.AUTH_NOT_ADVERTISED, "smtp.port", ("465", "587"), "auth"),
    ("530-at-auth", F.TLS_REQUIRED, "smtp.secure", ("465", "STARTTLS"), "auth"),
    ("only-oauth-mechanisms", F.NO_COMMON_MECHANISM, "smtp.server", ("PLAIN",), "auth"),
    ("504-at-auth", F.NO_COMMON_MECHANISM, "smtp.server", ("PLAIN",), "auth"),
    ("534-gmail", F.APP_PASSWORD_REQUIRED, "smtp.password", ("app password",), "auth"),
    ("535-m365", F.SMTP_AUTH_DISABLED, "smtp.username", ("SMTP AUTH", "tenant"), "auth"),
    ("535", F.AUTH_FAILED, "smtp.password", ("smtp.username", "smtp.password"), "auth"),
    ("454-too-many", F.THROTTLED, "smtp.password", ("wait",), "auth"),
    ("454-temporary", F.TRANSIENT, "smtp.server", ("retry",), "auth"),
    ("drop-at-auth", F.PROTOCOL_ERROR, "smtp.password", ("smtp.password",), "auth"),
    ("silence-at-auth", F.AUTH_FAILED, "smtp.password", ("silence", "smtp.password"), "auth"),
    ("garbage-at-auth", F.PROTOCOL_ERROR, "smtp.port", ("smtp.port",), "auth"),
]


@pytest.mark.parametrize(
    ("script", "failure", "field", "hint_words", "step"),
    MISBEHAVING,
    ids=[case[0] for case in MISBEHAVING],
)
async def test_probe_smtp_misbehaving_server(
    scripted: StartScripted,
    script: str,
    failure: FailureClass,
    field: str | None,
    hint_words: tuple[str, ...],
    step: str,
) -> None:
    server = await scripted(script)

    result = await probe(server.port, secure=False)

    assert_failed(result, failure, field, *hint_words)
    assert result.steps[-1].step.value == step
    assert server.verbs().count("AUTH") <= 1
    assert not {"MAIL", "RCPT", "DATA"} & set(server.verbs())
    assert_no_secret(json.dumps(result.to_json()))


async def test_probe_smtp_wrong_service_names_the_protocol(scripted: StartScripted) -> None:
    server = await scripted("imap-banner")

    result = await probe(server.port, secure=False)

    assert "an IMAP server answered" in (result.message or "")


async def test_probe_smtp_ehlo_refused_falls_back_to_helo_like_nodemailer(
    scripted: StartScripted,
) -> None:
    server = await scripted("ehlo-refused")

    result = await probe(server.port, secure=False)

    assert server.verbs() == ["EHLO", "HELO"]
    assert result.facts["helo_fallback"] == "250 ok"
    assert "without EHLO there is no AUTH" in (result.message or "")


async def test_probe_smtp_silent_banner_checks_for_tls_without_credentials(
    scripted: StartScripted,
) -> None:
    server = await scripted("silent-banner")

    result = await probe(server.port, secure=False)

    assert result.facts["confirmed_mode"] is None
    assert "no credentials sent" in result.facts["mode_check"]["tried"]
    assert server.connections == 2
    assert server.commands == []


async def test_probe_smtp_auth_not_advertised_over_tls(
    scripted: StartScripted, valid_context: ssl.SSLContext, ca_file: Path
) -> None:
    server = await scripted("no-auth", tls_context=valid_context)

    result = await probe(server.port, secure=True, ca_file=ca_file)

    assert_failed(result, F.AUTH_NOT_ADVERTISED, "smtp.port", "submission port")
    assert "even over TLS" in (result.message or "")


async def test_probe_smtp_starttls_takes_7_round_trips_and_quit_reaches_the_server(
    smtp_server: StartServer, valid_context: ssl.SSLContext, ca_file: Path, turn_proxy: StartProxy
) -> None:
    server = await smtp_server("starttls", valid_context)
    proxy = await turn_proxy(server.port)

    result = await probe(proxy.port, secure=False, ca_file=ca_file)

    assert result.status is Status.PASSED, result.to_json()
    assert result.steps[-1].step is Step.QUIT
    assert result.steps[-1].detail == "QUIT sent; the reply is not awaited"
    assert await proxy.idle()
    [conn] = proxy.connections
    # TCP, greeting, EHLO, STARTTLS, TLS handshake, EHLO, AUTH; the 221 came after.
    assert conn.round_trips <= 7, conn
    assert conn.after_close > 0, conn
    assert server.verbs() == ["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"]


async def test_probe_smtp_server_closing_right_after_auth_still_passes(
    scripted: StartScripted,
) -> None:
    server = await scripted(Script(replies={"AUTH": Seq(b"235 2.7.0 OK\r\n", DROP)}))

    result = await probe(server.port, secure=False)

    assert result.failure is None, result.to_json()
    quit_step = result.steps[-1]
    assert quit_step.step is Step.QUIT
    # Whether the close is seen before QUIT is written depends on the kernel; either
    # way the detail says what happened and nothing fails.
    assert quit_step.detail in {
        "QUIT sent; the reply is not awaited",
        "QUIT not sent: the server had closed the connection",
    }, quit_step.detail


async def test_probe_smtp_quit_without_answer_still_passes(scripted: StartScripted) -> None:
    server = await scripted("quit-silent")

    result = await probe(server.port, secure=False)

    assert result.failure is None, result.to_json()
    assert result.status is Status.WARNING  # plaintext credentials
    assert result.steps[-1].step is Step.QUIT
    assert server.verbs()[-1] == "QUIT"


# -- secrets ------------------------------------------------------------------------


async def test_probe_smtp_never_shows_the_password(
    scripted: StartScripted,
    smtp_server: StartServer,
    valid_context: ssl.SSLContext,
    ca_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = await scripted("535-echoes-credentials")
    plain = await smtp_server("plain", auth_mechanisms=("LOGIN",))
    good = await smtp_server("starttls", valid_context)

    results = [
        await probe(echo.port, secure=False),
        await probe(plain.port, secure=False, password=PASSWORD + "-wrong"),
        await probe(good.port, secure=False, ca_file=ca_file),
    ]

    assert results[0].failure is F.AUTH_FAILED
    assert "***" in (results[0].message or "")  # the echo was there, and masked
    assert results[1].failure is F.AUTH_FAILED
    assert results[2].status is Status.PASSED
    for result in results:
        assert_no_secret(json.dumps(result.to_json()))
    assert_no_secret(caplog.text)
    assert base64.b64encode(PASSWORD.encode()).decode() not in caplog.text


def test_secret_forms_cover_auth_payloads() -> None:
    forms = secret_forms("bob", "pw")

    assert "pw" in forms
    assert base64.b64encode(b"\0bob\0pw").decode() in forms  # AUTH PLAIN
    assert base64.b64encode(b"pw").decode() in forms  # AUTH LOGIN
    assert secret_forms("bob", "") == ()
