"""`provision audit` against real Dovecot and Postfix: an inbox created with `set` (on the
Rocket.Chat double), then its password rotated at the provider (Dovecot's passdb, which
Postfix's SASL uses too), found by `audit` as Rocket.Chat would meet it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from provision.commands.audit import AuditTarget, audit_inboxes
from provision.commands.set import SetOptions, set_inboxes
from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.results import Action, ExitCode, FailureClass, Stage, Status
from provision.rocketchat.credentials import TokenAuth
from provision.sandbox.rocketchat import RunningRocketChat, start_rocketchat
from tests.doubles.rocketchat_faults import FaultyRocketChat

if TYPE_CHECKING:
    from tests.real.conftest import MailServers

pytestmark = pytest.mark.real

TOKEN = "real-audit-token-6d"


@pytest.fixture
async def rocketchat() -> AsyncIterator[tuple[RunningRocketChat, TokenAuth]]:
    double = FaultyRocketChat()
    admin = double.add_admin("real-admin", token=TOKEN)
    running = await start_rocketchat(double)
    try:
        yield running, TokenAuth(user_id=admin.id, token=Secret(TOKEN))
    finally:
        await running.close()


async def test_a_password_rotated_at_dovecot_and_postfix_is_found(
    mail_servers: MailServers, rocketchat: tuple[RunningRocketChat, TokenAuth]
) -> None:
    servers, (running, credentials) = mail_servers, rocketchat
    account = servers.rotating_user
    secret = Secret(account.password)
    inbox = Inbox(
        name="Rotating",
        email=account.username,
        smtp=SmtpSettings(
            server=servers.host,
            port=servers.submission_port,
            username=account.username,
            password=secret,
            secure=False,
        ),
        imap=ImapSettings(
            server=servers.host,
            port=servers.imaps_port,
            username=account.username,
            password=secret,
            secure=True,
        ),
    )
    options = ProbeOptions(ca_file=servers.ca_file, step_timeout=3, timeout=30)
    created = await set_inboxes(
        [inbox], options, SetOptions(server=running.url, credentials=credentials)
    )
    assert [i.action for i in created.inboxes] == [Action.CREATED], servers.log_tails()
    target = AuditTarget(server=running.url, credentials=credentials)
    healthy = await audit_inboxes(options, target)
    assert healthy.exit_code is ExitCode.OK, (healthy.to_json(), servers.log_tails())

    servers.set_password(account, "after-rotation-at-the-provider-8")
    try:
        assert isinstance(running.app, FaultyRocketChat)
        running.app.imap_keeps_failing(account.username)
        report = await audit_inboxes(options, target)
    finally:
        servers.set_password(account, account.password)

    (result,) = report.inboxes
    stages = {s.stage: s for s in result.stages}
    assert stages[Stage.SMTP].failure is FailureClass.AUTH_FAILED, servers.log_tails()
    assert stages[Stage.IMAP].failure is FailureClass.AUTH_FAILED, servers.log_tails()
    assert "imap.password" in (stages[Stage.IMAP].hint or "")
    state = stages[Stage.ROCKETCHAT]
    assert state.status is Status.WARNING
    assert [w.code for w in state.warnings] == ["switched-off"]
    assert result.rocketchat is not None
    assert result.rocketchat.active is False
    assert report.exit_code is ExitCode.AUTH
    assert account.password not in str(report.to_json())
