"""CI-native output of a run: JUnit XML, GitHub Actions annotations and step summary, progress.

The renderers are pure functions of a :class:`~provision.results.Report` (and, where a
line number of a field is wanted, the inboxes that were run, for their
:class:`~provision.models.Source`); they return ``str``. :class:`CiOutputs` is the glue
the command line uses: it reads the environment, checks the ``--junit`` path before any
probe runs, shows progress on a terminal and writes everything at the end.

Nothing here adds a value from the input to the output: messages, hints and fields are
the report's own (already scrubbed of secrets), plus names, addresses, files and lines.

* JUnit: one ``<testsuite>`` per command, one ``<testcase>`` per inbox and stage
  (``classname`` the inbox name, ``name`` the stage, ``file`` and ``line`` attributes);
  a failed stage has ``<failure message="CLASS" type="CLASS">`` whose text is the
  message, hint and field (``<error>`` for an internal error), a skipped stage
  ``<skipped>``, warnings go to ``<system-out>`` (a ``<failure type="warning">`` under
  ``--strict``). GitLab and the common GitHub test-report actions read this.
* GitHub Actions (``GITHUB_ACTIONS=true``): ``::error``/``::warning`` workflow commands
  naming the file and the line of the offending field, written to standard error (the
  runner parses both streams, and standard output stays the report or JSON), and a
  Markdown table appended to ``$GITHUB_STEP_SUMMARY``.
* Progress: ``[37/100] probing...`` on standard error when it is a terminal and more
  than one inbox runs; nothing otherwise.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from provision.errors import ConfigError, ConfigProblem
from provision.results import (
    ExitCode,
    FailureClass,
    Finding,
    InboxResult,
    Report,
    Stage,
    StageResult,
    Status,
)

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from provision.models import Inbox, Source

__all__ = [
    "ANNOTATION_LIMIT",
    "Annotation",
    "CiOutputs",
    "Progress",
    "check_junit_path",
    "escape_data",
    "escape_property",
    "problem_annotations",
    "render_annotations",
    "render_junit",
    "render_problems_junit",
    "render_problems_summary",
    "render_summary",
    "report_annotations",
]

#: GitHub shows at most 10 error and 10 warning annotations per step; more are dropped.
ANNOTATION_LIMIT = 10
#: Above this many inboxes the step summary lists only those that did not pass.
SUMMARY_ALL_ROWS = 100
#: Class shown for input problems (exit 2) in JUnit and annotations.
INVALID_INPUT = "invalid-input"

_PROBES = (Stage.SMTP, Stage.IMAP)
_ICON = {
    Status.PASSED: "✅ passed",
    Status.WARNING: "⚠️ warning",
    Status.FAILED: "❌ failed",
    Status.SKIPPED: "⏭️ skipped",
}
# Characters XML 1.0 cannot carry at all (even as references).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")

_Lines = Mapping[str, "Source"]


# --- where a field is ---------------------------------------------------------------


def _sources(inboxes: Sequence[Inbox]) -> dict[str, Source]:
    """Source of each inbox by address (addresses are unique in a run)."""
    return {inbox.email: inbox.source for inbox in inboxes}


def _line_of(result: InboxResult, sources: _Lines, field_path: str | None) -> int | None:
    """Line of ``field_path`` in ``result``'s inbox; the inbox's own line without one."""
    source = sources.get(result.email)
    if source is None:
        return result.line
    return source.line_of(field_path) if field_path else source.line


def _stage_of_field(field_path: str | None) -> Stage:
    """The probe stage an input warning belongs to (``imap.maxRetries`` -> imap)."""
    head = (field_path or "").partition(".")[0]
    return Stage.IMAP if head == Stage.IMAP.value else Stage.SMTP


def _input_findings(result: InboxResult, stage: StageResult) -> list[Finding]:
    """The inbox's input warnings shown with ``stage`` (by field, else the first probe)."""
    present = {s.stage for s in result.stages}
    out = []
    for finding in result.warnings:
        home = _stage_of_field(finding.field)
        if home not in present:
            home = result.stages[0].stage if result.stages else Stage.SMTP
        if home is stage.stage:
            out.append(finding)
    return out


def _where(file: str | None, line: int | None) -> str:
    if not file:
        return ""
    return f"{file}:{line}" if line is not None else file


# --- JUnit ---------------------------------------------------------------------------


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (escaped visibly instead)."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _seconds(ms: float) -> str:
    return f"{max(ms, 0.0) / 1000:.3f}"


def _failure_text(result: InboxResult, stage: StageResult, sources: _Lines) -> str:
    label = stage.failure.value if stage.failure else "failed"
    lines = [f"{label}: {stage.message or ''}".rstrip()]
    if stage.hint:
        lines.append(f"hint: {stage.hint}")
    if stage.field:
        where = _where(result.file, _line_of(result, sources, stage.field))
        lines.append(f"field: {stage.field}" + (f" ({where})" if where else ""))
    if stage.steps:
        lines.append(f"steps: {_steps(stage)}")
    return "\n".join(lines)


def _steps(stage: StageResult) -> str:
    out = []
    for step in stage.steps:
        mark = "" if step.status is Status.PASSED else f" {step.status.value}"
        at = f"@{step.address}" if step.address else ""
        out.append(f"{step.step.value}{at} {step.elapsed_ms:.0f}ms{mark}")
    return ", ".join(out)


def _finding_text(finding: Finding, result: InboxResult, sources: _Lines) -> str:
    field_part = ""
    if finding.field:
        where = _where(result.file, _line_of(result, sources, finding.field))
        field_part = f" [{finding.field}" + (f" at {where}" if where else "") + "]"
    text = f"warning {finding.code}{field_part}: {finding.message}"
    if finding.hint:
        text += f"\nhint: {finding.hint}"
    return text


def render_junit(report: Report, inboxes: Sequence[Inbox] = ()) -> str:
    """The report as JUnit XML: one testsuite for the command, a testcase per inbox and stage.

    Args:
        report: the run's report.
        inboxes: the inboxes that were run; their sources give the line of a failing
            field (the inbox's line is used without them).

    Returns:
        A complete XML document (UTF-8 declaration included).
    """
    import xml.etree.ElementTree as ET

    sources = _sources(inboxes)
    root = ET.Element("testsuites", name="provision")
    suite = ET.SubElement(root, "testsuite", name=f"provision {report.command}")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="exit_code", value=str(int(report.exit_code)))
    ET.SubElement(props, "property", name="strict", value=str(report.strict).lower())
    for key, value in report.settings.items():
        if isinstance(value, str | int | float | bool):
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            ET.SubElement(props, "property", name=key, value=_xml_text(shown))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in report.inboxes:
        for stage in result.stages:
            counts["tests"] += 1
            kind = _junit_case(suite, result, stage, report.strict, sources)
            if kind:
                counts[kind] += 1
    time_s = _seconds(report.elapsed_ms)
    for element in (root, suite):
        for key, count in counts.items():
            element.set(key, str(count))
        element.set("time", time_s)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _junit_case(
    suite: Element,
    result: InboxResult,
    stage: StageResult,
    strict: bool,
    sources: _Lines,
) -> str | None:
    """Add one testcase; return which counter it adds to (failures, errors, skipped)."""
    import xml.etree.ElementTree as et

    case = et.SubElement(
        suite,
        "testcase",
        classname=_xml_text(result.name),
        name=stage.stage.value,
        time=_seconds(stage.elapsed_ms),
    )
    line = _line_of(result, sources, stage.field or stage.stage.value)
    if result.file:
        case.set("file", _xml_text(result.file))
    if line is not None:
        case.set("line", str(line))
    findings = [*_input_findings(result, stage), *stage.warnings]
    counter: str | None = None
    out: list[str] = []
    if stage.status is Status.FAILED:
        internal = stage.failure is FailureClass.INTERNAL
        label = stage.failure.value if stage.failure else "failed"
        tag = "error" if internal else "failure"
        node = et.SubElement(case, tag, message=label, type=label)
        node.text = _xml_text(_failure_text(result, stage, sources))
        counter = "errors" if internal else "failures"
    elif stage.status is Status.SKIPPED:
        et.SubElement(case, "skipped", message=_xml_text(stage.message or "skipped"))
        counter = "skipped"
    elif strict and findings:
        first = findings[0]
        node = et.SubElement(case, "failure", message=first.code, type="warning")
        node.text = _xml_text(
            "warnings fail the run (--strict)\n"
            + "\n".join(_finding_text(f, result, sources) for f in findings)
        )
        counter = "failures"
        findings = []
    if stage.message and stage.status is not Status.FAILED:
        out.append(stage.message)
    out.extend(_finding_text(f, result, sources) for f in findings)
    if out:
        et.SubElement(case, "system-out").text = _xml_text("\n".join(out))
    return counter


def render_problems_junit(command: str, problems: Sequence[ConfigProblem]) -> str:
    """JUnit XML for a run stopped by bad input (exit 2): one failing testcase per problem."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="provision")
    suite = ET.SubElement(root, "testsuite", name=f"provision {command}")
    for problem in problems:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_xml_text(problem.inbox or problem.file or "input"),
            name=_xml_text(f"input {problem.field}" if problem.field else "input"),
            time="0.000",
        )
        if problem.file:
            case.set("file", _xml_text(problem.file))
        if problem.line is not None:
            case.set("line", str(problem.line))
        node = ET.SubElement(case, "failure", message=INVALID_INPUT, type=INVALID_INPUT)
        node.text = _xml_text(str(problem))
    for element in (root, suite):
        element.set("tests", str(len(problems)))
        element.set("failures", str(len(problems)))
        element.set("errors", "0")
        element.set("skipped", "0")
        element.set("time", "0.000")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# --- GitHub Actions annotations ---------------------------------------------------------


def escape_data(text: str) -> str:
    """Escape a workflow command's message (actions/toolkit ``escapeData``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value (actions/toolkit ``escapeProperty``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True, slots=True)
class Annotation:
    """One GitHub annotation: ``level`` is ``error``, ``warning`` or ``notice``."""

    level: str
    message: str
    title: str | None = None
    file: str | None = None
    line: int | None = None

    def command(self) -> str:
        """The workflow command line (``::error file=F,line=L,title=T::message``)."""
        props = []
        if self.file:
            props.append(f"file={escape_property(self.file)}")
            if self.line is not None:
                props.append(f"line={self.line}")
        if self.title:
            props.append(f"title={escape_property(self.title)}")
        head = f"::{self.level}"
        if props:
            head += " " + ",".join(props)
        return f"{head}::{escape_data(self.message)}"


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
    sources = _sources(inboxes)
    warn_level = "error" if report.strict else "warning"
    out: list[Annotation] = []
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
                        line=_line_of(result, sources, stage.field),
                    )
                )
            for finding in [*_input_findings(result, stage), *stage.warnings]:
                text = finding.message + (f"\nhint: {finding.hint}" if finding.hint else "")
                if finding.field:
                    text += f"\nfield: {finding.field}"
                out.append(
                    Annotation(
                        warn_level,
                        text,
                        title=f"{result.name}: {stage.stage.value} {finding.code}",
                        file=file,
                        line=_line_of(result, sources, finding.field),
                    )
                )
    return out


def problem_annotations(
    problems: Sequence[ConfigProblem], *, workspace: str | None = None, cwd: str | None = None
) -> list[Annotation]:
    """An error annotation per input problem (the run stopped before any probe)."""
    out = []
    for problem in problems:
        title = "provision: invalid input"
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


def _problem_cell(result: InboxResult, sources: _Lines, strict: bool) -> str:
    parts: list[str] = []
    for stage in result.stages:
        if stage.status is Status.FAILED:
            label = stage.failure.value if stage.failure else "failed"
            head = f"**{stage.stage.value}** {_code(label)}"
            if stage.field:
                where = _where(result.file, _line_of(result, sources, stage.field))
                head += f" {_code(stage.field)}" + (f" at {_code(where)}" if where else "")
            text = f"{head}: {_md(stage.message or '')}"
            if stage.hint:
                text += f"<br>hint: {_md(stage.hint)}"
            parts.append(text)
    for stage in result.stages:
        for finding in [*_input_findings(result, stage), *stage.warnings]:
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
    sources = _sources(inboxes)
    stages = list(_PROBES)
    for result in report.inboxes:
        for ran in result.stages:
            if ran.stage not in stages:
                stages.append(ran.stage)
    with_action = any("action" in r.extra for r in report.inboxes)
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
            cells.append(_md(str(result.extra.get("action") or "")))
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
    if report.settings.get("interrupted"):
        notes.append("interrupted: the table shows what was done before the interruption")
    return notes


def render_problems_summary(command: str, problems: Sequence[ConfigProblem]) -> str:
    """A Markdown summary for a run stopped by bad input (exit 2)."""
    lines = [f"### ❌ provision {command}: invalid input (exit {int(ExitCode.USAGE)})", ""]
    lines += [f"- {_md(str(problem))}" for problem in problems]
    return "\n".join(lines) + "\n"


# --- progress ---------------------------------------------------------------------------


class Progress:
    """``[37/100] probing... (2 failed)`` redrawn in place on a terminal.

    Call it with each finished :class:`~provision.results.InboxResult` (it is a
    ``pipeline.check(on_inbox_done=...)`` callback); :meth:`close` erases the line.
    Redraws at most every ``interval`` seconds, and always for the last inbox.
    """

    def __init__(
        self, total: int, stream: TextIO, *, after: str | None = None, interval: float = 0.1
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._stream = stream
        self._after = after
        self._interval = interval
        self._drawn = 0.0
        self._shown = False

    def start(self) -> None:
        """Show ``[0/N]`` before the first inbox finishes."""
        self._draw(force=True)

    def __call__(self, result: InboxResult) -> None:
        self.done += 1
        if result.status() is Status.FAILED:
            self.failed += 1
        self._draw(force=self.done >= self.total)

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < self._interval:
            return
        self._drawn = now
        text = f"[{self.done}/{self.total}] probing..."
        if self.failed:
            text += f" ({self.failed} failed)"
        if self.done >= self.total and self._after:
            text = f"[{self.done}/{self.total}] probed; {self._after}"
        self._write(f"\r\x1b[K{text}")
        self._shown = True

    def close(self) -> None:
        """Erase the progress line (the report follows on a clean line)."""
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = False

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken terminal: progress is optional
            self._shown = False


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


# --- the glue the command line uses ---------------------------------------------------------


def check_junit_path(path: Path) -> str | None:
    """Why a JUnit report cannot be written to ``path``, or ``None`` if it can."""
    if path.is_dir():
        return "it is a directory"
    parent = path.parent
    if not parent.is_dir():
        return f"the directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the directory {parent} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    return None


@dataclass(slots=True, kw_only=True)
class CiOutputs:
    """What a CI run writes besides the report, decided from options and environment.

    Attributes:
        command: ``check`` or ``set``.
        junit: where to write JUnit XML (``--junit``), or ``None``.
        github: running under GitHub Actions (``GITHUB_ACTIONS=true``): annotations.
        summary: the ``$GITHUB_STEP_SUMMARY`` file to append to, or ``None``.
        workspace: ``$GITHUB_WORKSPACE``; annotation paths are made relative to it.
        stream: where annotations and progress go (standard error).
        tty: show progress (``stream`` is a terminal).
    """

    command: str
    junit: Path | None = None
    github: bool = False
    summary: Path | None = None
    workspace: str | None = None
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    tty: bool = False
    inboxes: list[Inbox] = field(default_factory=list)
    progress: Progress | None = None

    @classmethod
    def from_environ(
        cls,
        command: str,
        junit: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        stream: TextIO | None = None,
    ) -> CiOutputs:
        """Read ``GITHUB_*`` from ``environ`` and check ``junit`` before anything runs.

        Raises:
            ConfigError: ``junit`` cannot be written (missing or read-only directory).
        """
        environ = os.environ if environ is None else environ
        stream = sys.stderr if stream is None else stream
        if junit is not None:
            reason = check_junit_path(junit)
            if reason:
                raise ConfigError(
                    [ConfigProblem(f"cannot write the JUnit report: {reason}", file=str(junit))]
                )
        github = environ.get("GITHUB_ACTIONS") == "true"
        summary = environ.get("GITHUB_STEP_SUMMARY") if github else None
        return cls(
            command=command,
            junit=junit,
            github=github,
            summary=Path(summary) if summary else None,
            workspace=environ.get("GITHUB_WORKSPACE") or None,
            stream=stream,
            tty=_is_tty(stream),
        )

    def started(self, inboxes: Sequence[Inbox]) -> Callable[[InboxResult], None] | None:
        """Remember the inboxes (for field lines); the progress callback, if one is shown."""
        self.inboxes = list(inboxes)
        if not self.tty or len(self.inboxes) < 2:
            return None
        after = "submitting to Rocket.Chat..." if self.command == "set" else None
        self.progress = Progress(len(self.inboxes), self.stream, after=after)
        self.progress.start()
        return self.progress

    def finish(self, report: Report) -> str | None:
        """Erase progress; write annotations, the step summary and JUnit.

        Returns:
            Why the JUnit report could not be written, or ``None``. A step summary that
            cannot be written draws a warning annotation only (nobody asked for it).
        """
        if self.progress is not None:
            self.progress.close()
        if self.github:
            annotations = report_annotations(report, self.inboxes, workspace=self.workspace)
            self._annotate(annotations)
            self._append_summary(render_summary(report, self.inboxes))
        if self.junit is not None:
            return self._write_junit(render_junit(report, self.inboxes))
        return None

    def failed_input(self, problems: Sequence[ConfigProblem]) -> str | None:
        """The run stopped on bad input: annotate, summarise and write JUnit for that."""
        if self.progress is not None:
            self.progress.close()
        if self.github:
            self._annotate(problem_annotations(problems, workspace=self.workspace))
            self._append_summary(render_problems_summary(self.command, problems))
        if self.junit is not None:
            return self._write_junit(render_problems_junit(self.command, problems))
        return None

    def _annotate(self, annotations: Sequence[Annotation]) -> None:
        text = render_annotations(annotations)
        if text:
            self.stream.write(text)
            self.stream.flush()

    def _append_summary(self, markdown: str) -> None:
        if self.summary is None:
            return
        try:
            with self.summary.open("a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            self._annotate(
                [Annotation("warning", f"cannot append to $GITHUB_STEP_SUMMARY: {reason}")]
            )

    def _write_junit(self, xml: str) -> str | None:
        assert self.junit is not None
        try:
            self.junit.write_text(xml, encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return f"{self.junit}: cannot write the JUnit report: {reason}"
        return None
