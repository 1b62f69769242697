"""The pre-commit hook (.pre-commit-hooks.yaml): a valid manifest, files it picks, and a real
`pre-commit try-repo` of this repository passing a good inbox file and failing a bad one;
plus `check --offline` itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pre_commit.clientlib import load_manifest
from typer.testing import CliRunner

from provision.cli import app

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / ".pre-commit-hooks.yaml"
runner = CliRunner()


def _hook() -> dict[str, object]:
    (hook,) = load_manifest(str(MANIFEST))  # pre-commit's own schema check
    return dict(hook)


def test_the_manifest_is_valid_and_runs_the_offline_check() -> None:
    hook = _hook()
    assert hook["id"] == "provision-check-offline"
    assert hook["entry"] == "provision check --offline"
    assert hook["language"] == "python"
    assert hook["require_serial"] is True


@pytest.mark.parametrize(
    ("path", "picked"),
    [
        ("inboxes.yaml", True),
        ("deploy/inbox.json", True),
        ("inboxes/support.yml", True),
        ("inbox-prod.yaml", True),
        ("examples/inboxes.yaml", True),
        (".github/workflows/ci.yml", False),
        ("docker-compose.yml", False),
        ("inboxes.yaml.bak", False),
    ],
)
def test_the_hook_picks_inbox_files_only(path: str, picked: bool) -> None:
    assert bool(re.search(str(_hook()["files"]), path)) is picked


GOOD = """inboxes:
  - name: Support
    email: support@example.com
    smtp: {server: smtp.example.com, port: 587, username: support,
           password: "${SMTP_PW}", secure: false}
    imap: {server: imap.example.com, port: 993, username: support,
           password: "${IMAP_PW}", secure: true}
"""
BAD = "name: Bad\nemail: nope\n"


def test_offline_check_passes_a_valid_file_with_unset_variables(tmp_path: Path) -> None:
    good = tmp_path / "inboxes.yaml"
    good.write_text(GOOD)
    result = runner.invoke(app, ["check", "--offline", "--json", str(good)], env={})
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["settings"]["offline"] is True
    assert document["settings"]["unset_variables"] == ["IMAP_PW", "SMTP_PW"]
    stages = [s for inbox in document["inboxes"] for s in inbox["stages"]]
    assert [s["status"] for s in stages] == ["skipped", "skipped"]
    assert "offline-placeholder" not in result.output


def test_offline_check_fails_bad_input_and_refuses_the_sandbox(tmp_path: Path) -> None:
    bad = tmp_path / "inboxes.yaml"
    bad.write_text(BAD)
    result = runner.invoke(app, ["check", "--offline", str(bad)])
    assert result.exit_code == 2
    assert "email: expected an email address" in result.output
    refused = runner.invoke(app, ["check", "--offline", "--sandbox"])
    assert refused.exit_code == 2
    assert "do not give --sandbox" in refused.output


def _try_repo(project: Path, home: Path, *files: str) -> subprocess.CompletedProcess[str]:
    hook = [str(ROOT), "provision-check-offline"]
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", *hook, "--files", *files],
        cwd=project,
        env={"PRE_COMMIT_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_pre_commit_runs_the_hook_from_this_repository(tmp_path: Path) -> None:
    """pre-commit installs provision from this checkout into its own venv and runs the hook."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "inboxes.yaml").write_text(GOOD)
    (project / "inboxes-bad.yaml").write_text(BAD)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "."], cwd=project, check=True)
    home = tmp_path / "home"
    passed = _try_repo(project, home, "inboxes.yaml")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert re.search(r"provision check --offline\.+Passed", passed.stdout)
    failed = _try_repo(project, home, "inboxes.yaml", "inboxes-bad.yaml")
    assert failed.returncode == 1
    assert "- exit code: 2" in failed.stdout
    assert "inboxes-bad.yaml:2: inbox 'Bad': email: expected an email address" in failed.stdout
