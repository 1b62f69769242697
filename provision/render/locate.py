"""Where a result's field is in the input (file and line) and which stage shows an input warning.

Shared by the JUnit, annotation and step-summary renderers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from provision.results import Finding, InboxResult, Stage, StageResult

if TYPE_CHECKING:
    from provision.models import Inbox, Source

__all__ = ["Lines", "input_findings", "line_of", "sources", "where"]

Lines = Mapping[str, "Source"]


def sources(inboxes: Sequence[Inbox]) -> dict[str, Source]:
    """Source of each inbox by address (addresses are unique in a run)."""
    return {inbox.email: inbox.source for inbox in inboxes}


def line_of(result: InboxResult, sources: Lines, field_path: str | None) -> int | None:
    """Line of ``field_path`` in ``result``'s inbox; the inbox's own line without one."""
    source = sources.get(result.email)
    if source is None:
        return result.line
    return source.line_of(field_path) if field_path else source.line


def _stage_of_field(field_path: str | None) -> Stage:
    """The probe stage an input warning belongs to (``imap.maxRetries`` -> imap)."""
    head = (field_path or "").partition(".")[0]
    return Stage.IMAP if head == Stage.IMAP.value else Stage.SMTP


def input_findings(result: InboxResult, stage: StageResult) -> list[Finding]:
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


def where(file: str | None, line: int | None) -> str:
    if not file:
        return ""
    return f"{file}:{line}" if line is not None else file
