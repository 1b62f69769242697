"""Request validation as each dialect does it: Meteor's ``check()`` (E4) and AJV (E5, §1.2).

Meteor's ``check()`` stores ``Match.Maybe(String)`` object keys as plain ``String``
patterns (``optionalPatterns[key] = subPattern.pattern`` in meteor
``packages/check/match.js``), so a ``null`` ``department`` is reported as ``Expected
string, got null in field department``: the double follows that source, not the
``Failed Match.OneOf ...`` example of §1.2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from provision.inbox.fields import FIELDS, Field, e5_required, server_order

__all__ = [
    "E4_INBOX",
    "E5_INBOX",
    "E5_LIST",
    "E5_SEARCH",
    "ajv",
    "e5_defaults",
    "meteor_check",
]


@dataclass(frozen=True, slots=True)
class _Maybe:
    pattern: Any


@dataclass(frozen=True, slots=True)
class _Including:
    fields: dict[str, Any]


def _e4_pattern(spec: Field) -> Any:
    if spec.fields:
        return _Including({sub.key: _e4_pattern(sub) for sub in spec.fields})
    return _Maybe(spec.kind.js_type) if spec.nullable else spec.kind.js_type


# Pattern of apps/meteor/app/api/server/v1/email-inbox.ts (E4, spec §1.2): Rocket.Chat's
# key order (active first); atoms are the JavaScript ``typeof`` names.
E4_INBOX: Final[dict[str, Any]] = {
    "_id": _Maybe("string"),
    **{spec.key: _e4_pattern(spec) for spec in server_order()},
}
# Reserved words that _prependPath quotes (meteor packages/check/match.js).
# fmt: off
_JS_KEYWORDS = frozenset({
    "do", "if", "in", "for", "let", "new", "try", "var", "case", "else", "enum", "eval",
    "false", "null", "this", "true", "void", "with", "break", "catch", "class", "const",
    "super", "throw", "while", "yield", "delete", "export", "import", "public", "return",
    "static", "switch", "typeof", "default", "extends", "finally", "package", "private",
    "continue", "debugger", "function", "arguments", "interface", "protected", "implements",
    "instanceof",
})
# fmt: on


def _typeof(value: Any) -> str:
    """JavaScript's ``typeof`` for a JSON value, with ``null`` spelled out."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def _js_keys(value: dict[str, Any]) -> list[str]:
    """Key order of ``for (key in obj)``: array-index keys first, ascending."""
    index = sorted((k for k in value if k.isdigit() and str(int(k)) == k), key=int)
    return index + [k for k in value if k not in index]


def _prepend_path(key: str, base: str) -> str:
    """``_prependPath`` of meteor ``packages/check/match.js``."""
    if re.fullmatch(r"[0-9]+", key):
        key = f"[{key}]"
    elif not re.fullmatch(r"[a-z_$][0-9a-z_$]*", key, re.IGNORECASE) or key in _JS_KEYWORDS:
        key = json.dumps([key])
    if base and not base.startswith("["):
        return f"{key}.{base}"
    return key + base


def _match(value: Any, pattern: Any) -> tuple[str, str] | None:
    """``testSubtree`` of meteor's ``check``: ``None`` or ``(message, path)``."""
    if isinstance(pattern, str):
        if _typeof(value) == pattern:
            return None
        return f"Expected {pattern}, got {_typeof(value)}", ""
    fields = pattern.fields if isinstance(pattern, _Including) else pattern
    if value is None:
        return "Expected object, got null", ""
    if not isinstance(value, dict):
        if isinstance(value, list):
            return "Expected plain object", ""
        return f"Expected object, got {_typeof(value)}", ""
    required = {k: p for k, p in fields.items() if not isinstance(p, _Maybe)}
    # Match.Maybe inside an object: the *inner* pattern is used (match.js
    # ``optionalPatterns[key] = subPattern.pattern``), so null is refused.
    optional = {k: p.pattern for k, p in fields.items() if isinstance(p, _Maybe)}
    for key in _js_keys(value):
        if key in required:
            found = _match(value[key], required.pop(key))
        elif key in optional:
            found = _match(value[key], optional[key])
        elif isinstance(pattern, _Including):
            continue
        else:
            return "Unknown key", key
        if found is not None:
            return found[0], _prepend_path(key, found[1])
    if required:
        return f"Missing key '{next(iter(required))}'", ""
    return None


def meteor_check(value: Any, pattern: Any) -> str | None:
    """Run Meteor's ``check()`` and return its ``Match error`` text, or ``None``."""
    found = _match(value, pattern)
    if found is None:
        return None
    message, path = found
    return f"Match error: {message}" + (f" in field {path}" if path else "")


# ---------------------------------------------------------------------- AJV (E5)


def _e5_schema(spec: Field) -> dict[str, Any]:
    if not spec.fields:
        return {"type": spec.kind.js_type}
    required = e5_required(spec.fields)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [sub.key for sub in required],
        # Required keys first, in their order; then the optional maxRetries.
        "properties": {
            sub.key: _e5_schema(sub)
            for sub in (*required, *(sub for sub in spec.fields if sub not in required))
        },
    }


# isEmailInbox in packages/rest-typings/src/v1/email-inbox.ts (stored revision 0a79e1ed, §1.2).
E5_INBOX: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": [spec.key for spec in e5_required()],
    "properties": {
        "_id": {"type": "string", "nullable": True},
        **{spec.key: _e5_schema(spec) for spec in FIELDS},
    },
}
E5_SEARCH: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["email"],
    "properties": {"email": {"type": "string"}},
}
E5_LIST: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": [],
    "properties": {k: {"type": "string"} for k in ("count", "offset", "sort", "query")},
}
_NUMERIC = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _ajv_coerce(value: Any, wanted: str) -> tuple[bool, Any]:
    """AJV ``coerceTypes: true`` for scalars (``packages/rest-typings/src/v1/Ajv.ts``)."""
    have = _typeof(value)
    if have == wanted:
        return True, value
    if wanted == "number":
        if have == "string" and _NUMERIC.match(value):
            number = float(value)
            return True, int(number) if number.is_integer() else number
        if have == "boolean":
            return True, int(value)
        if have == "null":
            return True, 0
    elif wanted == "string":
        if have == "number":
            return True, str(int(value)) if float(value).is_integer() else repr(value)
        if have == "boolean":
            return True, "true" if value else "false"
        if have == "null":
            return True, ""
    elif wanted == "boolean":
        if value in ("true", "false"):
            return True, value == "true"
        if have == "number" and value in (0, 1):
            return True, bool(value)
        if have == "null":
            return True, False
    return False, value


def ajv(value: Any, schema: Mapping[str, Any], *, password_min: int | None = None) -> str | None:
    """First AJV error message for ``value`` (coerced in place), or ``None``.

    AJV evaluates ``required`` before ``additionalProperties`` before ``properties``
    (keyword order of its vocabularies) and stops at the first error (§1.2 E5).
    """
    if schema["type"] == "object":
        if not isinstance(value, dict):
            return "must be object"
        for key in schema["required"]:
            if key not in value:
                return f"must have required property '{key}'"
        props: Mapping[str, Any] = schema["properties"]
        if schema.get("additionalProperties") is False and any(k not in props for k in value):
            return "must NOT have additional properties"
        for key, sub in props.items():
            if key not in value:
                continue
            if sub.get("nullable") and value[key] is None:
                continue
            if sub["type"] == "object":
                error = ajv(value[key], sub, password_min=password_min)
            else:
                ok, coerced = _ajv_coerce(value[key], sub["type"])
                if not ok:
                    return f"must be {sub['type']}"
                value[key] = coerced
                error = None
                if key == "password" and password_min is not None and len(coerced) < password_min:
                    error = f"must NOT have fewer than {password_min} characters"
            if error is not None:
                return error
    return None


def e5_defaults(body: dict[str, Any]) -> None:
    """Fill in what the E5 handler defaults (``imap.maxRetries``: 5, §1.2), in place."""
    for section in FIELDS:
        settings = body.get(section.key)
        if not isinstance(settings, dict):
            continue
        for spec in section.fields:
            if spec.e5_default is not None:
                settings.setdefault(spec.key, spec.e5_default)
