"""``--round-trip`` over real sockets: aiosmtpd sends, pymap (or a scripted server) receives.

A small aiosmtpd server here delivers what it accepts into pymap with a real IMAP APPEND
after answering DATA (delivery that takes a moment, like a real MTA); the sandbox's
aiosmtpd swallows mail, which must give "never seen" within the timeout. The real
Postfix-into-Dovecot trip is in ``tests/real/test_beyond_login.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
from collections.abc import AsyncIterator
from typing import Any

import aioimaplib
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.roundtrip import HEADER, probe_message, probe_round_trip
from provision.results import ExitCode, FailureClass, StageResult, Status, Step
from provision.sandbox.imapd import RunningServer, start_imap_server
from provision.sandbox.smtpd import start_smtp_server
from tests.servers.faults import DROP, PerCall
from tests.servers.imap_misbehaving import Script, ScriptedImapServer, start_scripted_server

EMAIL = "support@example.test"
PASSWORD = "Canary-roundtrip-93b1"
STEP = 2.0


def _inbox(smtp_port: int, imap_port: int) -> Inbox:
    return Inbox(
        name="Support",
        email=EMAIL,
        sender_info="Example Support",
        smtp=SmtpSettings(
            server="127.0.0.1",
            port=smtp_port,
            username=EMAIL,
            password=Secret(PASSWORD),
            secure=False,
        ),
        imap=ImapSettings(
            server="127.0.0.1",
            port=imap_port,
            username=EMAIL,
            password=Secret(PASSWORD),
            secure=False,
        ),
    )


async def _round_trip(inbox: Inbox, *, wait: float, budget: float = 20.0) -> StageResult:
    options = ProbeOptions(step_timeout=STEP, round_trip=True, round_trip_timeout=wait)
    deadline = asyncio.get_running_loop().time() + budget
    return await probe_round_trip(inbox, options, deadline=deadline)


async def _against_scripted_imap(script: Script) -> tuple[StageResult, ScriptedImapServer]:
    """A round trip through a real SMTP server into a scripted IMAP server (returned
    closed, for what it recorded)."""
    imap = await start_scripted_server(script)
    try:
        async with await start_smtp_server(
            mode="plain", tls_context=None, users={EMAIL: PASSWORD}
        ) as smtp:
            return await _round_trip(_inbox(smtp.port, imap.port), wait=2.0), imap
    finally:
        await imap.close()


async def _imap_client(port: int) -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=5)
    await client.wait_hello_from_server()
    assert (await client.login(EMAIL, PASSWORD)).result == "OK"
    return client


async def _messages_in_inbox(port: int) -> int:
    client = await _imap_client(port)
    selected = await client.select("INBOX")
    await client.logout()
    exists = [line for line in selected.lines if line.endswith(b"EXISTS")]
    return int(exists[0].split()[0])


class _DeliverToPymap:
    """aiosmtpd handler: accept, answer 250, then APPEND the message to pymap."""

    def __init__(self, imap_port: int) -> None:
        self.imap_port = imap_port
        self.deliveries: list[asyncio.Task[None]] = []
        self.received: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = bytes(envelope.original_content or b"")
        self.received.append(content)
        self.deliveries.append(asyncio.ensure_future(self._append(content)))
        return "250 2.0.0 Ok: queued"

    async def _append(self, content: bytes) -> None:
        client = await _imap_client(self.imap_port)
        assert (await client.append(content, mailbox="INBOX")).result == "OK"
        await client.logout()


def _authenticate(*_: Any) -> AuthResult:
    return AuthResult(success=True, handled=False)


@pytest.fixture
async def pymap() -> AsyncIterator[RunningServer]:
    server = await start_imap_server(
        implicit_tls=False, tls_context=None, user=EMAIL, password=PASSWORD
    )
    yield server
    await server.close()


@pytest.fixture
async def delivering_smtp(pymap: RunningServer) -> AsyncIterator[tuple[int, _DeliverToPymap]]:
    handler = _DeliverToPymap(pymap.port)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="mx.test",
            authenticator=_authenticate,
            auth_require_tls=False,
            loop=loop,
        ),
        "127.0.0.1",
        0,
    )
    yield listener.sockets[0].getsockname()[1], handler
    listener.close()
    await listener.wait_closed()
    await asyncio.gather(*handler.deliveries)


async def test_round_trip_delivered_found_and_removed(
    pymap: RunningServer, delivering_smtp: tuple[int, _DeliverToPymap]
) -> None:
    smtp_port, handler = delivering_smtp
    before = await _messages_in_inbox(pymap.port)

    result = await _round_trip(_inbox(smtp_port, pymap.port), wait=10.0)

    assert result.status is Status.PASSED, result.to_json()
    assert [s.step for s in result.steps] == [Step.SEND, Step.DELIVERY, Step.CLEANUP]
    assert result.facts["delivery_ms"] > 0
    assert result.facts["removed"] is True
    assert result.facts["notes"][0].endswith("after the SMTP server took it, and was removed")
    assert await _messages_in_inbox(pymap.port) == before == 0
    # The message went out once, tagged with the header the search looked for.
    (sent,) = handler.received
    tag = result.facts["header"].removeprefix(f"{HEADER}: ")
    parsed = email.message_from_bytes(sent)
    assert parsed[HEADER] == tag
    assert parsed["From"] == f"Example Support <{EMAIL}>"
    assert parsed["To"] == EMAIL
    assert parsed["Auto-Submitted"] == "auto-generated"
    # pymap offers UIDPLUS: the message was removed by UID, nothing else was expunged.
    assert "EXPUNGE" not in pymap.commands


async def test_round_trip_swallowed_message_is_never_seen_within_the_timeout(
    pymap: RunningServer,
) -> None:
    async with await start_smtp_server(
        mode="plain", tls_context=None, users={EMAIL: PASSWORD}
    ) as smtp:  # accepts and discards
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await _round_trip(_inbox(smtp.port, pymap.port), wait=0.4)
        took = loop.time() - started

    assert result.failure is FailureClass.NOT_DELIVERED, result.to_json()
    assert result.failure.exit_code is ExitCode.MAILBOX
    assert result.field == "email"
    assert "not seen in INBOX within 0.4 s" in (result.message or "")
    assert result.facts["header"].split(": ")[1] in (result.hint or "")
    assert "delivery_ms" not in result.facts
    assert smtp.verbs().count("DATA") == 1
    assert took < 0.4 + 2.0  # the wait, plus the two logins on loopback


async def test_round_trip_not_sent_when_imap_login_fails(pymap: RunningServer) -> None:
    async with await start_smtp_server(
        mode="plain", tls_context=None, users={EMAIL: PASSWORD}
    ) as smtp:
        inbox = _inbox(smtp.port, pymap.port)
        wrong = ImapSettings(
            server="127.0.0.1",
            port=pymap.port,
            username=EMAIL,
            password=Secret("wrong"),
            secure=False,
        )
        result = await _round_trip(dataclasses.replace(inbox, imap=wrong), wait=1.0)

    assert result.failure is FailureClass.AUTH_FAILED, result.to_json()
    assert (result.message or "").startswith("not sent: INBOX could not be opened")
    assert "MAIL" not in smtp.verbs()


async def test_round_trip_sender_refused_at_data_is_not_sent(pymap: RunningServer) -> None:
    class _SendAsDenied:
        async def handle_DATA(self, *_: Any) -> str:
            return "550 5.7.60 SMTP; Client does not have permissions to send as this sender"

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: SMTP(
            _SendAsDenied(),
            hostname="mx.test",
            authenticator=_authenticate,
            auth_require_tls=False,
            loop=loop,
        ),
        "127.0.0.1",
        0,
    )
    try:
        port = listener.sockets[0].getsockname()[1]
        result = await _round_trip(_inbox(port, pymap.port), wait=1.0)
    finally:
        listener.close()
        await listener.wait_closed()

    assert result.failure is FailureClass.SENDER_REFUSED, result.to_json()
    assert "refused after DATA: 550 5.7.60" in (result.message or "")
    assert result.steps[0].step is Step.SEND
    assert result.steps[0].status is Status.FAILED


async def test_without_uidplus_other_deleted_mail_is_not_expunged() -> None:
    script = Script(
        replies={
            "NOOP": b"{tag} OK NOOP done\r\n",
            "UID": PerCall(
                b"* SEARCH 7\r\n{tag} OK found\r\n",  # UID SEARCH HEADER: the probe's message
                b"{tag} OK stored\r\n",  # UID STORE +FLAGS.SILENT (\Seen \Deleted)
                b"* SEARCH 7 9\r\n{tag} OK\r\n",  # UID SEARCH DELETED: 9 is someone else's
            ),
        }
    )
    result, imap = await _against_scripted_imap(script)

    assert result.status is Status.WARNING, result.to_json()
    assert [w.code for w in result.warnings] == ["round-trip-not-removed"]
    assert "1 other messages are marked deleted" in result.warnings[0].message
    assert result.warnings[0].strict_exit is ExitCode.MAILBOX
    assert result.facts["removed"] is False
    assert "EXPUNGE" not in imap.commands
    store = next(line for line in imap.lines if b"UID STORE" in line)
    assert store.split(b" ", 1)[1] == b"UID STORE 7 +FLAGS.SILENT (\\Seen \\Deleted)\r\n"


def test_probe_message_is_small_plain_text_from_the_inbox_to_itself() -> None:
    inbox = _inbox(1, 2)
    raw = probe_message(inbox, "abc123")

    assert len(raw) < 1024
    assert b"\r\n" in raw
    parsed = email.message_from_bytes(raw)
    assert parsed[HEADER] == "abc123"
    assert parsed["Message-ID"] == "<abc123@provision.invalid>"
    assert parsed.get_content_type() == "text/plain"


async def test_data_reply_lost_after_delivery_is_reported_and_still_cleaned_up(
    pymap: RunningServer,
) -> None:
    """The server takes the message but never answers DATA: 'not confirmed sent', and the
    message that did arrive is found and removed all the same."""
    release = asyncio.Event()

    class _TakesThenHangs(_DeliverToPymap):
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            await self._append(bytes(envelope.original_content or b""))
            await release.wait()
            return "250 2.0.0 Ok: too late"

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: SMTP(
            _TakesThenHangs(pymap.port),
            hostname="mx.test",
            authenticator=_authenticate,
            auth_require_tls=False,
            loop=loop,
        ),
        "127.0.0.1",
        0,
    )
    try:
        port = listener.sockets[0].getsockname()[1]
        options = ProbeOptions(step_timeout=0.5, round_trip=True, round_trip_timeout=5.0)
        deadline = loop.time() + 20.0
        result = await probe_round_trip(_inbox(port, pymap.port), options, deadline=deadline)
    finally:
        release.set()
        listener.close()
        await listener.wait_closed()

    assert result.failure is FailureClass.TIMEOUT, result.to_json()
    assert (result.message or "").startswith("not confirmed sent (it may still arrive)")
    assert result.facts["removed"] is True
    assert await _messages_in_inbox(pymap.port) == 0


async def test_connection_lost_during_cleanup_is_seen_but_not_removed() -> None:
    script = Script(
        replies={
            "NOOP": b"{tag} OK NOOP done\r\n",
            "UID": PerCall(b"* SEARCH 7\r\n{tag} OK found\r\n", DROP),  # STORE: the server goes
        }
    )
    result, _imap = await _against_scripted_imap(script)

    assert result.status is Status.WARNING, result.to_json()
    assert [w.code for w in result.warnings] == ["round-trip-not-removed"]
    assert result.facts["delivery_ms"] >= 0
    assert result.facts["removed"] is False


async def test_connection_lost_while_looking_fails_and_names_the_header() -> None:
    script = Script(replies={"NOOP": b"{tag} OK NOOP done\r\n", "UID": DROP})
    result, _imap = await _against_scripted_imap(script)

    assert result.status is Status.FAILED, result.to_json()
    assert (result.message or "").startswith("sent, but looking for it over IMAP failed: ")
    assert "NOOP/UID SEARCH" in (result.message or "")
    assert result.facts["header"] in (result.hint or "")


async def test_the_run_deadline_cuts_the_wait_short(pymap: RunningServer) -> None:
    async with await start_smtp_server(
        mode="plain", tls_context=None, users={EMAIL: PASSWORD}
    ) as smtp:  # accepts and discards
        result = await _round_trip(_inbox(smtp.port, pymap.port), wait=30.0, budget=1.5)

    assert result.failure is FailureClass.DEADLINE, result.to_json()
    assert result.failure.exit_code is ExitCode.TRANSIENT
    assert "before the run's deadline" in (result.message or "")
    assert "raise --timeout above --round-trip-timeout" in (result.hint or "")
    assert result.elapsed_ms < 3000
