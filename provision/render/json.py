"""The report, or the input problems that stopped a run, as JSON (``schema_version`` 1)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from provision.errors import ConfigProblem
from provision.results import SCHEMA_VERSION, ExitCode, Report

__all__ = ["render_json", "render_problems_json"]


def render_json(report: Report) -> str:
    """The report as JSON (``schema_version`` 1, documented in the README)."""
    return json.dumps(report.to_json(), indent=2, sort_keys=False)


def render_problems_json(
    problems: Sequence[ConfigProblem], *, exit_code: ExitCode = ExitCode.USAGE
) -> str:
    """A run stopped by bad input (exit 2), or another error before any inbox: every
    problem, no inboxes."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "ok": False,
        "exit_code": int(exit_code),
        "errors": [
            {
                "file": p.file,
                "line": p.line,
                "inbox": p.inbox,
                "field": p.field,
                "message": p.message,
            }
            for p in problems
        ],
        "inboxes": [],
    }
    return json.dumps(doc, indent=2)
