"""The ready inbox file: the best SMTP and IMAP candidates, passwords as references.

The text is checked with :func:`provision.inbox.load_inboxes` before it is returned,
so a file written here is one ``provision check`` accepts.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from provision.discover.assess import Assessment
from provision.discover.candidates import Protocol
from provision.discover.search import Discovery

__all__ = ["DEFAULT_PASSWORD_VAR", "inbox_file", "password_reference"]

#: The variable the file names when no ``--password-from`` was given.
DEFAULT_PASSWORD_VAR = "INBOX_PASSWORD"  # noqa: S105 (a variable name)

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def password_reference(source: str | None) -> str:
    """``${VAR}`` for ``VAR``, ``${file:PATH}`` for ``file:PATH`` (the inbox file syntax).

    Raises:
        ValueError: neither a variable name nor ``file:PATH``.
    """
    if source is None:
        return f"${{{DEFAULT_PASSWORD_VAR}}}"
    if source.startswith("file:") and len(source) > len("file:"):
        # Absolute: a relative path would be read relative to the inbox file.
        return f"${{file:{Path(source.removeprefix('file:')).resolve()}}}"
    if _VAR.fullmatch(source):
        return f"${{{source}}}"
    raise ValueError(f"{source!r}: give an environment variable name or file:PATH")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _half(best: Assessment, *, username: str, password: str, imap: bool) -> str:
    c = best.candidate
    lines = [
        f"      server: {_quote(c.host)}",
        f"      port: {c.port}",
        f"      username: {_quote(c.username or username)}",
        f"      password: {_quote(password)}",
        f"      secure: {'true' if best.secure else 'false'}",
    ]
    if imap:
        lines.append("      maxRetries: 10")
    return "\n".join(lines)


def inbox_file(
    discovery: Discovery,
    *,
    username: str | None = None,
    password_from: str | None = None,
    smtp: Assessment | None = None,
    imap: Assessment | None = None,
) -> str | None:
    """The YAML inbox file for the best candidates, or ``None`` if a half is missing.

    Args:
        discovery: the search result.
        username: the login name; default the one the source suggested, else the address.
        password_from: ``VAR`` or ``file:PATH`` for both passwords.
        smtp: the SMTP candidate to write instead of the best one.
        imap: the IMAP candidate to write instead of the best one.

    Raises:
        ValueError: ``password_from`` is malformed.
    """
    password = password_reference(password_from)
    smtp = smtp or discovery.best(Protocol.SMTP)
    imap = imap or discovery.best(Protocol.IMAP)
    if smtp is None or imap is None:
        return None
    login = username or discovery.address
    if username is not None:
        smtp = _with_username(smtp)
        imap = _with_username(imap)
    text = (
        f"# Written by `provision discover {discovery.address}`.\n"
        f"# smtp: {smtp.candidate.origin} ({smtp.candidate.detail})\n"
        f"# imap: {imap.candidate.origin} ({imap.candidate.detail})\n"
        "inboxes:\n"
        f"  - name: {_quote(discovery.address)}\n"
        f"    email: {_quote(discovery.address)}\n"
        "    smtp:\n"
        f"{_half(smtp, username=login, password=password, imap=False)}\n"
        "    imap:\n"
        f"{_half(imap, username=login, password=password, imap=True)}\n"
    )
    _validate(text, password)
    return text


def _with_username(best: Assessment) -> Assessment:
    from dataclasses import replace

    return replace(best, candidate=replace(best.candidate, username=None))


def _validate(text: str, password: str) -> None:
    """Load the text as ``check`` would; the password reference reads a stand-in value
    (the real one is only needed at check time, and a ``file:`` may not exist yet)."""
    from provision.inbox import load_inboxes

    stand_in = text.replace(_quote(password), _quote("${PROVISION_DISCOVER_STAND_IN}"))
    load_inboxes(
        ["-"],
        stdin=io.StringIO(stand_in),
        environ={"PROVISION_DISCOVER_STAND_IN": "stand-in"},
    )
