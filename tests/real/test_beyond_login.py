"""Beyond the login (issue 11) against real Dovecot and Postfix: what Rocket.Chat will
import, the envelope check, and the round trip (fixtures in conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from provision.models import ProbeOptions
from provision.probes.imap import probe_imap
from provision.probes.roundtrip import probe_round_trip
from provision.probes.smtp import probe_smtp
from provision.results import ExitCode, FailureClass, StageResult, Status, Step
from tests.real.test_dovecot_postfix import explain, make_inbox

if TYPE_CHECKING:
    from tests.real.conftest import MailServers

pytestmark = pytest.mark.real

# Generous: a fresh Postfix smtpd on a loaded 2-core runner takes seconds to greet.
STEP = 5.0
BUDGET = 30.0


def unseen_in_maildir(maildir: Path) -> int:
    """Unseen messages as Dovecot stores them: all of ``new/``, and ``cur/`` without S."""
    fresh = list((maildir / "new").iterdir())
    read = [p for p in (maildir / "cur").iterdir() if "S" not in p.name.partition(":2,")[2]]
    return len(fresh) + len(read)


def support_maildir(servers: MailServers) -> Path:
    return servers.root / "mail" / "provision.test" / "support" / "Maildir"


async def test_import_count_matches_dovecots_maildir(mail_servers: MailServers) -> None:
    inbox = make_inbox(
        imap=(mail_servers.host, mail_servers.imaps_port, True), account=mail_servers.user
    )
    options = ProbeOptions(step_timeout=STEP, ca_file=mail_servers.ca_file)
    deadline = asyncio.get_running_loop().time() + BUDGET

    result = await probe_imap(inbox, options, deadline=deadline)

    expected = unseen_in_maildir(support_maildir(mail_servers))
    assert expected >= 1  # the seeded message
    assert result.facts["unseen"] == expected, explain(result, mail_servers)
    # Dovecot offers ESEARCH: the count came back as a number, not a list of hits.
    assert "ESEARCH" in result.facts["capabilities_after_login"]
    assert result.facts["idle"] is True
    noun = "message" if expected == 1 else "messages"
    assert result.facts["notes"] == [
        f"{expected} unseen {noun} in INBOX; Rocket.Chat imports only mail that arrives "
        "after the inbox is created"
    ]


def maildir_messages(maildir: Path) -> int:
    return sum(1 for sub in ("new", "cur") for _ in (maildir / sub).iterdir())


async def _envelope(servers: MailServers, email: str) -> StageResult:
    inbox = dataclasses.replace(
        make_inbox(smtp=(servers.host, servers.envelope_port, False), account=servers.user),
        email=email,
    )
    options = ProbeOptions(step_timeout=STEP, ca_file=servers.ca_file, envelope=True)
    deadline = asyncio.get_running_loop().time() + BUDGET
    return await probe_smtp(inbox, options, deadline=deadline)


def _steps(result: StageResult) -> dict[str, str]:
    return {s.step.value: s.status.value for s in result.steps}


async def test_envelope_postfix_accepts_the_address_the_login_owns(
    mail_servers: MailServers,
) -> None:
    result = await _envelope(mail_servers, mail_servers.user.username)

    assert result.status is Status.PASSED, explain(result, mail_servers)
    steps = _steps(result)
    assert steps["mail-from"] == steps["rcpt-to"] == steps["rset"] == "passed"
    rcpt = next(s.detail for s in result.steps if s.step is Step.RCPT_TO)
    assert (rcpt or "").endswith(": 250 2.1.5 Ok")


async def test_envelope_postfix_sender_login_mismatch_refuses_at_rcpt(
    mail_servers: MailServers,
) -> None:
    # The quoting account's address: it exists, but support@ may not send as it.
    other = mail_servers.quoting_user.username
    result = await _envelope(mail_servers, other)

    assert result.failure is FailureClass.SENDER_REFUSED, explain(result, mail_servers)
    assert result.field == "smtp.username"
    assert result.message is not None
    assert result.message.startswith(f"RCPT TO:<{other}> refused: 553 5.7.1")
    assert "Sender address rejected: not owned by user" in result.message
    steps = _steps(result)
    assert steps["mail-from"] == "passed"  # smtpd_delay_reject: the answer comes at RCPT
    assert steps["rcpt-to"] == "failed"
    assert result.failure.exit_code is ExitCode.MAILBOX


async def test_envelope_postfix_unknown_mailbox_is_recipient_unknown(
    mail_servers: MailServers,
) -> None:
    # support@ may send as nobody@, but no such mailbox exists (virtual_mailbox_maps).
    result = await _envelope(mail_servers, "nobody@provision.test")

    assert result.failure is FailureClass.RECIPIENT_UNKNOWN, explain(result, mail_servers)
    assert result.field == "email"
    assert "5.1.1" in (result.message or "")


async def test_round_trip_through_postfix_into_dovecot_and_back_out(
    mail_servers: MailServers,
) -> None:
    maildir = support_maildir(mail_servers)
    before = maildir_messages(maildir)
    inbox = make_inbox(
        smtp=(mail_servers.host, mail_servers.submission_port, False),
        imap=(mail_servers.host, mail_servers.imaps_port, True),
        account=mail_servers.user,
    )
    options = ProbeOptions(
        step_timeout=STEP, ca_file=mail_servers.ca_file, round_trip=True, round_trip_timeout=10.0
    )
    deadline = asyncio.get_running_loop().time() + BUDGET

    result = await probe_round_trip(inbox, options, deadline=deadline)

    assert result.status is Status.PASSED, explain(result, mail_servers)
    assert [s.step for s in result.steps] == [Step.SEND, Step.DELIVERY, Step.CLEANUP]
    assert 0 < result.facts["delivery_ms"] < 10_000
    assert result.facts["removed"] is True
    assert result.facts["header"].startswith("X-Provision-Probe: ")
    # Dovecot offers UIDPLUS: only the probe's own message was expunged.
    assert maildir_messages(maildir) == before
    assert unseen_in_maildir(maildir) == mail_servers.seeded_messages
    sent = [s["step"] for s in result.facts["send"]]
    assert sent[-4:] == ["mail-from", "rcpt-to", "data", "quit"]
