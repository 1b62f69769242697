"""The JSON Schema (draft 2020-12) of an inbox file, generated from the field table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from provision.inbox.fields import FIELDS, Field, Kind

_JSON_TYPES = {
    Kind.STRING: "string",
    Kind.INTEGER: "integer",
    Kind.BOOLEAN: "boolean",
    Kind.MAPPING: "object",
}


def inbox_file_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an inbox file, built from the loader's own rules.

    It accepts one inbox or ``{"inboxes": [...]}``, with the keys, types, required
    fields and ranges that :func:`~provision.inbox.load_inboxes` enforces. A few rules
    stay with the loader: values using ``${...}`` are checked after interpolation, the
    domain of an address is checked in detail, and addresses must be unique across inboxes.

    Returns:
        A new dict each call, ready for ``json.dumps``.
    """
    inbox = {"type": "object", "description": "One email inbox", **_object_schema(FIELDS)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "provision inbox file",
        "description": (
            "Rocket.Chat omnichannel email inboxes, in the words of POST /api/v1/email-inbox: "
            "one inbox, or a list of them under 'inboxes'. String values may use ${VAR} "
            "(environment), ${file:PATH} (a file's content) and $${ (a literal ${)."
        ),
        "oneOf": [
            {"$ref": "#/$defs/inbox"},
            {
                "type": "object",
                "properties": {
                    "inboxes": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/inbox"}}
                },
                "required": ["inboxes"],
                "additionalProperties": False,
            },
        ],
        "$defs": {"inbox": inbox},
    }


def _field_schema(spec: Field) -> dict[str, Any]:
    kind = _JSON_TYPES[spec.kind]
    out: dict[str, Any] = {"type": [kind, "null"] if spec.nullable else kind}
    if spec.doc:
        out["description"] = spec.doc
    out.update(spec.schema)
    if spec.default is not None:
        out["default"] = spec.default
    if spec.fields:
        out.update(_object_schema(spec.fields))
    return out


def _object_schema(fields: Sequence[Field]) -> dict[str, Any]:
    return {
        "properties": {spec.key: _field_schema(spec) for spec in fields},
        "required": [spec.key for spec in fields if spec.required],
        "additionalProperties": False,
    }
