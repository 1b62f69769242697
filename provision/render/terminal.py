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


def _safe(value: Any) -> Any:
    if isinstance(value, Enum):
        return value
    if isinstance(value, str):
        return safe_text(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            spec.name: _safe(getattr(value, spec.name))
            for spec in dataclasses.fields(value)
            if spec.init
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {_safe(key): _safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_safe(item) for item in value]
    if type(value) is tuple:
        return tuple(_safe(item) for item in value)
    return value
