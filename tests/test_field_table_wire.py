"""What the field table derives for the wire is Rocket.Chat's contract (spec §1.2), in order.

The request body, the double's E4 ``check()`` pattern and E5 AJV schema, the double's
update ``$set`` order and the export file's key order are all walked from
``provision.inbox.fields``; these tests pin each against the spec's own statement, so
a change to the table that would change bytes on the wire or in a file fails here.
"""

from __future__ import annotations

from typing import Any

import yaml

from provision.commands.export import render_inbox_file
from provision.rocketchat.payload import inbox_payload
from provision.sandbox.rocketchat import store
from provision.sandbox.rocketchat.validation import (
    E4_INBOX,
    E5_INBOX,
    _Including,
    _Maybe,
    e5_defaults,
)
from tests.test_rocketchat_client import IMAP_PW, SMTP_PW, make_inbox
from tests.test_rocketchat_double import inbox_body


def _shape(value: Any) -> Any:
    """A value with every dict turned into its item list, so that order compares too."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    if isinstance(value, _Maybe):
        return ("Maybe", _shape(value.pattern))
    if isinstance(value, _Including):
        return ("ObjectIncluding", _shape(value.fields))
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return value


def test_e4_pattern_is_email_inbox_ts() -> None:
    server = {
        "server": "string",
        "port": "number",
        "username": "string",
        "password": "string",
        "secure": "boolean",
    }
    expected = {
        "_id": _Maybe("string"),
        "active": "boolean",
        "name": "string",
        "email": "string",
        "description": _Maybe("string"),
        "senderInfo": _Maybe("string"),
        "department": _Maybe("string"),
        "smtp": _Including(server),
        "imap": _Including({**server, "maxRetries": "number"}),
    }
    assert _shape(E4_INBOX) == _shape(expected)


def test_e5_schema_is_rest_typings_is_email_inbox() -> None:
    server = {
        "type": "object",
        "additionalProperties": False,
        "required": ["password", "port", "secure", "server", "username"],
        "properties": {
            "password": {"type": "string"},
            "port": {"type": "number"},
            "secure": {"type": "boolean"},
            "server": {"type": "string"},
            "username": {"type": "string"},
        },
    }
    expected = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "email", "active", "smtp", "imap"],
        "properties": {
            "_id": {"type": "string", "nullable": True},
            "name": {"type": "string"},
            "email": {"type": "string"},
            "active": {"type": "boolean"},
            "description": {"type": "string"},
            "senderInfo": {"type": "string"},
            "department": {"type": "string"},
            "smtp": server,
            "imap": {
                **server,
                "properties": {**server["properties"], "maxRetries": {"type": "number"}},
            },
        },
    }
    assert _shape(E5_INBOX) == _shape(expected)


def test_e5_handler_defaults_only_max_retries() -> None:
    body: dict[str, Any] = {"smtp": {}, "imap": {"maxRetries": 3}}
    e5_defaults(body)
    assert body == {"smtp": {}, "imap": {"maxRetries": 3}}
    body = {"smtp": {}, "imap": {}, "name": "x"}
    e5_defaults(body)
    assert body == {"smtp": {}, "imap": {"maxRetries": 5}, "name": "x"}


def test_payload_is_the_portable_body_of_the_spec_in_its_order() -> None:
    body = inbox_payload(make_inbox())
    # The spec's portable body, passwords aside; compared with its key order.
    portable = inbox_body()
    portable["smtp"]["password"], portable["imap"]["password"] = SMTP_PW, IMAP_PW
    assert _shape(body) == _shape(portable)
    with_department = inbox_payload(make_inbox(department="Sales"), department_id="D1")
    assert list(with_department) == [
        "active",
        "name",
        "email",
        "description",
        "senderInfo",
        "department",
        "smtp",
        "imap",
    ]
    assert with_department["department"] == "D1"


def test_the_doubles_update_sets_new_keys_in_rocket_chats_order() -> None:
    inboxes: store.Inboxes = {"A": {"_id": "A", "smtp": {}, "imap": {}}}
    store.update(
        inboxes,
        {"_id": "A", "imap": {}, "senderInfo": "S", "email": "e@x", "name": "N", "active": True},
        "rocketchat",
    )
    assert list(inboxes["A"]) == [
        "_id",
        "smtp",
        "imap",
        "active",
        "name",
        "email",
        "senderInfo",
        "_updatedAt",
    ]


def test_export_writes_the_tables_keys_in_the_files_order_and_nothing_else() -> None:
    stored = {
        "imap": {"maxRetries": 4, "secure": True, "extra": 1, "password": "p", "port": 993},
        "smtp": {"username": "u", "server": "s", "password": "p", "port": 25, "secure": False},
        "department": "",
        "senderInfo": "S",
        "_createdAt": "2026-01-01",
        "active": False,
        "email": "a@example.com",
        "name": "A",
        "description": None,
        "_id": "X",
    }
    result = render_inbox_file([stored])
    (inbox,) = yaml.safe_load(result.text)["inboxes"]
    assert _shape(inbox) == _shape(
        {
            "name": "A",
            "email": "a@example.com",
            "active": False,
            "senderInfo": "S",
            "smtp": {
                "server": "s",
                "port": 25,
                "username": "u",
                "password": "${A_EXAMPLE_COM_SMTP_PASSWORD}",
                "secure": False,
            },
            "imap": {
                "port": 993,
                "password": "${A_EXAMPLE_COM_IMAP_PASSWORD}",
                "secure": True,
                "maxRetries": 4,
            },
        }
    )
    assert [(ref.variable, ref.field) for ref in result.passwords] == [
        ("A_EXAMPLE_COM_SMTP_PASSWORD", "smtp.password"),
        ("A_EXAMPLE_COM_IMAP_PASSWORD", "imap.password"),
    ]
