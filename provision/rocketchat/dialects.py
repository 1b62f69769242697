"""Rocket.Chat API eras (spec §0) and the server version that picks one."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

__all__ = ["E5_FIRST_VERSION", "Dialect", "dialect_for"]


class Dialect(StrEnum):
    """API eras of spec §0, chosen from the server version."""

    E0 = "E0"  # 3.11-4.7: create answers without _id; permission errors are 400
    E1 = "E1"  # 4.8-5.0: description/senderInfo/department required
    E2 = "E2"  # 5.1: imap.maxRetries required
    E3 = "E3"  # 5.2: 403 for missing permission
    E4 = "E4"  # 5.3-7.x: check() validation
    E5 = "E5"  # AJV validation (develop, 2026)


#: First version assumed to ship the E5 AJV validation. The release that contains
#: PR #39265 is not known (spec §0, §7), so this is a guess; the client sends the
#: portable body and understands both error dialects whatever this says.
E5_FIRST_VERSION: Final = (8, 0, 0)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("-")[0])[:3])


def dialect_for(version: str | None) -> Dialect:
    """The dialect of a server version (E4 when unknown)."""
    if not version:
        return Dialect.E4
    v = _version_tuple(version)
    if not v:
        return Dialect.E4
    if v >= E5_FIRST_VERSION:
        return Dialect.E5
    for first, dialect in (
        ((5, 3), Dialect.E4),
        ((5, 2), Dialect.E3),
        ((5, 1), Dialect.E2),
        ((4, 8), Dialect.E1),
    ):
        if v >= first:
            return dialect
    return Dialect.E0
