"""check and set against the real services of docker-compose.test.yml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision.cli import app

runner = CliRunner()

INBOX = """\
name: Compose support
email: support@example.com
smtp: {server: 127.0.0.1, port: 3025, username: support@example.com,
       password: support-mail-password, secure: false}
imap: {server: 127.0.0.1, port: 3143, username: support@example.com,
       password: support-mail-password, secure: false, maxRetries: 10}
"""


@pytest.fixture
def inbox_file(tmp_path: Path) -> Path:
    path = tmp_path / "inbox.yaml"
    path.write_text(INBOX)
    return path


def test_check_against_greenmail(inbox_file: Path) -> None:
    result = runner.invoke(app, ["check", str(inbox_file), "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, result.stdout
    assert [s["status"] for s in doc["inboxes"][0]["stages"]] == ["warning", "warning"]


def test_set_twice_against_rocketchat(
    inbox_file: Path, seed_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in seed_env.items():
        monkeypatch.setenv(key, value)
    first = runner.invoke(app, ["set", str(inbox_file), "--json"])
    second = runner.invoke(app, ["set", str(inbox_file), "--json"])
    assert first.exit_code == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["inboxes"][0]["action"] in {"created", "unchanged"}
    assert json.loads(second.stdout)["inboxes"][0]["action"] == "unchanged"
