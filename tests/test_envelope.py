"""``--envelope``: after AUTH, MAIL FROM and RCPT TO the inbox address, then RSET (no DATA).

Against aiosmtpd (accepts) and scripted servers over real sockets that refuse at MAIL or
at RCPT the way Postfix, Microsoft 365 and relays do; a refusal is classified by its
code and text, not by the command that drew it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.smtp import probe_smtp
from provision.probes.smtp.envelope_replies import envelope_failure
from provision.results import ExitCode, FailureClass, StageResult, Step
from provision.sandbox.smtpd import start_smtp_server
from tests.servers.faults import DROP, SILENT, Reply
from tests.servers.smtp_misbehaving import Script, start_scripted_server

EMAIL = "support@example.test"
LOGIN = "agent@example.test"
PASSWORD = "Canary-envelope-5e1d"
STEP = 0.5
F = FailureClass

OK_MAIL = b"250 2.1.0 Ok\r\n"
OK_RCPT = b"250 2.1.5 Ok\r\n"
OK_RSET = b"250 2.0.0 Ok\r\n"
POSTFIX_MISMATCH = (
    b"553 5.7.1 <support@example.test>: Sender address rejected: not owned by user "
    b"agent@example.test\r\n"
)


def _inbox(port: int) -> Inbox:
    return Inbox(
        name="Support",
        email=EMAIL,
        smtp=SmtpSettings(
            server="127.0.0.1", port=port, username=LOGIN, password=Secret(PASSWORD), secure=False
        ),
        imap=ImapSettings(
            server="127.0.0.1", port=993, username=LOGIN, password=Secret("unused"), secure=True
        ),
    )


async def _probe(port: int, *, envelope: bool = True) -> StageResult:
    options = ProbeOptions(step_timeout=STEP, envelope=envelope)
    deadline = asyncio.get_running_loop().time() + 10.0
    return await probe_smtp(_inbox(port), options, deadline=deadline)


async def _scripted(mail: Reply, rcpt: Reply = OK_RCPT) -> tuple[list[str], StageResult]:
    server = await start_scripted_server(
        Script(replies={"MAIL": mail, "RCPT": rcpt, "RSET": OK_RSET})
    )
    try:
        result = await _probe(server.port)
    finally:
        await server.close()
    return server.verbs(), result


def _steps(result: StageResult) -> list[tuple[str, str]]:
    return [(s.step.value, s.status.value) for s in result.steps]


async def test_envelope_against_aiosmtpd_sends_mail_rcpt_rset_and_no_data() -> None:
    async with await start_smtp_server(
        mode="plain", tls_context=None, users={LOGIN: PASSWORD}
    ) as server:
        result = await _probe(server.port)

    assert result.failure is None, result.to_json()
    assert server.verbs() == ["EHLO", "AUTH", "MAIL", "RCPT", "RSET", "QUIT"]
    mail, rcpt = (c.argument for c in server.commands if c.verb in ("MAIL", "RCPT"))
    assert mail == f"FROM:<{EMAIL}>"
    assert rcpt == f"TO:<{EMAIL}>"
    assert ("mail-from", "passed") in _steps(result)
    assert ("rcpt-to", "passed") in _steps(result)
    assert ("rset", "passed") in _steps(result)
    detail = next(s.detail for s in result.steps if s.step is Step.MAIL_FROM)
    assert detail == f"MAIL FROM:<{EMAIL}>: 250 OK"
    assert result.facts["notes"] == [
        f"{LOGIN} may send as {EMAIL}, and {EMAIL} is a recipient "
        "(MAIL FROM and RCPT TO accepted; nothing was sent)"
    ]


async def test_without_envelope_no_mail_command_is_sent() -> None:
    async with await start_smtp_server(
        mode="plain", tls_context=None, users={LOGIN: PASSWORD}
    ) as server:
        result = await _probe(server.port, envelope=False)

    assert result.failure is None
    assert server.verbs() == ["EHLO", "AUTH", "QUIT"]


async def test_refusal_at_mail_is_sender_refused_on_smtp_username() -> None:
    verbs, result = await _scripted(
        b"550 5.7.60 SMTP; Client does not have permissions to send as this sender\r\n"
    )

    assert result.failure is F.SENDER_REFUSED, result.to_json()
    assert "notes" not in result.facts
    assert result.field == "smtp.username"
    assert result.message == (
        f"MAIL FROM:<{EMAIL}> refused: 550 5.7.60 SMTP; Client does not have permissions "
        "to send as this sender"
    )
    assert LOGIN in (result.hint or "")
    assert "RCPT" not in verbs
    assert "DATA" not in verbs
    assert ("mail-from", "failed") in _steps(result)
    assert F.SENDER_REFUSED.exit_code is ExitCode.MAILBOX


async def test_postfix_sender_mismatch_at_rcpt_is_sender_refused_not_recipient() -> None:
    verbs, result = await _scripted(OK_MAIL, POSTFIX_MISMATCH)

    assert result.failure is F.SENDER_REFUSED, result.to_json()
    assert result.field == "smtp.username"
    assert "Sender address rejected: not owned by user" in (result.message or "")
    assert (result.message or "").startswith(f"RCPT TO:<{EMAIL}> refused: 553 5.7.1")
    assert ("mail-from", "passed") in _steps(result)
    assert ("rcpt-to", "failed") in _steps(result)
    assert "DATA" not in verbs


async def test_relay_denied_at_rcpt_is_relay_refused() -> None:
    _, result = await _scripted(
        OK_MAIL, b"554 5.7.1 <support@example.test>: Relay access denied\r\n"
    )

    assert result.failure is F.RELAY_REFUSED, result.to_json()
    assert result.field == "smtp.username"
    assert "Relay access denied" in (result.message or "")


async def test_unknown_recipient_is_recipient_unknown_on_email() -> None:
    _, result = await _scripted(
        OK_MAIL,
        b"550 5.1.1 <support@example.test>: Recipient address rejected: User unknown in "
        b"virtual mailbox table\r\n",
    )

    assert result.failure is F.RECIPIENT_UNKNOWN, result.to_json()
    assert result.field == "email"
    assert F.RECIPIENT_UNKNOWN.exit_code is ExitCode.MAILBOX


async def test_temporary_refusal_is_transient() -> None:
    _, result = await _scripted(b"451 4.3.0 Mail server temporarily rejected message\r\n")

    assert result.failure is F.TRANSIENT, result.to_json()
    assert result.failure.exit_code is ExitCode.TRANSIENT


async def test_silence_at_rcpt_ends_within_the_step_cap() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, result = await _scripted(OK_MAIL, SILENT)

    assert result.failure is F.TIMEOUT, result.to_json()
    assert ("rcpt-to", "failed") in _steps(result)
    assert loop.time() - started < STEP * 4


@pytest.mark.parametrize("rset", [b"502 5.5.2 no RSET\r\n", DROP], ids=["refused", "dropped"])
async def test_refused_or_dropped_rset_is_a_step_warning_not_a_failure(rset: Reply) -> None:
    server = await start_scripted_server(
        Script(replies={"MAIL": OK_MAIL, "RCPT": OK_RCPT, "RSET": rset})
    )
    try:
        result = await _probe(server.port)
    finally:
        await server.close()

    assert result.failure is None, result.to_json()
    assert ("rset", "warning") in _steps(result)
    assert ("quit", "passed" if rset is not DROP else "warning") in _steps(result)


async def test_server_text_in_a_refusal_is_scrubbed_of_control_characters() -> None:
    _, result = await _scripted(b"553 5.7.1 Sender address rejected \x1b[31mred\r\n")

    assert result.failure is F.SENDER_REFUSED
    assert "\x1b" not in (result.message or "")
    assert "\\x1b" in (result.message or "")


@pytest.mark.parametrize(
    ("command", "code", "text", "expected", "field"),
    [
        (
            "RCPT TO",
            553,
            "5.7.1 <a@b>: Sender address rejected: not owned by user x",
            F.SENDER_REFUSED,
            "smtp.username",
        ),
        (
            "MAIL FROM",
            550,
            "5.7.60 SendAsDenied; x not allowed to send as a@b",
            F.SENDER_REFUSED,
            "smtp.username",
        ),
        (
            "MAIL FROM",
            553,
            "5.1.8 Domain of sender address does not exist",
            F.SENDER_REFUSED,
            "smtp.username",
        ),
        ("MAIL FROM", 550, "Access denied", F.SENDER_REFUSED, "smtp.username"),
        ("RCPT TO", 554, "5.7.1 Relaying denied", F.RELAY_REFUSED, "smtp.username"),
        ("RCPT TO", 550, "5.1.1 No such user here", F.RECIPIENT_UNKNOWN, "email"),
        (
            "RCPT TO",
            550,
            "Requested action not taken: mailbox unavailable",
            F.RECIPIENT_UNKNOWN,
            "email",
        ),
        (
            "RCPT TO",
            550,
            "<a@b>: Recipient address rejected: Access denied",
            F.RELAY_REFUSED,
            "email",
        ),
        ("RCPT TO", 450, "4.1.1 greylisted, try again", F.TRANSIENT, "smtp.server"),
    ],
    ids=[
        "postfix-mismatch-at-rcpt",
        "m365-send-as",
        "sender-domain",
        "bare-refusal-at-mail",
        "relay",
        "no-such-user",
        "mailbox-unavailable",
        "policy-at-rcpt",
        "greylisting",
    ],
)
def test_envelope_failure_reads_code_and_text(
    command: str, code: int, text: str, expected: FailureClass, field: str
) -> None:
    failure = envelope_failure(command, code, text, email="a@b", username="x")

    assert failure.cls is expected
    assert failure.field == field
    assert failure.message.startswith(f"{command}:<a@b> refused: {code} ")
    assert failure.hint


def test_offline_with_envelope_or_round_trip_is_a_usage_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from provision.cli import app

    for flag in ("--envelope", "--round-trip"):
        result = CliRunner().invoke(app, ["check", "--offline", flag, str(tmp_path / "x.yaml")])

        assert result.exit_code == 2, result.output
        assert "--offline logs into nothing" in result.stderr


async def test_set_envelope_refusal_writes_nothing_for_that_inbox(tmp_path: Path) -> None:
    import dataclasses

    from provision.commands.set import SetOptions, set_inboxes
    from provision.inbox import load_inboxes
    from provision.results import Action
    from provision.rocketchat.credentials import TokenAuth
    from provision.sandbox.runner import running_sandbox

    server = await start_scripted_server(
        Script(replies={"MAIL": OK_MAIL, "RCPT": POSTFIX_MISMATCH, "RSET": OK_RSET})
    )
    try:
        async with running_sandbox(tmp_path / "box") as box:
            first, second = load_inboxes([str(box.inbox_file)]).inboxes
            refused = dataclasses.replace(
                first,
                smtp=dataclasses.replace(
                    first.smtp, server="127.0.0.1", port=server.port, secure=False
                ),
            )
            report = await set_inboxes(
                [refused, second],
                ProbeOptions(ca_file=box.ca_file, step_timeout=3, timeout=30, envelope=True),
                SetOptions(
                    server=box.rocketchat_url,
                    credentials=TokenAuth(user_id=box.user_id, token=box.token),
                ),
            )
            posted = [
                r.body["email"] for r in box.rocketchat.requests_to("POST", "/api/v1/email-inbox")
            ]
    finally:
        await server.close()

    assert report.exit_code is ExitCode.MAILBOX
    assert report.settings["envelope"] is True
    assert report.inboxes[0].stages[0].failure is F.SENDER_REFUSED
    assert report.inboxes[0].action is Action.SKIPPED
    assert report.inboxes[1].action is Action.CREATED
    assert posted == [second.email]
    # The sandbox's own SMTP server took the envelope of the second inbox.
    steps = [s.step for s in report.inboxes[1].stages[0].steps]
    assert Step.MAIL_FROM in steps
    assert Step.RCPT_TO in steps
