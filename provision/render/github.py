"""GitHub Actions output: ``::error``/``::warning`` workflow commands and the step summary.

Annotations name the file and line of the offending field; they go to standard error
(the runner reads both streams). The summary is a Markdown table for
``$GITHUB_STEP_SUMMARY``. Text is the report's own (already scrubbed of secrets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from provision.errors import ConfigProblem
from provision.render import locate
from provision.render.terminal import safe_text
from provision.results import ExitCode, InboxResult, Report, Stage, Status

if TYPE_CHECKING:
    from provision.models import Inbox

__all__ = [
    "ANNOTATION_LIMIT",
    "Annotation",
    "escape_data",
    "escape_property",
    "problem_annotations",
    "render_annotations",
    "render_problems_summary",
    "render_summary",
    "report_annotations",
]

#: GitHub shows at most 10 error and 10 warning annotations per step; more are dropped.
ANNOTATION_LIMIT = 10
#: Above this many inboxes the step summary lists only those that did not pass.
SUMMARY_ALL_ROWS = 100

Level = Literal["error", "warning", "notice"]
_PROBES = (Stage.SMTP, Stage.IMAP)
_ICON = {
    Status.PASSED: "✅ passed",
    Status.WARNING: "⚠️ warning",
    Status.FAILED: "❌ failed",
    Status.SKIPPED: "⏭️ skipped",
}
# What Markdown would read as markup inside a table cell.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")


def escape_data(text: str) -> str:
    """Escape a workflow command's message (actions/toolkit ``escapeData``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value (actions/toolkit ``escapeProperty``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True, slots=True)
class Annotation:
    """One GitHub annotation: ``level`` is ``error``, ``warning`` or ``notice``."""

    level: Level
    message: str
    title: str | None = None
    file: str | None = None
    line: int | None = None

    def command(self) -> str:
        """The workflow command line (``::error file=F,line=L,title=T::message``)."""
        # The runner's log shows escape sequences as a terminal would.
        props = []
        if self.file:
            props.append(f"file={escape_property(safe_text(self.file))}")
            if self.line is not None:
                props.append(f"line={self.line}")
        if self.title:
            props.append(f"title={escape_property(safe_text(self.title))}")
        head = f"::{self.level}"
        if props:
            head += " " + ",".join(props)
        return f"{head}::{escape_data(safe_text(self.message))}"


def _annotation_file(file: str | None, workspace: str | None, cwd: str | None) -> str | None:
    """``file`` as GitHub wants it: relative to the workspace; ``None`` for stdin."""
    if not file or file.startswith("<"):
        return None
    if not workspace:
        return file
    absolute = os.path.normpath(os.path.join(cwd or os.getcwd(), file))
    base = os.path.normpath(workspace)
    if absolute == base or absolute.startswith(base.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, base)
    return file


def report_annotations(
    report: Report,
    inboxes: Sequence[Inbox] = (),
    *,
    workspace: str | None = None,
    cwd: str | None = None,
) -> list[Annotation]:
    """Every annotation of a report: an error per failed stage, a warning per finding.

    Under ``--strict`` warnings are errors (they fail the run). Skipped stages give none.
    """
    sources = locate.sources(inboxes)
    warn_level: Level = "error" if report.strict else "warning"
    out: list[Annotation] = []
    if report.stopped_by:
        from provision.render.text import stopped_note

        title = f"provision {report.command}: stopped by {report.stopped_by}"
        out.append(Annotation("error", stopped_note(report), title=title))
    for result in report.inboxes:
        file = _annotation_file(result.file, workspace, cwd)
        for stage in result.stages:
            if stage.status is Status.FAILED:
                label = stage.failure.value if stage.failure else "failed"
                text = stage.message or label
                if stage.hint:
                    text += f"\nhint: {stage.hint}"
                if stage.field:
                    text += f"\nfield: {stage.field}"
                out.append(
                    Annotation(
                        "error",
                        text,
                        title=f"{result.name}: {stage.stage.value} {label}",
                        file=file,
                        line=locate.line_of(result, sources, stage.field),
                    )
                )
            for finding in [*locate.input_findings(result, stage), *stage.warnings]:
                text = finding.message + (f"\nhint: {finding.hint}" if finding.hint else "")
                if finding.field:
                    text += f"\nfield: {finding.field}"
                out.append(
                    Annotation(
                        warn_level,
                        text,
                        title=f"{result.name}: {stage.stage.value} {finding.code}",
                        file=file,
                        line=locate.line_of(result, sources, finding.field),
                    )
                )
    return out


def problem_annotations(
    problems: Sequence[ConfigProblem],
    *,
    workspace: str | None = None,
    cwd: str | None = None,
    what: str = "invalid input",
) -> list[Annotation]:
    """An error annotation per input problem (the run stopped before any probe); ``what``
    names the kind of stop (``Rocket.Chat could not be read``)."""
    out = []
    for problem in problems:
        title = f"provision: {what}"
        if problem.inbox:
            title += f" (inbox {problem.inbox})"
        message = f"{problem.field}: {problem.message}" if problem.field else problem.message
        out.append(
            Annotation(
                "error",
                message,
                title=title,
                file=_annotation_file(problem.file, workspace, cwd),
                line=problem.line,
            )
        )
    return out


def render_annotations(
    annotations: Sequence[Annotation], *, limit: int | None = ANNOTATION_LIMIT
) -> str:
    """Workflow command lines for ``annotations``, at most ``limit`` errors and ``limit``
    warnings (GitHub drops the rest), then a notice counting what was left out."""
    shown: list[str] = []
    left: dict[str, int] = {}
    used: dict[str, int] = {}
    for annotation in annotations:
        if limit is not None and used.get(annotation.level, 0) >= limit:
            left[annotation.level] = left.get(annotation.level, 0) + 1
            continue
        used[annotation.level] = used.get(annotation.level, 0) + 1
        shown.append(annotation.command())
    if left:
        counted = " and ".join(f"{n} more {level}s" for level, n in left.items())
        shown.append(
            Annotation(
                "notice",
                f"{counted} not annotated (GitHub shows {limit} of each per step): "
                "see the job summary or the JUnit report",
                title="provision",
            ).command()
        )
    return "".join(line + "\n" for line in shown)


# --- Markdown step summary -----------------------------------------------------------------


def _md(text: str) -> str:
    """``text`` safe inside a Markdown table cell (no markup, no HTML, no line breaks)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return text.replace("\r", "").replace("\n", "<br>")


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _problem_cell(result: InboxResult, sources: locate.Lines, strict: bool) -> str:
    parts: list[str] = []
    for stage in result.stages:
        if stage.status is Status.FAILED:
            label = stage.failure.value if stage.failure else "failed"
            head = f"**{stage.stage.value}** {_code(label)}"
            if stage.field:
                where = locate.where(result.file, locate.line_of(result, sources, stage.field))
                head += f" {_code(stage.field)}" + (f" at {_code(where)}" if where else "")
            text = f"{head}: {_md(stage.message or '')}"
            if stage.hint:
                text += f"<br>hint: {_md(stage.hint)}"
            parts.append(text)
    for stage in result.stages:
        for finding in [*locate.input_findings(result, stage), *stage.warnings]:
            mark = "❌" if strict else "⚠️"
            head = f"{mark} {_code(finding.code)}"
            if finding.field:
                head += f" {_code(finding.field)}"
            parts.append(f"{head}: {_md(finding.message)}")
    return "<br>".join(parts)


def render_summary(report: Report, inboxes: Sequence[Inbox] = ()) -> str:
    """A Markdown summary for ``$GITHUB_STEP_SUMMARY``: a heading and a table of inboxes.

    Columns: inbox, smtp, imap (and submit, verify, action for ``set``), problems (class,
    field with file and line, message, hint; warnings). Above ``SUMMARY_ALL_ROWS``
    inboxes only those that did not pass are listed.
    """
    sources = locate.sources(inboxes)
    stages = list(_PROBES)
    for result in report.inboxes:
        for ran in result.stages:
            if ran.stage not in stages:
                stages.append(ran.stage)
    with_action = any(r.action is not None for r in report.inboxes)
    counts: dict[Status, int] = {}
    for result in report.inboxes:
        status = result.status(strict=report.strict)
        counts[status] = counts.get(status, 0) + 1
    n = len(report.inboxes)
    detail = ", ".join(f"{counts[s]} {s.value}" for s in Status if counts.get(s)) or "none"
    mark = "✅" if report.ok else "❌"
    lines = [
        f"### {mark} provision {report.command}: {n} {'inbox' if n == 1 else 'inboxes'}, "
        f"{detail} (exit {int(report.exit_code)}, {report.elapsed_ms / 1000:.1f} s)",
        "",
    ]
    notes = _notes(report)
    if notes:
        lines += [f"> {_md(note)}" for note in notes] + [""]
    if not report.inboxes:
        return "\n".join(lines) + "\n"
    header = ["Inbox", *[s.value.upper() if s in _PROBES else s.value for s in stages]]
    if with_action:
        header.append("action")
    header.append("Problems")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    listed = report.inboxes
    if n > SUMMARY_ALL_ROWS:
        listed = [r for r in report.inboxes if r.status(strict=report.strict) is not Status.PASSED]
    for result in listed:
        by_stage = {s.stage: s for s in result.stages}
        cells = [f"{_md(result.name)} &lt;{_md(result.email)}&gt;"]
        for stage in stages:
            found = by_stage.get(stage)
            cells.append(_ICON[found.status] if found else "")
        if with_action:
            cells.append(_md(str(result.action or "")))
        cells.append(_problem_cell(result, sources, report.strict))
        lines.append("| " + " | ".join(cells) + " |")
    if len(listed) < n:
        lines += ["", f"{n - len(listed)} more inboxes passed (not listed)."]
    return "\n".join(lines) + "\n"


def _notes(report: Report) -> list[str]:
    notes = []
    if report.settings.get("smtp_verify") is False:
        notes.append("SMTP certificate verification was OFF (--smtp-no-verify)")
    if report.settings.get("allow_http"):
        notes.append("plain HTTP to Rocket.Chat was allowed (--allow-http)")
    if report.settings.get("dry_run"):
        notes.append("dry run: nothing was written to Rocket.Chat")
    if report.stopped_by:
        from provision.render.text import stopped_note

        notes.append(f"stopped: {stopped_note(report)}")
    return notes


def render_problems_summary(
    command: str,
    problems: Sequence[ConfigProblem],
    *,
    what: str = "invalid input",
    exit_code: ExitCode = ExitCode.USAGE,
) -> str:
    """A Markdown summary for a run stopped by bad input (exit 2), or as ``what`` says."""
    lines = [f"### ❌ provision {command}: {what} (exit {int(exit_code)})", ""]
    lines += [f"- {_md(str(problem))}" for problem in problems]
    return "\n".join(lines) + "\n"
