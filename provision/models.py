"""Input models: what an inbox file describes, after validation.

Everything here is an immutable value object. Constructors do no I/O and no
validation beyond types; ``provision.inbox`` builds these from inbox files and
reports every problem with file, line, inbox and field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt  # an annotation only: models stays free of imports at run time

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "ImapSettings",
    "Inbox",
    "ProbeOptions",
    "Secret",
    "SmtpSettings",
    "Source",
]

#: The admin UI's default for ``imap.maxRetries`` (EmailInboxForm.tsx, 6.x).
DEFAULT_MAX_RETRIES = 10


class Secret:
    """A password or token that never shows itself.

    ``repr``/``str``/``format`` give ``'***'``; only :meth:`reveal` returns the value,
    and it is called only where the secret goes on the wire (AUTH, LOGIN, the
    Rocket.Chat request body).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself. Call only at the point of use on the wire."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Where an inbox came from: file name (``<stdin>`` for ``-``), 0-based index, and
    the 1-based line of each field path (``"smtp.port"`` -> 12) where known."""

    file: str
    index: int = 0
    line: int | None = None
    lines: Mapping[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """Line of a field path, falling back to its nearest known parent, then the inbox."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return self.line


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """The ``smtp`` object of an inbox, in Rocket.Chat's words."""

    server: str
    port: int
    username: str
    password: Secret
    secure: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ImapSettings:
    """The ``imap`` object of an inbox, in Rocket.Chat's words."""

    server: str
    port: int
    username: str
    password: Secret
    secure: bool
    max_retries: int = DEFAULT_MAX_RETRIES


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbox:
    """One email inbox: the body of ``POST /api/v1/email-inbox`` (spec §1.2)."""

    name: str
    email: str
    active: bool = True
    description: str | None = None
    sender_info: str | None = None
    department: str | None = None
    smtp: SmtpSettings
    imap: ImapSettings
    source: Source = field(default_factory=lambda: Source(file="<memory>"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOptions:
    """How probes run. Every default is documented in the README.

    Attributes:
        step_timeout: cap in seconds on any single network step (connect, TLS, one reply).
        timeout: overall deadline in seconds for the whole run.
        concurrency: how many inboxes are probed at once.
        ca_file: extra CA certificates (PEM) trusted in addition to the system store,
            as ``NODE_EXTRA_CA_CERTS`` does for Rocket.Chat.
        strict: warnings fail.
        ehlo_name: name sent in EHLO (nodemailer sends the machine's host name).
        smtp_verify: verify the SMTP certificate (Rocket.Chat does; turning it off is reported).
        envelope: after SMTP AUTH, ``MAIL FROM`` and ``RCPT TO`` the inbox address, then
            ``RSET``: is this login allowed to send as it (nothing is sent)?
        round_trip: send one tagged message from the inbox address to itself, wait until
            IMAP finds it, then delete it (``check`` only).
        round_trip_timeout: how long to wait for that message, in seconds (the run's
            deadline still bounds it).
        cert_days: warn (``cert-expiring``) when a certificate of either protocol expires
            within this many days.
        unseen_since: the day the IMAP search counts unseen mail from, as Rocket.Chat
            searches ``SINCE`` its inbox's ``_createdAt`` (``audit`` knows it); ``None``
            counts every unseen message.
    """

    step_timeout: float = 10.0
    timeout: float = 60.0
    concurrency: int = 10
    ca_file: Path | None = None
    strict: bool = False
    ehlo_name: str | None = None
    smtp_verify: bool = True
    envelope: bool = False
    round_trip: bool = False
    round_trip_timeout: float = 60.0
    cert_days: int = 21
    unseen_since: dt.date | None = None
