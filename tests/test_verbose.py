"""``check -v``: every protocol step on stderr (stage, step, status, ms, detail), never a
secret, even from servers that echo the credentials back."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.probes.smtp.session import secret_forms
from tests.servers import imap_misbehaving, smtp_misbehaving

runner = CliRunner()
USER = "alice@example.test"
PASSWORD = "Canary-v3rb0se-pw"


pytestmark = pytest.mark.usefixtures("restore_logging")


async def test_verbose_check_logs_each_step_and_no_secret(tmp_path: Path) -> None:
    smtp = await smtp_misbehaving.start_scripted_server("535-echoes-credentials")
    imap = await imap_misbehaving.start_scripted_server("login-echoes-password")
    server = {"server": "127.0.0.1", "username": USER, "password": PASSWORD, "secure": False}
    path = tmp_path / "inbox.json"
    path.write_text(
        json.dumps(
            {
                "name": "Support",
                "email": "support@example.test",
                "smtp": {**server, "port": smtp.port},
                "imap": {**server, "port": imap.port},
            }
        )
    )
    try:
        result = await asyncio.to_thread(
            runner.invoke, app, ["check", str(path), "-v", "--json", "--step-timeout", "2"]
        )
    finally:
        await smtp.close()
        await imap.close()

    assert result.exit_code == 14, result.output
    lines = [li for li in result.stderr.splitlines() if " provision.check " in li]
    who = "'Support' <support@example.test>"
    step = r" (\w+)(@127\.0\.0\.1:\d+)? (passed|failed|warning|skipped) \d+ ms"
    smtp_steps = [m[1] for li in lines if (m := re.search(f"smtp {who}:{step}", li))]
    imap_steps = [m[1] for li in lines if (m := re.search(f"imap {who}:{step}", li))]
    assert smtp_steps == ["resolve", "connect", "greeting", "capabilities", "starttls", "auth"]
    assert imap_steps == ["resolve", "connect", "greeting", "capabilities", "auth"]
    assert any(f"smtp {who}: starttls skipped 0 ms: not offered" in li for li in lines)
    assert any(f"imap {who}: auth failed" in li and "AUTHENTICATIONFAILED" in li for li in lines)
    # The stage's outcome, with the reply (which echoed the password: masked).
    assert any(f"smtp {who}: auth-failed in" in li and "535 5.7.8" in li for li in lines)
    assert json.loads(result.stdout)["exit_code"] == 14  # stdout stays the JSON alone
    for form in secret_forms(USER, PASSWORD):
        assert form not in result.stderr, form
        assert form not in result.stdout, form
