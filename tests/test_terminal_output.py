"""No control sequence from input or servers reaches a terminal (issue 9): inbox names,
SMTP and IMAP replies and input errors carry OSC, CSI and C1 sequences here, driven
through the real command against scripted servers; JSON keeps the exact data."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.commands.check import check
from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.render.terminal import safe_text
from provision.render.text import render_text
from tests.servers import imap_misbehaving, smtp_misbehaving

runner = CliRunner()

OSC = "\x1b]0;pwned\x07"
CSI = "\x1b[31mred\x1b[0m"
C1 = "\x9b2J"  # C1 CSI: "erase the screen" on terminals that take 8-bit controls
NAME = f"Sup{OSC}port {CSI} {C1}"
# Bytes on the wire: C1 both as UTF-8 (U+009B) and as a raw byte (not UTF-8 at all).
HOSTILE = OSC.encode() + b" " + CSI.encode() + b" " + C1.encode() + b" \x9b6n\r"
SMTP_REPLY = b"535 5.7.8 Authentication credentials invalid " + HOSTILE + b"\r\n"
IMAP_REPLY = b"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials " + HOSTILE + b"\r\n"

# What must never be written raw: C0 but tab and newline, DEL, C1, lone surrogates.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (OSC, "\\x1b]0;pwned\\x07"),
        (CSI, "\\x1b[31mred\\x1b[0m"),
        (C1, "\\x9b2J"),
        ("a\rb\x00c\x7f", "a\\x0db\\x00c\\x7f"),
        ("\x1bP1;2q\x1b\\", "\\x1bP1;2q\\x1b\\"),  # DCS ... ST
        ("abc\u202edcba", "abc\\u202edcba"),  # a bidi override reorders what is shown
        ("bad \udc9b byte", "bad \\udc9b byte"),  # undecodable byte, surrogate-escaped
        ("two\nlines\tand a tab", "two\nlines\tand a tab"),
        ("Grüße, 日本", "Grüße, 日本"),
    ],
)
def test_safe_text_escapes_controls_visibly(raw: str, shown: str) -> None:
    assert safe_text(raw) == shown
    assert not CONTROL.search(safe_text(raw))


@pytest.fixture
async def hostile_servers() -> AsyncIterator[tuple[int, int]]:
    smtp = await smtp_misbehaving.start_scripted_server(
        smtp_misbehaving.Script(replies={"AUTH": SMTP_REPLY})
    )
    imap = await imap_misbehaving.start_scripted_server(
        imap_misbehaving.Script(replies={"LOGIN": IMAP_REPLY})
    )
    yield smtp.port, imap.port
    await smtp.close()
    await imap.close()


def _inbox_file(directory: Path, smtp_port: int, imap_port: int) -> Path:
    path = directory / "inbox.json"
    server = {"server": "127.0.0.1", "username": "u@example.test", "password": "Canary-7d1e"}
    body = {
        "name": NAME,
        "email": "support@example.test",
        "smtp": {**server, "port": smtp_port, "secure": False},
        "imap": {**server, "port": imap_port, "secure": False},
    }
    path.write_text(json.dumps(body))
    return path


@pytest.mark.usefixtures("restore_logging")
async def test_text_report_and_annotations_carry_no_control_sequence(
    tmp_path: Path, hostile_servers: tuple[int, int]
) -> None:
    path = _inbox_file(tmp_path, *hostile_servers)
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}

    result = await asyncio.to_thread(
        runner.invoke, app, ["check", str(path), "--step-timeout", "2", "-v"], env=env
    )

    assert result.exit_code == 14, result.output
    for stream in (result.stdout, result.stderr):
        assert not CONTROL.search(stream), [m.group() for m in CONTROL.finditer(stream)]
    # Still visible, escaped: the reader sees that something was there.
    assert "Sup\\x1b]0;pwned\\x07port \\x1b[31mred\\x1b[0m \\x9b2J" in result.stdout
    failures = [li for li in result.stdout.splitlines() if li.startswith("           auth-")]
    assert len(failures) == 2  # SMTP and IMAP
    assert all("\\x1b]0;pwned\\x07 \\x1b[31mred\\x1b[0m \\x9b2J" in li for li in failures)
    assert "::error " in result.stderr
    assert "\\x1b]0;pwned\\x07" in result.stderr  # in the annotations


async def test_json_keeps_the_exact_data(tmp_path: Path, hostile_servers: tuple[int, int]) -> None:
    path = _inbox_file(tmp_path, *hostile_servers)

    result = await asyncio.to_thread(
        runner.invoke, app, ["check", str(path), "--step-timeout", "2", "--json"]
    )

    assert result.exit_code == 14, result.output
    assert not CONTROL.search(result.stdout)  # json.dumps escapes them itself
    [inbox] = json.loads(result.stdout)["inboxes"]
    assert inbox["name"] == NAME
    smtp = inbox["stages"][0]
    assert smtp["class"] == "auth-failed"
    # The probes already show a reply's bytes escaped (they are not text the server
    # chose to style); the inbox's own name is data and stays exact.
    assert "\\x1b]0;pwned\\x07 \\x1b[31mred" in smtp["message"]


async def test_coloured_report_has_only_its_own_colour_codes(
    hostile_servers: tuple[int, int],
) -> None:
    smtp_port, imap_port = hostile_servers
    secret = Secret("Canary-7d1e")
    server = {"server": "127.0.0.1", "username": "u@example.test", "password": secret}
    inbox = Inbox(
        name=NAME,
        email="support@example.test",
        smtp=SmtpSettings(**server, port=smtp_port, secure=False),
        imap=ImapSettings(**server, port=imap_port, secure=False),
    )
    report = await check([inbox], ProbeOptions(step_timeout=2))

    text = render_text(report, color=True)

    ours = {"\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[2m", "\x1b[0m"}
    assert set(re.findall(r"\x1b\[[0-9;]*m", text)) <= ours
    assert not CONTROL.search(re.sub(r"\x1b\[[0-9;]*m", "", text))
    assert text.count("\\x1b[31mred\\x1b[0m") >= 3
    assert report.inboxes[0].name == NAME  # the report itself is not changed


def test_input_error_with_escapes_in_a_key_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "inbox.yaml"
    path.write_text('name: S\nemail: s@example.com\n"x\\e]0;pwned\\a": 1\n')  # YAML escapes

    text = runner.invoke(app, ["check", str(path), "--offline"])
    as_json = runner.invoke(app, ["check", str(path), "--offline", "--json"])

    assert text.exit_code == as_json.exit_code == 2
    assert not CONTROL.search(text.stderr)
    assert "x\\x1b]0;pwned\\x07: unknown key" in text.stderr
    fields = [error["field"] for error in json.loads(as_json.stdout)["errors"]]
    assert f"x{OSC}" in fields


def test_safe_data_copies_only_what_needs_escaping() -> None:
    from provision.render.terminal import safe_data
    from provision.results import InboxResult, Report, Stage, StageResult

    clean = InboxResult(name="Support", email="s@example.com")
    dirty = InboxResult(name=NAME, email="d@example.com")
    dirty.stages.append(StageResult(stage=Stage.SMTP, facts={"greeting": f"220 {OSC}"}))
    report = Report(command="check", inboxes=[clean, dirty])

    assert safe_data(Report(command="check", inboxes=[clean])).inboxes[0] is clean
    shown = safe_data(report)

    assert shown is not report
    assert shown.inboxes[0] is clean  # nothing to escape: not copied
    assert shown.inboxes[1].name == safe_text(NAME)
    assert shown.inboxes[1].stages[0].facts["greeting"] == "220 \\x1b]0;pwned\\x07"
    assert dirty.name == NAME  # the report itself is left as it was
    assert dirty.stages[0].facts["greeting"] == f"220 {OSC}"
