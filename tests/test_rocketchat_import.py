"""What Rocket.Chat will import (issue 11 item 3): the unseen count and IDLE, from the one SEARCH.

Against pymap over real sockets (messages put there by a real IMAP client) and a
scripted server without IDLE; the Dovecot count is in ``tests/real``.
"""

from __future__ import annotations

import asyncio
import re

import aioimaplib

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.imap import probe_imap
from provision.render.text import render_text
from provision.results import InboxResult, Report, StageResult, Status
from provision.sandbox.imapd import start_imap_server
from tests.servers.imap_misbehaving import Script, ScriptedImapServer, start_scripted_server

USER = "support@example.com"
PASSWORD = "canary-Pw-import-51"
IMPORT_NOTE = "Rocket.Chat imports only mail that arrives after the inbox is created"


def _inbox(port: int) -> Inbox:
    smtp = SmtpSettings(
        server="smtp.invalid", port=465, username=USER, password=Secret("x"), secure=True
    )
    imap = ImapSettings(
        server="127.0.0.1", port=port, username=USER, password=Secret(PASSWORD), secure=False
    )
    return Inbox(name="support", email=USER, smtp=smtp, imap=imap)


async def _probe(port: int) -> StageResult:
    loop = asyncio.get_running_loop()
    options = ProbeOptions(step_timeout=5.0)
    return await probe_imap(_inbox(port), options, deadline=loop.time() + 10.0)


async def _append(port: int, flags: list[str]) -> None:
    """Put one message per entry into INBOX with a real IMAP client (APPEND)."""
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=5)
    await client.wait_hello_from_server()
    assert (await client.login(USER, PASSWORD)).result == "OK"
    for number, flag in enumerate(flags):
        message = f"From: a@example.com\r\nSubject: {number}\r\n\r\nbody {number}\r\n".encode()
        response = await client.append(message, mailbox="INBOX", flags=flag or None)
        assert response.result == "OK", response
    await client.logout()


async def test_import_count_matches_the_pymap_inbox() -> None:
    async with await start_imap_server(
        implicit_tls=False, tls_context=None, user=USER, password=PASSWORD
    ) as server:
        await _append(server.port, ["", "\\Seen", "", "", "\\Seen \\Flagged"])

        result = await _probe(server.port)

    assert result.status is Status.WARNING, result.to_json()  # plaintext credentials
    assert result.facts["exists"] == 5
    assert result.facts["unseen"] == 3
    assert result.facts["idle"] is True
    assert result.facts["notes"] == [f"3 unseen messages in INBOX; {IMPORT_NOTE}"]
    # One SEARCH, no extra round trip: the count comes from Rocket.Chat's own search.
    probe_commands = server.commands[-3:]
    assert probe_commands == ["SELECT", "SEARCH", "LOGOUT"]
    text = render_text(_report(result))
    assert f"note: 3 unseen messages in INBOX; {IMPORT_NOTE}" in text


async def test_import_count_of_an_empty_inbox_is_zero() -> None:
    async with await start_imap_server(
        implicit_tls=False, tls_context=None, user=USER, password=PASSWORD
    ) as server:
        result = await _probe(server.port)

    assert result.facts["unseen"] == 0
    assert result.facts["notes"][0].startswith("0 unseen messages in INBOX;")


async def test_search_counts_every_unseen_message_in_node_imaps_date_form() -> None:
    server, result = await _probe_scripted("healthy")

    search = next(line for line in server.lines if b" SEARCH " in line)
    # node-imap's criteria and date form (day not zero-padded), from the epoch on.
    assert search.split(b" ", 1)[1] == b"SEARCH UNSEEN SINCE 1-Jan-1970\r\n"
    assert result.facts["unseen"] == 2  # the script answers "* SEARCH 2 3"
    assert len(result.facts["notes"]) == 1  # IDLE is offered: no polling note


async def test_without_idle_the_report_says_rocketchat_polls() -> None:
    _, result = await _probe_scripted("preauth")  # CAPABILITY IMAP4rev1, no IDLE

    assert result.facts["idle"] is False
    notes = result.facts["notes"]
    assert re.fullmatch(r"2 unseen messages in INBOX; .+", notes[0])
    assert "falls back to polling" in notes[1]
    assert "note: the server does not offer IDLE" in render_text(_report(result))


async def test_esearch_count_keeps_a_huge_inbox_within_the_reply_caps() -> None:
    """200,000 unseen as plain SEARCH would be a 1.3 MB line, past the 1 MiB line cap."""
    script = Script(
        replies={
            "LOGIN": b"{tag} OK [CAPABILITY IMAP4rev1 IDLE ESEARCH] Logged in\r\n",
            "SEARCH": b'* ESEARCH (TAG "{tag}") COUNT 200000\r\n{tag} OK done\r\n',
        }
    )
    server, result = await _probe_scripted(script)

    search = next(line for line in server.lines if b" SEARCH " in line)
    assert search.split(b" ", 1)[1] == b"SEARCH RETURN (COUNT) UNSEEN SINCE 1-Jan-1970\r\n"
    assert result.status is Status.WARNING, result.to_json()  # plaintext only
    assert result.facts["unseen"] == 200_000


async def _probe_scripted(script: Script | str) -> tuple[ScriptedImapServer, StageResult]:
    server = await start_scripted_server(script)
    try:
        return server, await _probe(server.port)
    finally:
        await server.close()


def _report(stage: StageResult) -> Report:
    inbox = InboxResult(name="support", email=USER, stages=[stage])
    return Report(command="check", inboxes=[inbox])
