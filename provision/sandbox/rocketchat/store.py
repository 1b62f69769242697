"""Stored inboxes: insert/update semantics, the unique ``email`` index, list order (§1.2, §1.3)."""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from provision.inbox.fields import server_order
from provision.sandbox.rocketchat.auth import User
from provision.sandbox.rocketchat.wire import Abort, failure, now

__all__ = ["Inboxes", "SentTest", "insert", "new_inbox", "sort_inboxes", "update"]

#: Inbox id -> stored document (dates as datetimes).
Inboxes = dict[str, dict[str, Any]]

# Keys an update may set, in the order of its $set (a key new to the document lands
# last in it); ``department`` has its own rule ("All" unsets it).
_UPDATED = tuple(spec.key for spec in server_order() if spec.key != "department")


@dataclass(frozen=True, slots=True)
class SentTest:
    """A send-test that would have sent a mail (§1.7: fire and forget)."""

    inbox_id: str
    to: str


def new_inbox(inbox_id: Any, body: Mapping[str, Any], by: dict[str, Any] | None) -> dict[str, Any]:
    """A stored document: the body plus id, dates and creator."""
    at = now()
    return {
        "_id": inbox_id,
        **copy.deepcopy(dict(body)),
        "_createdAt": at,
        "_updatedAt": at,
        "_createdBy": by,
    }


def _duplicate(database: str, index: str, key: str, value: str) -> Abort:
    text = json.dumps(value, ensure_ascii=False)
    return failure(
        f"E11000 duplicate key error collection: {database}.rocketchat_email_inbox "
        f"index: {index} dup key: {{ {key}: {text} }}"
    )


def insert(inboxes: Inboxes, body: dict[str, Any], user: User, database: str) -> Any:
    """``insertOneEmailInbox``; returns the new id (which may be falsy, see below)."""
    # An explicit falsy _id in the body overrides the generated one (BaseRaw.insertOne
    # spread, §1.2).
    inbox_id = body.pop("_id") if "_id" in body else secrets.token_hex(12)
    if inbox_id in inboxes:
        raise _duplicate(database, "_id_", "_id", inbox_id)
    if any(doc.get("email") == body.get("email") for doc in inboxes.values()):
        raise _duplicate(database, "email_1", "email", body["email"])
    inboxes[inbox_id] = new_inbox(inbox_id, body, {"_id": user.id, "username": user.username})
    return inbox_id


def update(inboxes: Inboxes, body: dict[str, Any], database: str) -> str:
    """``updateEmailInbox``: one ``$set``; returns the id."""
    # Keys absent from the body are `undefined` and ignored by Meteor's Mongo driver (§1.2).
    inbox_id = body["_id"]
    doc = inboxes.get(inbox_id)
    if doc is None:
        raise failure("error-invalid-email-inbox")
    if "email" in body and any(
        other_id != inbox_id and other.get("email") == body["email"]
        for other_id, other in inboxes.items()
    ):
        raise _duplicate(database, "email_1", "email", body["email"])
    for key in _UPDATED:
        if key in body:
            doc[key] = body[key]
    doc["_updatedAt"] = now()
    if "department" in body:
        if body["department"] == "All":
            doc.pop("department", None)
        else:
            doc["department"] = body["department"]
    return str(inbox_id)


def sort_inboxes(docs: list[dict[str, Any]], sort: Any) -> None:
    """Sort in place by a Mongo sort document (``{"name": 1}``)."""
    if isinstance(sort, dict):
        # Stable sorts, least significant key first, give Mongo's multi-key order.
        for key, direction in reversed(list(sort.items())):
            docs.sort(key=_sort_by(str(key)), reverse=direction == -1)


def _sort_by(key: str) -> Callable[[Mapping[str, Any]], tuple[int, Any]]:
    return lambda doc: _sort_key(doc.get(key))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (1, value)
    return (3, str(value))
