"""Inbox files (YAML or JSON) -> validated :class:`~provision.models.Inbox` objects.

A file holds one inbox in the keys of ``POST /api/v1/email-inbox`` (spec §1.2), or
``inboxes:`` with a list of them; types are as strict as Rocket.Chat's Meteor ``check()``.
Nothing here touches the network, and no message shows a password or a ``${...}`` value.

``read`` reads inputs, ``lines`` (and ``yaml_lines``) turn text into a tree with lines,
``fields`` is the one field table, ``validate`` and ``interpolate`` check values,
``schema`` generates the JSON Schema and ``load`` ties them together. Names below are
loaded on first use, so importing ``provision.inbox.fields`` alone stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provision._lazy import lazy_getattr

if TYPE_CHECKING:
    from provision.inbox.load import LoadResult as LoadResult
    from provision.inbox.load import load_inboxes as load_inboxes
    from provision.inbox.schema import inbox_file_schema as inbox_file_schema

_LAZY = {
    "LoadResult": "provision.inbox.load",
    "load_inboxes": "provision.inbox.load",
    "inbox_file_schema": "provision.inbox.schema",
}

__all__ = ["LoadResult", "inbox_file_schema", "load_inboxes"]


__getattr__ = lazy_getattr(__name__, _LAZY)
