"""Microsoft 365's SMTP AUTH refusals (issue 9, probe-anchors.md §7): one code, 5.7.139,
several reasons; the reason text decides the class, the field and the hint. Each reply
comes from the scripted SMTP server over a real socket, through ``provision check``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provision.cli import app
from tests.servers import imap_misbehaving, smtp_misbehaving

runner = CliRunner()

_NO_OAUTH = "Rocket.Chat sends only a user name and password (it has no OAuth2 for mail)"

CASES = [
    # script, class, field, words the hint must hold
    (
        "535-m365",
        "smtp-auth-disabled",
        "smtp.username",
        ("switched off for the whole tenant", "Set-TransportConfig", "Set-CASMailbox", _NO_OAUTH),
    ),
    (
        "535-m365-mailbox",
        "smtp-auth-disabled",
        "smtp.username",
        ("switched off for this mailbox", "Authenticated SMTP", _NO_OAUTH),
    ),
    (
        "535-m365-criteria",
        "smtp-auth-disabled",
        "smtp.username",
        ("Authenticated SMTP", "Conditional Access"),
    ),
    (
        "535-m365-basic-auth",
        "basic-auth-disabled",
        "smtp.username",
        ("basic authentication turned off", _NO_OAUTH),
    ),
    (
        "535-m365-security-defaults",
        "basic-auth-disabled",
        "smtp.username",
        ("security defaults", "Microsoft Entra ID", "Conditional Access"),
    ),
    (
        "550-m365-basic-auth-retired",
        "basic-auth-disabled",
        "smtp.server",
        ("no longer accepts a password", _NO_OAUTH, "another SMTP service"),
    ),
    # A wrong password stays a wrong password, whatever the code.
    ("535-m365-wrong-password", "auth-failed", "smtp.password", ("check smtp.username",)),
    ("535-m365-5.7.3", "auth-failed", "smtp.password", ("check smtp.username",)),
]


@pytest.fixture
async def imap_port() -> AsyncIterator[int]:
    server = await imap_misbehaving.start_scripted_server("healthy")
    yield server.port
    await server.close()


def _inbox_file(directory: Path, smtp_port: int, imap_port: int) -> Path:
    server = {"server": "127.0.0.1", "username": "support@contoso.test", "password": "pw-1"}
    path = directory / "inbox.json"
    path.write_text(
        json.dumps(
            {
                "name": "Support",
                "email": "support@contoso.test",
                "smtp": {**server, "port": smtp_port, "secure": False},
                "imap": {**server, "port": imap_port, "secure": False},
            }
        )
    )
    return path


@pytest.mark.parametrize(("script", "cls", "field", "hint_words"), CASES, ids=[c[0] for c in CASES])
async def test_microsoft_reply_reason_decides_class_field_and_hint(
    tmp_path: Path,
    imap_port: int,
    script: str,
    cls: str,
    field: str,
    hint_words: tuple[str, ...],
) -> None:
    smtp = await smtp_misbehaving.start_scripted_server(script)
    try:
        result = await asyncio.to_thread(
            runner.invoke,
            app,
            ["check", str(_inbox_file(tmp_path, smtp.port, imap_port)), "--json"],
        )
    finally:
        await smtp.close()

    assert result.exit_code == 14, result.output  # the authentication group
    doc: dict[str, Any] = json.loads(result.stdout)
    stage = doc["inboxes"][0]["stages"][0]
    assert (stage["stage"], stage["class"], stage["field"]) == ("smtp", cls, field)
    for word in hint_words:
        assert word in stage["hint"], stage["hint"]
    reply = smtp_misbehaving.SCRIPTS[script].replies["AUTH"]
    assert isinstance(reply, bytes)
    assert reply.decode().strip() in stage["message"]  # the server's own words are kept
    assert smtp.verbs().count("AUTH") == 1  # one attempt, as Rocket.Chat makes
