"""``--metrics FILE``: the Prometheus text exposition of a run, parsed back with
``prometheus_client``'s own parser and compared with the JSON report of the same run;
written atomically; never a secret. Real runs go against the sandbox's servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from provision.cli import app
from provision.render.ci import CiOutputs
from provision.render.metrics import METRIC_NAMES, render_metrics, write_metrics
from provision.results import (
    FailureClass,
    InboxResult,
    Report,
    RocketChatState,
    Stage,
    StageResult,
    Status,
)
from provision.sandbox.runner import Sandbox, running_sandbox

runner = CliRunner()
CANARY = "Canary-Metrics-Pw-93c1"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    """Every sample as (name, labels) -> value; a name or HELP outside our table fails."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name in METRIC_NAMES, family.name
        assert family.documentation == METRIC_NAMES[family.name]
        assert family.type == "gauge"
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, key  # no duplicate series
            out[key] = sample.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _wrong_smtp_password(box: Sandbox) -> Path:
    """Support's SMTP password wrong (the canary); the rest still reads ``${file:password}``."""
    wrong = box.directory / "wrong.yaml"
    wrong.write_text(box.inbox_file.read_text().replace("${file:password}", CANARY, 1))
    return wrong


async def test_metrics_carry_what_the_json_report_shows(tmp_path: Path) -> None:
    out = tmp_path / "textfile" / "provision.prom"
    out.parent.mkdir()
    async with running_sandbox(tmp_path / "box") as box:
        wrong = _wrong_smtp_password(box)
        args = ["check", str(wrong), "--ca-file", str(box.ca_file), "--json"]
        result = await asyncio.to_thread(runner.invoke, app, [*args, "--metrics", str(out)])
        secret = (box.directory / "password").read_text().strip()
    assert result.exit_code == 14, result.stdout + result.stderr
    report = json.loads(result.stdout)
    text = out.read_text()
    for leaked in (CANARY, secret):
        assert leaked not in text
        assert leaked not in result.stdout + result.stderr
    samples = _samples(text)
    run = {"command": "check"}
    assert _value(samples, "provision_last_run_exit_code", **run) == 14
    assert _value(samples, "provision_last_run_success", **run) == 0
    assert _value(samples, "provision_inboxes", **run) == len(report["inboxes"]) == 2
    duration = _value(samples, "provision_last_run_duration_seconds", **run)
    assert duration == pytest.approx(report["elapsed_ms"] / 1000, abs=1e-4)
    finished = _value(samples, "provision_last_run_timestamp_seconds", **run)
    assert abs(finished - dt.datetime.now(dt.UTC).timestamp()) < 60
    seen = 0
    for inbox in report["inboxes"]:
        who = {**run, "inbox": inbox["name"], "email": inbox["email"]}
        assert _value(samples, "provision_inbox_up", **who) == (inbox["status"] != "failed")
        for stage in inbox["stages"]:
            labels = {**who, "stage": stage["stage"]}
            up = _value(samples, "provision_probe_up", **labels)
            assert up == (0 if stage["status"] == "failed" else 1)
            took = _value(samples, "provision_probe_duration_seconds", **labels)
            assert took == pytest.approx(stage["elapsed_ms"] / 1000, abs=1e-4)
            assert took > 0
            not_after = stage["facts"]["tls"]["certificate"]["not_after"]
            expiry = _value(samples, "provision_certificate_expiry_timestamp_seconds", **labels)
            assert expiry == dt.datetime.fromisoformat(not_after).timestamp()
            classes = [
                dict(k[1])["class"]
                for k in samples
                if k[0] == "provision_probe_failure_info" and labels.items() <= k[1]
            ]
            assert classes == ([stage["class"]] if stage["class"] else [])
            seen += 1
    assert seen == 4
    failed = [dict(k[1]) for k in samples if k[0] == "provision_probe_failure_info"]
    assert [(f["inbox"], f["stage"], f["class"]) for f in failed] == [
        ("Support", "smtp", "auth-failed")
    ]
    assert not [k for k in samples if k[0] == "provision_rocketchat_inbox_active"]  # check: none
    assert sorted(os.listdir(out.parent)) == ["provision.prom"]  # no temp file left behind


def _result(name: str, email: str, *, smtp: Status, imap: Status, **extra: Any) -> InboxResult:
    stages = []
    for stage, status in ((Stage.SMTP, smtp), (Stage.IMAP, imap)):
        result = StageResult(stage=stage, elapsed_ms=1500.0)
        if status is Status.FAILED:
            result.fail(FailureClass.CERT_EXPIRED, "expired")
        else:
            result.status = status
        stages.append(result)
    return InboxResult(name=name, email=email, stages=stages, **extra)


def test_rocketchat_active_flag_and_hostile_names_round_trip() -> None:
    """Audit's ``rocketchat`` state becomes the active gauge; quotes, backslashes and
    newlines in an inbox name are escaped by prometheus_client and parse back whole."""
    hostile = 'Sup"port\\desk\nline two'
    report = Report(
        command="audit",
        inboxes=[
            _result(
                hostile,
                "a@example.com",
                smtp=Status.PASSED,
                imap=Status.FAILED,
                rocketchat=RocketChatState(inbox_id="id1", active=False),
            ),
            _result(
                "B",
                "b@example.com",
                smtp=Status.SKIPPED,
                imap=Status.SKIPPED,
                rocketchat=RocketChatState(inbox_id="id2", active=True),
            ),
        ],
    )
    samples = _samples(render_metrics(report, finished=1_700_000_000.0))
    a = {"command": "audit", "inbox": hostile, "email": "a@example.com"}
    b = {"command": "audit", "inbox": "B", "email": "b@example.com"}
    assert _value(samples, "provision_rocketchat_inbox_active", **a) == 0
    assert _value(samples, "provision_rocketchat_inbox_active", **b) == 1
    assert _value(samples, "provision_probe_up", **a, stage="smtp") == 1
    assert _value(samples, "provision_probe_up", **a, stage="imap") == 0
    assert _value(samples, "provision_probe_duration_seconds", **a, stage="imap") == 1.5
    assert _value(samples, "provision_inbox_up", **a) == 0
    # Skipped stages measured nothing: no series for them.
    assert [k for k in samples if ("inbox", "B") in k[1]] == [
        ("provision_rocketchat_inbox_active", frozenset(b.items()))
    ]
    assert _value(samples, "provision_last_run_timestamp_seconds", command="audit") == 1.7e9
    assert _value(samples, "provision_last_run_exit_code", command="audit") == 12


@pytest.mark.parametrize(
    ("target", "reason"),
    [("no-such-dir/m.prom", "does not exist"), (".", "is a directory")],
)
def test_unwritable_metrics_path_is_exit_2_before_anything_runs(
    tmp_path: Path, target: str, reason: str
) -> None:
    inbox = tmp_path / "i.yaml"
    inbox.write_text("{}")  # would be a bad-input error if it were read
    result = runner.invoke(app, ["check", str(inbox), "--metrics", str(tmp_path / target)])
    assert result.exit_code == 2
    assert "cannot write the metrics file" in result.stderr
    assert reason in result.stderr
    assert "inbox" not in result.stderr.replace(str(inbox), "")  # the file was never read
    assert result.stdout == ""


def test_bad_input_replaces_old_metrics_with_a_failed_run(tmp_path: Path) -> None:
    """An old file must not go on saying the last run passed once the input breaks."""
    out = tmp_path / "m.prom"
    write_metrics(out, Report(command="check", inboxes=[]), finished=1.0)
    assert _value(_samples(out.read_text()), "provision_last_run_success", command="check") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: X\nemail: nope\nsmtp: {{password: {CANARY}}}\n")
    result = runner.invoke(app, ["check", str(bad), "--metrics", str(out)])
    assert result.exit_code == 2
    text = out.read_text()
    assert CANARY not in text
    samples = _samples(text)
    assert _value(samples, "provision_last_run_success", command="check") == 0
    assert _value(samples, "provision_last_run_exit_code", command="check") == 2
    assert _value(samples, "provision_inboxes", command="check") == 0


def test_write_is_a_rename_from_the_same_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[str, str]] = []
    real = os.rename

    def spy(src: str, dst: str) -> None:
        renames.append((src, dst))
        real(src, dst)

    monkeypatch.setattr(os, "rename", spy)
    out = tmp_path / "m.prom"
    write_metrics(out, Report(command="check"))
    ((src, dst),) = renames
    assert Path(dst) == out
    assert Path(src).parent == out.parent
    assert not src.endswith(".prom")  # the textfile collector never reads the temp file


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """One thread rewrites the file between a small and a large report while another
    reads it: every read is one whole version."""
    out = tmp_path / "m.prom"
    many = [
        _result(f"Inbox {n}", f"i{n}@example.com", smtp=Status.PASSED, imap=Status.PASSED)
        for n in range(300)
    ]
    reports = [Report(command="check"), Report(command="check", inboxes=many)]
    versions = {render_metrics(r, finished=5.0) for r in reports}
    assert len(max(versions, key=len)) > 100_000  # big enough to be written in pieces
    write_metrics(out, reports[0], finished=5.0)
    done = threading.Event()
    reads: list[str] = []

    def read() -> None:
        while not done.is_set():
            reads.append(out.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(60):
            write_metrics(out, reports[n % 2], finished=5.0)
    finally:
        done.set()
        reader.join(timeout=30)
    assert reads
    assert {len(r) for r in reads} <= {len(v) for v in versions}
    assert set(reads) <= versions
    assert sorted(os.listdir(tmp_path)) == ["m.prom"]


#: Runs the CLI with a file-size limit, so that writing the metrics file really fails.
_LIMITED = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))
sys.argv = ["provision", *sys.argv[1:]]
runpy.run_module("provision", run_name="__main__", alter_sys=True)
"""


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    inbox = {
        "name": "Closed",
        "email": "closed@example.com",
        "smtp": {"server": "127.0.0.1", "port": 9, "username": "u", "password": CANARY},
        "imap": {"server": "127.0.0.1", "port": 9, "username": "u", "password": CANARY},
    }
    for proto in ("smtp", "imap"):
        inbox[proto]["secure"] = False  # type: ignore[index]
    source = tmp_path / "inbox.json"
    source.write_text(json.dumps(inbox))
    out = tmp_path / "out" / "m.prom"
    out.parent.mkdir()
    out.write_text("# the last good file\n")
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED, "check", str(source), "--metrics", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 11, done.stderr  # the run's own code (port closed)
    assert "cannot write the metrics file: File too large" in done.stderr
    assert out.read_text() == "# the last good file\n"
    assert os.listdir(out.parent) == ["m.prom"]  # the temp file was removed
    assert CANARY not in done.stdout + done.stderr


def test_ci_outputs_report_a_metrics_file_gone_after_the_check(tmp_path: Path) -> None:
    target = tmp_path / "gone" / "m.prom"
    target.parent.mkdir()
    ci = CiOutputs.from_environ("check", metrics=target, environ={})
    target.parent.rmdir()
    error = ci.finish(Report(command="check"))
    assert error is not None
    assert "cannot write the metrics file" in error
