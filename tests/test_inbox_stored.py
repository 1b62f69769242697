"""Stored inboxes (as ``email-inbox.list`` returns them) -> validated ``Inbox``es."""

from __future__ import annotations

from typing import Any

import pytest

from provision.errors import ConfigError
from provision.inbox.stored import file_mapping, stored_inbox

CANARY = "St0red-${HOME}-canary-51ab"


def _doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": "abc123",
        "active": False,
        "name": "Support",
        "email": "support@example.com",
        "description": "",
        "senderInfo": None,
        "smtp": {
            "server": "smtp.example.com",
            "port": 587,
            "username": "support@example.com",
            "password": CANARY,
            "secure": False,
            "extra": "stored verbatim",
        },
        "imap": {
            "server": "imap.example.com",
            "port": 993,
            "username": "support@example.com",
            "password": CANARY,
            "secure": True,
            "maxRetries": 3,
        },
        "_createdAt": "2026-11-01T10:00:00.000Z",
        "_updatedAt": "2026-11-02T10:00:00.000Z",
        "_createdBy": {"_id": "u1", "username": "admin"},
    }
    doc.update(over)
    return doc


def test_a_stored_inbox_loads_with_its_passwords_literal() -> None:
    inbox = stored_inbox(_doc(), origin="<rocketchat>", index=4)
    assert inbox.smtp.password.reveal() == CANARY  # "${HOME}" is not looked up
    assert inbox.imap.password.reveal() == CANARY
    assert inbox.active is False
    assert inbox.imap.max_retries == 3
    assert inbox.description is None
    assert (inbox.source.file, inbox.source.index) == ("<rocketchat>", 4)


def test_the_file_shape_drops_what_rocketchat_adds() -> None:
    shape = file_mapping(_doc(), passwords=False)
    assert list(shape) == ["name", "email", "active", "smtp", "imap"]
    assert "extra" not in shape["smtp"]
    assert shape["smtp"]["password"] is None


def test_a_stored_value_that_breaks_a_rule_is_a_problem_without_the_password() -> None:
    doc = _doc()
    doc["smtp"] = {**doc["smtp"], "port": "587"}
    del doc["imap"]["password"]
    with pytest.raises(ConfigError) as caught:
        stored_inbox(doc, origin="<rocketchat>")
    fields = sorted(str(p.field) for p in caught.value.problems)
    assert fields == ["imap.password", "smtp.port"]
    text = " ".join(str(p) for p in caught.value.problems)
    assert CANARY not in text
    assert all(p.file == "<rocketchat>" for p in caught.value.problems)
