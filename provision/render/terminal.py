"""Text that is safe to write to a terminal: no control character from input or servers.

Inbox names, server replies and error texts are data from elsewhere; written raw, an
``ESC ] 0;title BEL`` retitles the window, a CSI sequence recolours or moves the
cursor, a lone ``\\r`` overwrites the line. Every text output (the report, errors,
warnings, annotations, ``-v`` logs) goes through :func:`safe_text`; the report's own
colours are added after its data went through :func:`safe_data`. JSON output keeps the
exact data (``json.dumps`` escapes control characters itself).
"""

from __future__ import annotations

import dataclasses
import re
from enum import Enum
from typing import Any, TypeVar

__all__ = ["safe_data", "safe_text"]

_T = TypeVar("_T")

# C0 but tab and newline, DEL, C1 (U+0080-U+009F: U+009B is CSI, U+009D OSC on many
# terminals), the bidirectional overrides that reorder what is shown ("Trojan Source",
# CVE-2021-42574), and lone surrogates (undecodable bytes; printing one raises).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``).

    Tab and newline stay; an escape sequence loses its ``ESC`` (or C1 introducer), so
    what is left of it is plain, harmless text that still shows something was there.
    """
    return _UNSAFE.sub(_escaped, text)


def safe_data(value: _T) -> _T:
    """A copy of ``value`` with :func:`safe_text` applied to every string inside it.

    Walks dataclasses (``Report`` and what it holds), dicts, lists and tuples; enums and
    other objects are kept as they are.
    """
    return _safe(value)  # type: ignore[no-any-return]


_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _init_fields(kind: type) -> tuple[str, ...] | None:
    """The fields ``dataclasses.replace`` takes, or None for a type that is no dataclass."""
    if kind not in _FIELDS:
        is_data = dataclasses.is_dataclass(kind)
        _FIELDS[kind] = (
            tuple(spec.name for spec in dataclasses.fields(kind) if spec.init) if is_data else None
        )
    return _FIELDS[kind]


def _safe(value: Any) -> Any:
    """``value`` itself when nothing in it needs escaping (the usual case, and cheap),
    else a copy with every string escaped."""
    if isinstance(value, Enum):
        return value
    if isinstance(value, str):
        return safe_text(value) if _UNSAFE.search(value) else value
    names = _init_fields(type(value))
    if names is not None:
        changes = {}
        for name in names:
            item = getattr(value, name)
            cleaned = _safe(item)
            if cleaned is not item:
                changes[name] = cleaned
        return dataclasses.replace(value, **changes) if changes else value
    if isinstance(value, dict):
        pairs = [(_safe(key), _safe(item), key, item) for key, item in value.items()]
        if all(k is key and v is item for k, v, key, item in pairs):
            return value
        return {k: v for k, v, _, _ in pairs}
    if isinstance(value, list | tuple):
        items = [_safe(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value
