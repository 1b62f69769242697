"""The email-inbox request body (spec §1.2, issue 3 item 2) and its diff with a stored inbox.

Pure functions: no I/O. Passwords appear only in the bodies (they go on the wire),
never in a :class:`FieldChange`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from provision.inbox.fields import FIELDS, Field, field, secret_paths, server_order
from provision.models import Inbox

__all__ = [
    "FieldChange",
    "diff_inbox",
    "inbox_payload",
    "plan_body_for_create",
    "plan_body_for_update",
]

_SECRET_PATHS: Final = secret_paths()
# Rocket.Chat's order (active first), not the file's: the JSON body and the diff keep it.
_BODY: Final = server_order()
_PLAIN: Final = tuple(spec.key for spec in _BODY if not spec.nullable and not spec.fields)
_OPTIONAL_TEXTS: Final = tuple(spec.key for spec in _BODY if spec.nullable)
_SECTIONS: Final = tuple(spec.key for spec in FIELDS if spec.fields)
_MAX_RETRIES: Final = field("imap.maxRetries")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs between the stored inbox and the wanted body.

    Secret fields (passwords) carry no values: ``old`` and ``new`` are ``None``
    and the change renders as ``changed``.
    """

    path: str
    old: Any
    new: Any
    secret: bool = False

    def __str__(self) -> str:
        if self.secret:
            return f"{self.path}: changed"
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}"

    def to_json(self) -> dict[str, Any]:
        """JSON form; secrets only as ``"change": "changed"``."""
        if self.secret:
            return {"field": self.path, "change": "changed"}
        return {"field": self.path, "old": self.old, "new": self.new}

    def as_drift(self) -> str:
        """Read as drift (``old`` stored, ``new`` in the file); a secret only "differs"."""
        if self.secret:
            return f"{self.path}: differs"
        return f"{self.path}: {_show(self.old)} on the server, {_show(self.new)} in the file"

    def drift_json(self) -> dict[str, Any]:
        """JSON form of :meth:`as_drift`; secrets only as ``"change": "differs"``."""
        if self.secret:
            return {"field": self.path, "change": "differs"}
        return {"field": self.path, "server": self.old, "file": self.new}


def _show(value: Any) -> str:
    """A value as JSON would spell it, ``(none)`` for absent."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def inbox_payload(inbox: Inbox, *, department_id: str | None = None) -> dict[str, Any]:
    """The portable ``POST /api/v1/email-inbox`` body of an inbox (spec §1.2).

    Sends ``description`` and ``senderInfo`` always (empty string when unset, valid
    in every era >= 4.8), ``department`` only when there is one, ``imap.maxRetries``
    always, correct JSON types, no ``_id`` and no other key. Passwords are revealed:
    the result goes on the wire only.

    Args:
        inbox: the inbox.
        department_id: the resolved department id; ``inbox.department`` when ``None``.
    """
    body: dict[str, Any] = {}
    for spec in _BODY:
        if spec.key == "department":
            # An id, not the file's name, and sent only when there is one (spec §1.2, §4).
            department = department_id if department_id is not None else inbox.department
            if department:
                body[spec.key] = department
        elif spec.fields:
            settings = getattr(inbox, spec.attr)
            body[spec.key] = {
                sub.key: _wire(sub, getattr(settings, sub.attr)) for sub in spec.fields
            }
        else:
            body[spec.key] = _wire(spec, getattr(inbox, spec.attr))
    return body


def _wire(spec: Field, value: Any) -> Any:
    if spec.secret:
        return value.reveal()
    if spec.nullable:
        return value or ""  # E4's check() refuses null (spec §1.2)
    return value


def _with_max_retries(body: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in body.items()}
    section, _, key = _MAX_RETRIES.path.partition(".")
    imap = out.get(section)
    if isinstance(imap, dict):
        # Required since 5.1 and missing from the official docs (spec §1.2, §5).
        imap.setdefault(key, _MAX_RETRIES.default)
    return out


def plan_body_for_create(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body to create an inbox with.

    No ``_id`` (an explicit empty one is stored as the id, spec §1.2), no
    ``department`` unless one is given and never ``"All"`` (stored as a junk id on
    create, spec §4), ``imap.maxRetries`` always.
    """
    out = _with_max_retries(body)
    out.pop("_id", None)
    if out.get("department") in (None, "", "All"):
        out.pop("department", None)
    return out


def plan_body_for_update(stored: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """The body to update ``stored`` to ``body``.

    ``_id`` of the stored inbox first, ``imap.maxRetries`` always; no department
    wanted while one is stored sends ``"All"``, the only way to remove it (an
    omitted key leaves it unchanged, spec §1.2).
    """
    rest = _with_max_retries(body)
    rest.pop("_id", None)
    department = rest.pop("department", None)
    out: dict[str, Any] = {"_id": stored["_id"], **rest}
    if department and department != "All":
        out["department"] = department
    elif stored.get("department"):
        out["department"] = "All"
    return out


def _same(a: Any, b: Any) -> bool:
    """JSON equality with JavaScript types: ``true`` is not ``1``, ``587`` is ``587.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _optional_text(value: Any) -> Any:
    """Absent, null and empty mean the same for description/senderInfo/department."""
    return None if value in (None, "") else value


def diff_inbox(stored: Mapping[str, Any], wanted_body: Mapping[str, Any]) -> list[FieldChange]:
    """Fields of ``wanted_body`` that differ from the ``stored`` inbox.

    ``wanted_body`` describes the whole inbox: an absent ``description``,
    ``senderInfo`` or ``department`` means "none" (so a stored department shows up
    as a change to remove), ``department: "All"`` means none as well. Keys stored
    inside ``smtp``/``imap`` but not wanted are ignored. Passwords are compared but
    never carried in the result.

    Args:
        stored: the inbox as ``GET``/``search`` returns it (passwords in clear).
        wanted_body: a body as built by :func:`inbox_payload` or a plan function.

    Returns:
        The changes in body order; empty when nothing differs.
    """
    changes: list[FieldChange] = []
    for key in _PLAIN:
        if key in wanted_body and not _same(stored.get(key), wanted_body[key]):
            changes.append(FieldChange(key, stored.get(key), wanted_body[key]))
    for key in _OPTIONAL_TEXTS:
        old = _optional_text(stored.get(key))
        new = _optional_text(wanted_body.get(key))
        if key == "department" and new == "All":
            new = None
        if not _same(old, new):
            changes.append(FieldChange(key, old, new))
    for section in _SECTIONS:
        wanted = wanted_body.get(section)
        if not isinstance(wanted, Mapping):
            continue
        have = stored.get(section)
        have = have if isinstance(have, Mapping) else {}
        for key, new in wanted.items():
            path = f"{section}.{key}"
            old = have.get(key)
            if _same(old, new):
                continue
            if path in _SECRET_PATHS:
                changes.append(FieldChange(path, None, None, secret=True))
            else:
                changes.append(FieldChange(path, old, new))
    return changes
