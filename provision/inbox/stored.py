"""Inboxes as Rocket.Chat stores them (``email-inbox.list``) -> the inbox file's shape, and
-> validated ``Inbox`` objects by the same rules as a file.

``export`` writes the shape without passwords; ``audit`` loads it with them, so a stored
inbox is probed exactly as the same inbox read from a file. Passwords stay in memory:
they become ``Secret`` objects and no problem message shows them.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from typing import Any

from provision.errors import ConfigError
from provision.inbox.fields import FIELDS, Field
from provision.models import Inbox, Source

__all__ = ["escape", "file_mapping", "stored_inbox"]


def escape(value: Any) -> Any:
    """Keep a stored text literal: the loader reads ``${`` as a reference, ``$${`` as ``${``."""
    return value.replace("${", "$${") if isinstance(value, str) else value


def file_mapping(doc: Mapping[str, Any], *, passwords: bool) -> dict[str, Any]:
    """The stored inbox in the file's words: the keys of the field table, texts escaped.

    Declarative, so empty optional texts (``description``, ``senderInfo``,
    ``department``) are left out; keys Rocket.Chat adds (``_id``, dates) or stores
    beside the table's are dropped.

    Args:
        doc: the inbox as ``email-inbox.list`` or ``GET email-inbox/:_id`` returns it.
        passwords: keep the stored passwords; without, each password's place holds
            ``None`` (``export`` puts a ``${VAR}`` there).
    """
    return _mapping(doc, FIELDS, passwords)


def _mapping(doc: Mapping[str, Any], fields: tuple[Field, ...], passwords: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in fields:
        if spec.fields:
            section = doc.get(spec.key)
            if isinstance(section, Mapping):
                out[spec.key] = _mapping(section, spec.fields, passwords)
        elif spec.secret:
            if not passwords:
                out[spec.key] = None
            elif spec.key in doc:
                out[spec.key] = escape(doc[spec.key])
        elif spec.nullable:
            if doc.get(spec.key) not in (None, ""):
                out[spec.key] = escape(doc[spec.key])
        elif spec.key in doc:
            out[spec.key] = escape(doc[spec.key])
    return out


def stored_inbox(doc: Mapping[str, Any], *, origin: str, index: int = 0) -> Inbox:
    """A stored inbox as an :class:`Inbox`, checked by the inbox file's rules.

    Args:
        doc: the stored document, passwords included.
        origin: shown as the inbox's file (``<rocketchat>``).
        index: its place in the server's list.

    Raises:
        ConfigError: what Rocket.Chat stored breaks a rule (a port stored as text,
            a missing password); problems name the field, never a password.
    """
    from provision.inbox.load import load_inboxes

    text = json.dumps(file_mapping(doc, passwords=True))
    try:
        (inbox,) = load_inboxes(["-"], environ={}, stdin=io.StringIO(text)).inboxes
    except ConfigError as exc:
        problems = [dataclasses.replace(p, file=origin, line=None) for p in exc.problems]
        raise ConfigError(problems) from None
    return dataclasses.replace(inbox, source=Source(file=origin, index=index))
