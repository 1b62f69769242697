"""The report as JSON (``schema_version`` 1, documented in the README)."""

from __future__ import annotations

import json

from provision.results import Report

__all__ = ["render_json"]


def render_json(report: Report) -> str:
    """The report as JSON (``schema_version`` 1, documented in the README)."""
    return json.dumps(report.to_json(), indent=2, sort_keys=False)
