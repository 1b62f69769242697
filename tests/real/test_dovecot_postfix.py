"""The probes against real Dovecot and Postfix from Debian (fixtures in conftest.py).

What the in-process servers (aiosmtpd, pymap) cannot vouch for: Postfix's
``smtpd_tls_auth_only`` hiding AUTH until STARTTLS, SASL through Dovecot, Postfix's
and Dovecot's implicit-TLS listeners met with plaintext, Dovecot's ``LOGINDISABLED``,
its answers to LOGIN and SELECT, and its handling of a quoted password.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.imap import probe_imap
from provision.probes.smtp import probe_smtp, secret_forms
from provision.results import FailureClass, StageResult, Status, Step

if TYPE_CHECKING:
    from tests.real.conftest import Account, MailServers

pytestmark = pytest.mark.real

F = FailureClass
#: Cap for one step. Real daemons on loopback answer in milliseconds; the TLS-mode
#: mismatch cases wait this long for a greeting that never comes.
STEP = 1.0
BUDGET = 10.0


def make_inbox(
    *,
    smtp: tuple[str, int, bool] = ("127.0.0.1", 1, True),
    imap: tuple[str, int, bool] = ("127.0.0.1", 1, True),
    account: Account,
    password: str | None = None,
) -> Inbox:
    """An inbox whose ``smtp``/``imap`` point at (server, port, secure)."""
    secret = Secret(account.password if password is None else password)
    return Inbox(
        name="Support",
        email=account.username,
        smtp=SmtpSettings(
            server=smtp[0], port=smtp[1], username=account.username, password=secret, secure=smtp[2]
        ),
        imap=ImapSettings(
            server=imap[0], port=imap[1], username=account.username, password=secret, secure=imap[2]
        ),
    )


async def run_smtp(
    servers: MailServers,
    port: int,
    *,
    secure: bool,
    ca_file: Path | None = None,
    account: Account | None = None,
    password: str | None = None,
) -> StageResult:
    inbox = make_inbox(
        smtp=(servers.host, port, secure),
        account=account or servers.user,
        password=password,
    )
    options = ProbeOptions(step_timeout=STEP, ca_file=ca_file)
    deadline = asyncio.get_running_loop().time() + BUDGET
    return await probe_smtp(inbox, options, deadline=deadline)


async def run_imap(
    servers: MailServers,
    port: int,
    *,
    secure: bool,
    host: str | None = None,
    ca_file: Path | None = None,
    account: Account | None = None,
    password: str | None = None,
) -> StageResult:
    inbox = make_inbox(
        imap=(host or servers.host, port, secure),
        account=account or servers.user,
        password=password,
    )
    options = ProbeOptions(step_timeout=STEP, ca_file=ca_file)
    deadline = asyncio.get_running_loop().time() + BUDGET
    return await probe_imap(inbox, options, deadline=deadline)


def step_status(result: StageResult) -> dict[str, str]:
    """Last status of each step, by step name."""
    return {s.step.value: s.status.value for s in result.steps}


def warning_codes(result: StageResult) -> list[str]:
    return [w.code for w in result.warnings]


def explain(result: StageResult, servers: MailServers) -> str:
    return f"{json.dumps(result.to_json(), indent=1)}\n{servers.log_tails()}"


def assert_failed(
    result: StageResult,
    servers: MailServers,
    failure: FailureClass,
    field: str,
    *hint_words: str,
) -> None:
    assert result.status is Status.FAILED, explain(result, servers)
    assert result.failure is failure, explain(result, servers)
    assert result.field == field, explain(result, servers)
    assert result.message
    assert result.hint is not None
    for words in hint_words:
        assert words in result.hint, result.hint


# -- SMTP: Postfix with SASL through Dovecot ------------------------------------------


async def test_smtp_submission_starttls_passes_with_auth_plain_after_tls(
    mail_servers: MailServers,
) -> None:
    result = await run_smtp(
        mail_servers, mail_servers.submission_port, secure=False, ca_file=mail_servers.ca_file
    )

    assert result.status is Status.PASSED, explain(result, mail_servers)
    steps = step_status(result)
    assert steps[Step.STARTTLS.value] == "passed"
    assert steps[Step.AUTH.value] == "passed"
    assert result.facts["auth_mechanism"] == "PLAIN"
    assert result.facts["tls"]["verified"] is True
    # smtpd_tls_auth_only: Postfix offers AUTH only once the session is encrypted.
    assert not any(c.startswith("AUTH") for c in result.facts["capabilities_before_starttls"])
    assert "STARTTLS" in result.facts["capabilities_before_starttls"]
    assert any(c.startswith("AUTH") for c in result.facts["capabilities"])
    assert result.warnings == []


async def test_smtp_implicit_tls_passes(mail_servers: MailServers) -> None:
    result = await run_smtp(
        mail_servers, mail_servers.smtps_port, secure=True, ca_file=mail_servers.ca_file
    )

    assert result.status is Status.PASSED, explain(result, mail_servers)
    steps = step_status(result)
    assert steps[Step.TLS.value] == "passed"
    assert steps[Step.AUTH.value] == "passed"
    assert Step.STARTTLS.value not in steps
    assert result.facts["auth_mechanism"] == "PLAIN"
    assert result.facts["tls"]["version"] in ("TLSv1.2", "TLSv1.3")


async def test_smtp_wrong_password_fails_auth_once_over_starttls(
    mail_servers: MailServers,
) -> None:
    wrong = "Wrong-Canary-51d7"
    result = await run_smtp(
        mail_servers,
        mail_servers.submission_port,
        secure=False,
        ca_file=mail_servers.ca_file,
        password=wrong,
    )

    assert_failed(result, mail_servers, F.AUTH_FAILED, "smtp.password", "smtp.password")
    assert "535" in (result.message or "")
    # secure: false still went through STARTTLS (Postfix hides AUTH in plaintext).
    assert step_status(result)[Step.STARTTLS.value] == "passed"
    assert [s.step for s in result.steps].count(Step.AUTH) == 1
    shown = json.dumps(result.to_json())
    for form in secret_forms(mail_servers.user.username, wrong):
        assert form not in shown


async def test_smtp_private_ca_without_ca_file_is_untrusted(mail_servers: MailServers) -> None:
    result = await run_smtp(mail_servers, mail_servers.smtps_port, secure=True)

    assert_failed(result, mail_servers, F.CERT_UNTRUSTED, "smtp.server", "--ca-file")
    assert step_status(result)[Step.TLS.value] == "failed"
    assert Step.AUTH.value not in step_status(result)


async def test_smtp_secure_true_on_starttls_port_says_set_secure_false(
    mail_servers: MailServers,
) -> None:
    result = await run_smtp(
        mail_servers, mail_servers.submission_port, secure=True, ca_file=mail_servers.ca_file
    )

    assert_failed(
        result, mail_servers, F.TLS_ON_PLAINTEXT_PORT, "smtp.secure", "smtp.secure: false"
    )
    assert result.facts["confirmed_mode"] == "plaintext"
    assert Step.AUTH.value not in step_status(result)


async def test_smtp_secure_false_on_wrappermode_port_says_set_secure_true(
    mail_servers: MailServers,
) -> None:
    result = await run_smtp(
        mail_servers, mail_servers.smtps_port, secure=False, ca_file=mail_servers.ca_file
    )

    assert_failed(result, mail_servers, F.PLAINTEXT_ON_TLS_PORT, "smtp.secure", "smtp.secure: true")
    assert result.facts["confirmed_mode"] == "implicit-tls"
    assert Step.AUTH.value not in step_status(result)


async def test_smtp_password_with_quote_space_and_backslash_logs_in(
    mail_servers: MailServers,
) -> None:
    result = await run_smtp(
        mail_servers,
        mail_servers.smtps_port,
        secure=True,
        ca_file=mail_servers.ca_file,
        account=mail_servers.quoting_user,
    )

    assert result.status is Status.PASSED, explain(result, mail_servers)


# -- IMAP: Dovecot ----------------------------------------------------------------------


async def test_imap_implicit_tls_with_ca_file_passes_without_warnings(
    mail_servers: MailServers,
) -> None:
    result = await run_imap(
        mail_servers, mail_servers.imaps_port, secure=True, ca_file=mail_servers.ca_file
    )

    assert result.status is Status.PASSED, explain(result, mail_servers)
    assert result.warnings == []
    assert result.facts["certificate_verified"] is True
    steps = step_status(result)
    for step in (Step.TLS, Step.GREETING, Step.CAPABILITIES, Step.AUTH, Step.MAILBOX):
        assert steps[step.value] == "passed", explain(result, mail_servers)


async def test_imap_implicit_tls_without_ca_file_warns_cert_unverified(
    mail_servers: MailServers,
) -> None:
    result = await run_imap(mail_servers, mail_servers.imaps_port, secure=True)

    # Rocket.Chat does not verify IMAP certificates: it works, insecurely.
    assert result.status is Status.WARNING, explain(result, mail_servers)
    assert warning_codes(result) == ["imap-cert-unverified"]
    assert result.warnings[0].field == "imap.server"
    assert "--ca-file" in (result.warnings[0].hint or "")
    assert result.facts["certificate_verified"] is False
    assert step_status(result)[Step.AUTH.value] == "passed"


async def test_imap_mailbox_select_is_read_write_and_sees_the_seeded_message(
    mail_servers: MailServers,
) -> None:
    result = await run_imap(
        mail_servers, mail_servers.imaps_port, secure=True, ca_file=mail_servers.ca_file
    )

    assert result.status is Status.PASSED, explain(result, mail_servers)
    mailbox = next(s for s in result.steps if s.step is Step.MAILBOX)
    assert mailbox.status is Status.PASSED
    assert "read-write" in (mailbox.detail or "")
    assert result.facts["exists"] == mail_servers.seeded_messages
    # The probe only reads: the seeded message stays unseen for every other test.
    assert result.facts["unseen"] == mail_servers.seeded_messages
    assert "IDLE" in result.facts["capabilities_after_login"]


async def test_imap_plaintext_allowed_passes_with_plaintext_warning(
    mail_servers: MailServers,
) -> None:
    result = await run_imap(mail_servers, mail_servers.imap_plain_port, secure=False)

    assert result.status is Status.WARNING, explain(result, mail_servers)
    assert warning_codes(result) == ["plaintext-credentials"]
    assert result.warnings[0].field == "imap.secure"
    steps = step_status(result)
    assert Step.TLS.value not in steps
    assert steps[Step.AUTH.value] == "passed"
    assert steps[Step.MAILBOX.value] == "passed"


async def test_imap_logindisabled_fails_tls_required_without_sending_login(
    mail_servers: MailServers,
) -> None:
    # Dovecot listens on 127.0.0.2; the connection comes from 127.0.0.1, so Dovecot
    # does not count it as local-and-secure and advertises LOGINDISABLED.
    result = await run_imap(
        mail_servers,
        mail_servers.logindisabled_port,
        secure=False,
        host=mail_servers.logindisabled_host,
    )

    assert_failed(result, mail_servers, F.TLS_REQUIRED, "imap.secure", "imap.secure: true")
    assert "LOGINDISABLED" in result.facts["capabilities"]
    assert step_status(result)[Step.AUTH.value] == "skipped"
    assert Step.MAILBOX.value not in step_status(result)


async def test_imap_wrong_password_fails_auth(mail_servers: MailServers) -> None:
    wrong = "Wrong-Canary-8e02"
    result = await run_imap(
        mail_servers,
        mail_servers.imaps_port,
        secure=True,
        ca_file=mail_servers.ca_file,
        password=wrong,
    )

    assert_failed(result, mail_servers, F.AUTH_FAILED, "imap.password", "imap.password")
    assert "AUTHENTICATIONFAILED" in (result.message or "")
    assert step_status(result)[Step.AUTH.value] == "failed"
    assert wrong not in json.dumps(result.to_json())


async def test_imap_secure_true_on_plaintext_port_says_set_secure_false(
    mail_servers: MailServers,
) -> None:
    result = await run_imap(mail_servers, mail_servers.imap_plain_port, secure=True)

    assert_failed(
        result, mail_servers, F.TLS_ON_PLAINTEXT_PORT, "imap.secure", "imap.secure: false"
    )
    assert result.facts["confirmed_mode"] == "plaintext"


async def test_imap_secure_false_on_implicit_tls_port_says_set_secure_true(
    mail_servers: MailServers,
) -> None:
    result = await run_imap(mail_servers, mail_servers.imaps_port, secure=False)

    assert_failed(result, mail_servers, F.PLAINTEXT_ON_TLS_PORT, "imap.secure", "imap.secure: true")
    assert result.facts["confirmed_mode"] == "implicit-tls"
    assert Step.AUTH.value not in step_status(result)


async def test_imap_password_with_quote_space_and_backslash_logs_in(
    mail_servers: MailServers,
) -> None:
    result = await run_imap(
        mail_servers,
        mail_servers.imaps_port,
        secure=True,
        ca_file=mail_servers.ca_file,
        account=mail_servers.quoting_user,
    )

    assert result.status is Status.PASSED, explain(result, mail_servers)
    assert step_status(result)[Step.MAILBOX.value] == "passed"
