"""The report as JUnit XML: one ``<testsuite>`` per command, a ``<testcase>`` per inbox and stage.

``classname`` is the inbox name, ``name`` the stage, with ``file`` and ``line``. A failed
stage has ``<failure message="CLASS" type="CLASS">`` (``<error>`` for an internal error),
a skipped one ``<skipped>``; warnings go to ``<system-out>`` (a failure under ``--strict``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from provision.errors import ConfigProblem
from provision.render import locate
from provision.results import FailureClass, Finding, InboxResult, Report, StageResult, Status

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from provision.models import Inbox

__all__ = ["INVALID_INPUT", "render_junit", "render_problems_junit"]

#: Class shown for input problems (exit 2) in JUnit and annotations.
INVALID_INPUT = "invalid-input"
# Characters XML 1.0 cannot carry at all (even as references).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (escaped visibly instead)."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _seconds(ms: float) -> str:
    return f"{max(ms, 0.0) / 1000:.3f}"


def _failure_text(result: InboxResult, stage: StageResult, sources: locate.Lines) -> str:
    label = stage.failure.value if stage.failure else "failed"
    lines = [f"{label}: {stage.message or ''}".rstrip()]
    if stage.hint:
        lines.append(f"hint: {stage.hint}")
    if stage.field:
        where = locate.where(result.file, locate.line_of(result, sources, stage.field))
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


def _finding_text(finding: Finding, result: InboxResult, sources: locate.Lines) -> str:
    field_part = ""
    if finding.field:
        where = locate.where(result.file, locate.line_of(result, sources, finding.field))
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

    sources = locate.sources(inboxes)
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
    if report.stopped_by:
        # The run did not finish: never a green suite, whatever the inboxes show.
        from provision.render.text import stopped_note

        counts["tests"] += 1
        counts["errors"] += 1
        case = ET.SubElement(suite, "testcase", classname="provision", name="stopped", time="0.000")
        label = f"stopped-by-{report.stopped_by.lower()}"
        ET.SubElement(case, "error", message=label, type="stopped").text = stopped_note(report)
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
    sources: locate.Lines,
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
    line = locate.line_of(result, sources, stage.field or stage.stage.value)
    if result.file:
        case.set("file", _xml_text(result.file))
    if line is not None:
        case.set("line", str(line))
    findings = [*locate.input_findings(result, stage), *stage.warnings]
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


def render_problems_junit(
    command: str, problems: Sequence[ConfigProblem], *, cls: str = INVALID_INPUT
) -> str:
    """JUnit XML for a run stopped by bad input (exit 2), or by another error before any
    inbox (``cls``: ``rocketchat``, exit 20): one failing testcase per problem."""
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
        node = ET.SubElement(case, "failure", message=cls, type=cls)
        node.text = _xml_text(str(problem))
    for element in (root, suite):
        element.set("tests", str(len(problems)))
        element.set("failures", str(len(problems)))
        element.set("errors", "0")
        element.set("skipped", "0")
        element.set("time", "0.000")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
