"""Make server text safe to show: secrets masked, control characters escaped, length clipped.

Servers echo what they were sent surprisingly often (a ``BAD`` quoting the command, a
proxy's error page), so every reply that reaches a message, a fact or a log line goes
through :func:`scrub` with the secrets that were on the wire (STYLE.md §3, probe-anchors
§5 item 11).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from provision.models import Secret
from provision.results import StageResult

__all__ = ["MASK", "SecretsFilter", "mask", "scrub", "scrub_stage"]

#: What a secret is replaced with.
MASK = "***"

#: Longest text kept; server replies longer than this are clipped.
DEFAULT_LIMIT = 300


def scrub(text: str, *secrets: str | Secret | None, limit: int = DEFAULT_LIMIT) -> str:
    """Return ``text`` with every secret masked, control characters escaped and clipped.

    Each secret is masked as given and in the escaped forms a protocol puts on the wire
    (an IMAP quoted string escapes ``\\`` and ``"``, RFC 3501 §4.3), so an echoed
    command does not leak it either.

    Args:
        text: server text (already decoded).
        *secrets: passwords or tokens; ``None`` and empty values are ignored.
        limit: maximum length of the result (an ellipsis marks a cut).

    Returns:
        Text that is safe for messages, facts and logs.
    """
    return _scrub(text, _variants(secrets), limit)


def _scrub(text: str, variants: list[str], limit: int = DEFAULT_LIMIT) -> str:
    if not variants:  # nothing to mask (scrub_stage's usual case): escape and clip only
        text = _escaped(text)
    else:
        text = _replace(_escaped(_replace(text, variants)), variants)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def scrub_stage(result: StageResult, *secrets: str | Secret | None) -> None:
    """:func:`scrub` everything a stage will show: message, step details, findings, facts."""
    texts: list[str] = []
    if result.message is not None:
        texts.append(result.message)
    texts.extend(step.detail for step in result.steps if step.detail is not None)
    texts.extend(finding.message for finding in result.warnings)
    _strings(result.facts, texts)
    # Once per stage, not once per text (some 50 texts): only the forms that occur in one
    # of them, raw or escaped, are looked for in each (usually none at all).
    variants = _occurring(_variants(secrets), texts)
    if result.message is not None:
        result.message = _scrub(result.message, variants)
    for step in result.steps:
        if step.detail is not None:
            step.detail = _scrub(step.detail, variants)
    for finding in result.warnings:
        finding.message = _scrub(finding.message, variants)
    scrubbed = _scrub_json(result.facts, variants)
    result.facts.clear()
    result.facts.update(scrubbed)


def _strings(value: Any, out: list[str]) -> None:
    """Every string inside a JSON value, appended to ``out``."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)


def _occurring(variants: list[str], texts: list[str]) -> list[str]:
    """The variants that :func:`_scrub` could find in one of ``texts``.

    A form is found in a text, or in that text escaped (the second pass), so it occurs
    in the texts joined, raw or escaped; the joint (a space, which escaping leaves
    alone) can only add false finds. Masking inserts only ``*``: a form without one
    cannot appear by masking others; a form with one is always kept.
    """
    if not variants:
        return variants
    joined = " ".join(texts)
    escaped = _escaped(joined)
    return [v for v in variants if v in joined or v in escaped or "*" in v]


def _scrub_json(value: Any, variants: list[str]) -> Any:
    if isinstance(value, str):
        return _scrub(value, variants)
    if isinstance(value, list):
        return [_scrub_json(v, variants) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_json(v, variants) for k, v in value.items()}
    return value


def mask(text: str, *secrets: str | Secret | None) -> str:
    """Replace every secret in ``text`` (in every form :func:`scrub` knows) with :data:`MASK`."""
    return _replace(text, _variants(secrets))


#: Secrets shorter than this are masked only where they stand alone: a one-letter
#: password masked everywhere would turn every reply into "plainte***t" noise.
_SHORT = 4


def _replace(text: str, variants: list[str]) -> str:
    for value in variants:
        if len(value) >= _SHORT:
            text = text.replace(value, MASK)
        elif value in text:
            alone = rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])"
            text = re.sub(alone, MASK, text)
    return text


class SecretsFilter(logging.Filter):
    """Masks the secrets of running probes in a third-party logger's records.

    Protocol libraries log what they send and receive at DEBUG (aioimaplib logs every
    line the server sends, and servers echo commands). Attach one filter to such a
    logger and wrap each probe in :meth:`guarding`; records that carry a secret are
    rewritten before any handler sees them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: list[str | Secret] = []

    @contextmanager
    def guarding(self, *secrets: str | Secret) -> Iterator[None]:
        """Mask these secrets in records logged while the block runs."""
        added = [s for s in secrets if s]
        self._secrets.extend(added)
        try:
            yield
        finally:
            for secret in added:
                self._secrets.remove(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            text = record.getMessage()
            clean = mask(text, *self._secrets)
            if clean != text:
                record.msg, record.args = clean, None
        return True


def _variants(secrets: tuple[str | Secret | None, ...]) -> list[str]:
    out: list[str] = []
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value:
            continue
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = _escaped(value)
        # repr() of the UTF-8 bytes: how libraries log raw lines (aioimaplib "Received : b'...'").
        as_bytes = [repr(v.encode("utf-8"))[2:-1] for v in (value, quoted)]
        for variant in (quoted, escaped, value, *as_bytes):
            if variant not in out:
                out.append(variant)
    # Longest first, so a secret that contains another one is masked whole.
    return sorted(out, key=len, reverse=True)


def _escaped(text: str) -> str:
    """Control and other non-printable characters as escapes (``\\x1b``, ``\\n``)."""
    if text.isprintable():  # the usual case, and 50 times faster than the loop
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
