"""``provision schema``: the inbox file's JSON Schema (draft 2020-12) as text."""

from __future__ import annotations

import json

__all__ = ["schema_text"]


def schema_text() -> str:
    """The schema as ``provision schema`` prints it (two-space indent, no final newline)."""
    from provision.inbox import inbox_file_schema

    return json.dumps(inbox_file_schema(), indent=2)
