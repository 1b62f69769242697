"""Beyond the login (issue 11) against real Dovecot and Postfix: what Rocket.Chat will
import, the envelope check, and the round trip (fixtures in conftest.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from provision.models import ProbeOptions
from provision.probes.imap import probe_imap
from tests.real.test_dovecot_postfix import explain, make_inbox

if TYPE_CHECKING:
    from tests.real.conftest import MailServers

pytestmark = pytest.mark.real

STEP = 2.0
BUDGET = 20.0


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
