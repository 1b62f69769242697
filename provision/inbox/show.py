"""How input values and keys appear in messages: shortened, quoted, never a hidden value."""

from __future__ import annotations

import re

_SHOW_MAX = 40
_LONGEST_SHOWN_KEY = 64
# A key with a space, ":" or "=" in it is a line that lost its separator
# ("password:s3cret" in a flow mapping, "password s3cret:"): the part after it may be the
# value, a password included, so messages show only the part before it.
_KEY_CUT = r"[\s:=]"


def shorten(text: str) -> str:
    """``text`` clipped to a message's width."""
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 1] + "…"


def show(value: object) -> str:
    """A value for a message: repr for strings, shortened."""
    return repr(shorten(value)) if isinstance(value, str) else shorten(repr(value))


def shown_key(key: str) -> str:
    """``key`` as messages show it: cut before a space, ``:`` or ``=``, and clipped."""
    head = re.split(_KEY_CUT, key, maxsplit=1)[0][:_LONGEST_SHOWN_KEY]
    return key if head == key else head + "…"


def lower_first(text: str) -> str:
    """An OS or parser message as the tail of ours: "No such file" -> "no such file"."""
    return text[:1].lower() + text[1:]
