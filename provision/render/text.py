"""The report as text for a person: one block per inbox, a summary line, loosened checks."""

from __future__ import annotations

from typing import Any

from provision.render.terminal import safe_data
from provision.results import Action, Finding, InboxResult, Report, Stage, StageResult, Status

__all__ = ["render_text", "stopped_note"]

_MARK = {
    Status.PASSED: "ok",
    Status.WARNING: "warn",
    Status.FAILED: "FAIL",
    Status.SKIPPED: "skip",
}
_COLOR = {
    Status.PASSED: "\x1b[32m",
    Status.WARNING: "\x1b[33m",
    Status.FAILED: "\x1b[31m",
    Status.SKIPPED: "\x1b[2m",
}
_RESET = "\x1b[0m"


def render_text(report: Report, *, color: bool = False, quiet: bool = False) -> str:
    """The report for a person: one block per inbox, failures first in each block;
    ``quiet`` leaves out the inboxes that simply passed (the summary still counts them),
    except in a stopped run, where every inbox's state is news.

    No control character of the report's data reaches the text (names, server replies);
    the only escape sequences are the colours, added here after the data was cleaned.
    """
    report = safe_data(report)

    def paint(status: Status, text: str) -> str:
        return f"{_COLOR[status]}{text}{_RESET}" if color else text

    lines: list[str] = []
    for inbox in report.inboxes:
        # A stopped run shows every inbox: what was written matters as much as what failed.
        if quiet and not report.stopped_by and inbox.status(strict=report.strict) is Status.PASSED:
            continue
        lines.extend(_inbox_lines(inbox, report.strict, paint))
        lines.append("")
    server = report.settings.get("server")
    if server:
        verb = "would write to" if report.settings.get("dry_run") else "Rocket.Chat"
        lines.append(f"{verb}: {server}" + _server_note(report.settings))
    lines.append(_summary(report))
    if report.stopped_by:
        lines.append(f"stopped: {stopped_note(report)}")
    loosened = _loosened(report.settings)
    if loosened:
        lines.append(f"note: {loosened}")
    return "\n".join(lines)


def _inbox_lines(inbox: InboxResult, strict: bool, paint: Any) -> list[str]:
    status = inbox.status(strict=strict)
    where = f"  ({inbox.file}:{inbox.line})" if inbox.file and inbox.line else ""
    lines = [f"{paint(status, f'[{_MARK[status]}]')} {inbox.name} <{inbox.email}>{where}"]
    for finding in inbox.warnings:
        lines.extend(_finding_lines(finding, "input", paint))
    width = max([6, *(len(s.stage.value) for s in inbox.stages)])  # audit's "rocketchat"
    for stage in inbox.stages:
        lines.extend(_stage_lines(stage, paint, width))
    if inbox.action:
        ident = inbox.inbox_id
        lines.append(f"    => {inbox.action}" + (f" (id {ident})" if ident else ""))
    return lines


def _stage_lines(stage: StageResult, paint: Any, width: int = 6) -> list[str]:
    summary = _stage_summary(stage)
    head = f"    {stage.stage.value:<{width}} {paint(stage.status, f'{stage.status.value:<8}')}"
    head += f" {stage.elapsed_ms:7.0f} ms  {summary}".rstrip()
    lines = [head]
    if stage.status is Status.FAILED:
        label = stage.failure.value if stage.failure else "failed"
        field = f" [{stage.field}]" if stage.field else ""
        lines.append(f"           {label}{field}: {stage.message or ''}".rstrip())
        if stage.hint:
            lines.append(f"           hint: {stage.hint}")
        if stage.steps:  # Rocket.Chat's stages (submit, drift...) have none
            lines.append(f"           steps: {_steps(stage)}")
    for finding in stage.warnings:
        lines.extend(_finding_lines(finding, stage.stage.value, paint))
    # Facts a probe spells out for people (what Rocket.Chat will import, ...).
    notes = stage.facts.get("notes")
    for note in notes if isinstance(notes, list) else ():
        lines.append(f"           note: {note}")
    return lines


def _finding_lines(finding: Finding, where: str, paint: Any) -> list[str]:
    field = f" [{finding.field}]" if finding.field else ""
    lines = [
        f"           {paint(Status.WARNING, 'warning')} {finding.code}{field}: {finding.message}"
    ]
    if finding.hint:
        lines.append(f"           hint: {finding.hint}")
    return lines


def _stage_summary(stage: StageResult) -> str:
    facts = stage.facts
    parts: list[str] = []
    if stage.stage is Stage.PRUNE:
        # What is (or would be) deleted, named as the server stores it.
        department = facts.get("department")
        parts.append(f"{facts.get('name')!s} <{facts.get('address')!s}>")
        if department:
            parts.append(f"department {department!s}")
        if stage.message and stage.status is not Status.FAILED:
            parts.append(stage.message)
        return " | ".join(parts)
    if isinstance(facts.get("plan"), str):
        parts.append(facts["plan"])
    if isinstance(facts.get("address"), str):
        parts.append(facts["address"])
    tls = facts.get("tls")
    if isinstance(tls, dict) and tls.get("version"):
        parts.append(str(tls["version"]))
    if isinstance(facts.get("auth_mechanism"), str):
        parts.append(f"AUTH {facts['auth_mechanism']}")
    if not parts and stage.message and stage.status is not Status.FAILED:
        parts.append(stage.message)
    return " | ".join(parts)


def _steps(stage: StageResult) -> str:
    out = []
    for step in stage.steps:
        mark = {"passed": "", "failed": " x", "skipped": " -", "warning": " !"}[step.status.value]
        where = f"@{step.address}" if step.address else ""
        out.append(f"{step.step.value}{where} {step.elapsed_ms:.0f}ms{mark}")
    return ", ".join(out) or "none"


def _summary(report: Report) -> str:
    counts: dict[Status, int] = {}
    for inbox in report.inboxes:
        status = inbox.status(strict=report.strict)
        counts[status] = counts.get(status, 0) + 1
    n = len(report.inboxes)
    parts = [f"{counts[s]} {s.value}" for s in Status if counts.get(s)]
    noun = "inbox" if n == 1 else "inboxes"
    detail = ", ".join(parts) if parts else "nothing to do"
    actions: dict[str, int] = {}
    for inbox in report.inboxes:
        if inbox.action:
            actions[inbox.action] = actions.get(inbox.action, 0) + 1
    if actions:
        detail += " (" + ", ".join(f"{n} {a}" for a, n in actions.items()) + ")"
    return (
        f"{report.command}: {n} {noun}, {detail} in {report.elapsed_ms / 1000:.2f} s "
        f"(exit {int(report.exit_code)})"
    )


def stopped_note(report: Report) -> str:
    """Why a stopped run's report is partial, and what to do (text, JUnit, GitHub)."""
    counts: dict[str, int] = {}
    for inbox in report.inboxes:
        if inbox.action in (Action.NOT_STARTED, Action.UNKNOWN):
            counts[inbox.action] = counts.get(inbox.action, 0) + 1
    note = f"{report.stopped_by} ended the run early; each inbox shows what was done"
    if counts.get(Action.NOT_STARTED):
        note += f"; {counts[Action.NOT_STARTED]} not started (nothing sent)"
    if counts.get(Action.UNKNOWN):
        note += f"; {counts[Action.UNKNOWN]} unknown (a write in flight got no answer)"
    if report.command == "set":
        note += "; rerun the same command to finish: it converges, without duplicates"
    else:
        note += "; rerun to probe the rest"
    return note


def _server_note(settings: dict[str, Any]) -> str:
    notes = []
    if str(settings.get("server", "")).startswith("http://"):
        notes.append("plain HTTP: credentials and passwords travel unencrypted")
    if settings.get("rocketchat_version"):
        notes.insert(0, f"version {settings['rocketchat_version']}")
    return f" ({'; '.join(notes)})" if notes else ""


def _loosened(settings: dict[str, Any]) -> str:
    notes = []
    if settings.get("smtp_verify") is False:
        notes.append("SMTP certificate verification is OFF (--smtp-no-verify)")
    if settings.get("allow_http"):
        notes.append("plain HTTP to Rocket.Chat allowed (--allow-http)")
    return "; ".join(notes)
