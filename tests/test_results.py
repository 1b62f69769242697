"""Exit codes and the JSON shape of results."""

from __future__ import annotations

import json

import pytest

from provision.results import (
    SCHEMA_VERSION,
    ExitCode,
    FailureClass,
    Finding,
    InboxResult,
    Report,
    RocketChatState,
    Stage,
    StageResult,
    Status,
    Step,
    StepResult,
)


def _inbox(name: str, *stages: StageResult, warnings: list[Finding] | None = None) -> InboxResult:
    return InboxResult(
        name=name, email=f"{name}@example.com", stages=list(stages), warnings=warnings or []
    )


def _failed(stage: Stage, failure: FailureClass) -> StageResult:
    return StageResult(stage=stage).fail(failure, "boom", hint="do x", field=f"{stage.value}.port")


def _passed(stage: Stage) -> StageResult:
    return StageResult(stage=stage)


def test_every_failure_class_has_an_exit_code_group() -> None:
    for failure in FailureClass:
        assert failure.exit_code in set(ExitCode) - {ExitCode.OK, ExitCode.USAGE}


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (FailureClass.DNS_NOT_FOUND, 10),
        (FailureClass.PORT_CLOSED, 11),
        (FailureClass.CERT_EXPIRED, 12),
        (FailureClass.PLAINTEXT_ON_TLS_PORT, 13),
        (FailureClass.AUTH_FAILED, 14),
        (FailureClass.MAILBOX_READ_ONLY, 15),
        (FailureClass.THROTTLED, 16),
        (FailureClass.DNS_TEMPORARY, 16),
        (FailureClass.ROCKETCHAT, 20),
    ],
)
def test_documented_exit_codes(failure: FailureClass, code: int) -> None:
    assert int(failure.exit_code) == code


def test_first_failing_inbox_in_input_order_decides() -> None:
    report = Report(
        command="check",
        inboxes=[
            _inbox("a", _passed(Stage.SMTP), _passed(Stage.IMAP)),
            _inbox("b", _passed(Stage.SMTP), _failed(Stage.IMAP, FailureClass.MAILBOX)),
            _inbox("c", _failed(Stage.SMTP, FailureClass.DNS_NOT_FOUND), _passed(Stage.IMAP)),
        ],
    )
    assert report.exit_code is ExitCode.MAILBOX
    assert not report.ok


def test_within_an_inbox_smtp_decides_before_imap() -> None:
    inbox = _inbox(
        "a",
        _failed(Stage.SMTP, FailureClass.CERT_HOSTNAME),
        _failed(Stage.IMAP, FailureClass.AUTH_FAILED),
    )
    assert inbox.exit_code() is ExitCode.TLS


def test_first_failure_wins_within_a_stage() -> None:
    stage = _failed(Stage.SMTP, FailureClass.AUTH_FAILED)
    stage.fail(FailureClass.TIMEOUT, "later")
    assert stage.failure is FailureClass.AUTH_FAILED
    assert stage.message == "boom"


def test_warnings_pass_unless_strict() -> None:
    stage = _passed(Stage.IMAP)
    stage.warn(Finding(code="plaintext-credentials", message="clear", field="imap.secure"))
    inbox = _inbox("a", _passed(Stage.SMTP), stage)
    assert stage.status is Status.WARNING
    assert Report(command="check", inboxes=[inbox]).exit_code is ExitCode.OK
    strict = Report(command="check", inboxes=[inbox], strict=True)
    assert strict.exit_code is ExitCode.TLS
    assert strict.to_json()["inboxes"][0]["status"] == "failed"


def test_input_warning_under_strict_uses_its_own_exit_code() -> None:
    finding = Finding(code="low-max-retries", message="m", strict_exit=ExitCode.USAGE)
    inbox = _inbox("a", _passed(Stage.SMTP), _passed(Stage.IMAP), warnings=[finding])
    assert inbox.exit_code(strict=True) is ExitCode.USAGE
    assert inbox.exit_code() is ExitCode.OK


def test_json_has_the_documented_keys() -> None:
    stage = _failed(Stage.SMTP, FailureClass.AUTH_FAILED)
    stage.steps.append(StepResult(step=Step.AUTH, status=Status.FAILED, elapsed_ms=1.234))
    doc = json.loads(json.dumps(Report(command="check", inboxes=[_inbox("a", stage)]).to_json()))
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["ok"] is False
    assert doc["exit_code"] == 14
    (inbox,) = doc["inboxes"]
    assert {"name", "email", "stages"} <= inbox.keys()
    (out,) = inbox["stages"]
    assert {"stage", "status", "class", "message", "hint", "field", "elapsed_ms", "steps"} <= (
        out.keys()
    )
    assert out["class"] == "auth-failed"
    assert out["steps"] == [{"step": "auth", "status": "failed", "elapsed_ms": 1.2}]


def test_rocketchat_state_shows_only_when_set() -> None:
    plain = _inbox("a", _passed(Stage.SMTP))
    assert "rocketchat" not in plain.to_json()
    state = RocketChatState(inbox_id="x1", active=False, updated_at="2026-12-01T00:00:00.000Z")
    stored = _inbox("b", _passed(Stage.SMTP))
    stored.rocketchat = state
    assert stored.to_json()["rocketchat"] == {
        "id": "x1",
        "active": False,
        "created_at": None,
        "updated_at": "2026-12-01T00:00:00.000Z",
    }


def test_drift_yields_to_probe_failures_and_strict_warnings() -> None:
    drifted = StageResult(stage=Stage.DRIFT).fail(FailureClass.DRIFT, "smtp.port differs")
    only_drift = _inbox("a", _passed(Stage.SMTP), _passed(Stage.IMAP), drifted)
    assert only_drift.exit_code() is ExitCode.DRIFT
    failing = _inbox("b", _failed(Stage.SMTP, FailureClass.AUTH_FAILED), drifted)
    assert failing.exit_code() is ExitCode.AUTH
    warned = _passed(Stage.IMAP)
    warned.warn(Finding(code="cert-expiring", message="soon"))
    strict = _inbox("c", _passed(Stage.SMTP), warned, drifted)
    assert strict.exit_code() is ExitCode.DRIFT
    assert strict.exit_code(strict=True) is ExitCode.TLS
    # Across inboxes: a later probe failure beats an earlier drift.
    assert Report(command="audit", inboxes=[only_drift, failing]).exit_code is ExitCode.AUTH
    assert Report(command="audit", inboxes=[only_drift, _inbox("d")]).exit_code is ExitCode.DRIFT
    missing = StageResult(stage=Stage.ROCKETCHAT).fail(FailureClass.NOT_STORED, "not stored")
    assert _inbox("e", missing).exit_code() is ExitCode.DRIFT
