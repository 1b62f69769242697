"""The whole exception tree. Expected outcomes of probes are data (``provision.results``).

::

    ProvisionError
     +-- ConfigError          bad input: every problem found, with file, line, inbox, field
     +-- RocketChatError      (``provision set``) the Rocket.Chat API failed
          +-- RocketChatCallError    status, error, hint, field, method, path
               +-- RocketChatAuthError            401, failed login
               |    +-- RocketChatTwoFactorError     totp-required/-invalid (two_factor_method)
               |    +-- RocketChatPermissionError    403, error-not-allowed (permission)
               +-- RocketChatRejectedError        400 / ``success: false``
               |    +-- RocketChatValidationError      Match error / AJV (field)
               |    +-- RocketChatDuplicateEmailError  E11000 (email: the clashing address)
               |    +-- RocketChatUnknownInboxError    error-invalid-email-inbox
               +-- RocketChatNotFoundError        404
               +-- RocketChatRateLimitedError     429 not waited out (reset_at, epoch seconds)
               +-- RocketChatUnavailableError     5xx, transport, timeout (write_state,
               |                                  request_sent)
               +-- RocketChatProtocolError        not JSON (an HTML page), unexpected shape
               +-- RocketChatRedirectError        to another origin, a method change, too many
               +-- RocketChatTlsError             certificate / handshake failure
               +-- RocketChatDepartmentError      unknown or ambiguous department (input error)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "ProvisionError",
    "RocketChatAuthError",
    "RocketChatCallError",
    "RocketChatDepartmentError",
    "RocketChatDuplicateEmailError",
    "RocketChatError",
    "RocketChatNotFoundError",
    "RocketChatPermissionError",
    "RocketChatProtocolError",
    "RocketChatRateLimitedError",
    "RocketChatRedirectError",
    "RocketChatRejectedError",
    "RocketChatTlsError",
    "RocketChatTwoFactorError",
    "RocketChatUnavailableError",
    "RocketChatUnknownInboxError",
    "RocketChatValidationError",
]


class ProvisionError(Exception):
    """Base of every error ``provision`` raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in the input: ``file:line: inbox 'name': field: message``.

    ``inbox`` is the inbox's name as written (JSON and JUnit carry it unquoted), or
    ``#index`` when it has none; only the text form quotes a name.
    """

    message: str
    file: str | None = None
    line: int | None = None
    inbox: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
        parts = [where] if where else []
        if self.inbox is not None:
            index = self.inbox.startswith("#") and self.inbox[1:].isdigit()
            parts.append(f"inbox {self.inbox if index else repr(self.inbox)}")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigError(ProvisionError):
    """The input is wrong; raised before any network I/O. Holds every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RocketChatError(ProvisionError):
    """The Rocket.Chat API failed (``provision set``)."""


class RocketChatCallError(RocketChatError):
    """A Rocket.Chat call failed; the base of every error the client raises.

    Attributes:
        status: HTTP status, when there was an answer.
        error: the server's ``error`` text (never contains secrets), when given.
        hint: what to change, when known.
        field: the body field concerned (``imap.maxRetries``), when known.
        method: HTTP method of the call.
        path: path of the call, without query.

    A subclass names its own attributes (see the tree) in ``_details``; they are
    keyword arguments of the constructor, ``None`` unless given.
    """

    _details: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        hint: str | None = None,
        field: str | None = None,
        method: str | None = None,
        path: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error
        self.hint = hint
        self.field = field
        self.method = method
        self.path = path
        unknown = details.keys() - self._details
        if unknown:
            raise TypeError(f"{type(self).__name__} has no attribute {sorted(unknown)[0]!r}")
        for name in self._details:
            setattr(self, name, details.get(name))


class RocketChatAuthError(RocketChatCallError):
    """The credentials were refused (HTTP 401, or a failed login)."""


class RocketChatTwoFactorError(RocketChatAuthError):
    """The login needs a two-factor code (``totp-required``) or the code was wrong."""

    _details = frozenset({"two_factor_method"})
    two_factor_method: str | None


class RocketChatPermissionError(RocketChatAuthError):
    """The user lacks ``permission`` (HTTP 403, or ``error-not-allowed`` before 5.2)."""

    _details = frozenset({"permission"})
    permission: str


class RocketChatRejectedError(RocketChatCallError):
    """Rocket.Chat refused the request (HTTP 400, or HTTP 200 with ``success: false``)."""


class RocketChatValidationError(RocketChatRejectedError):
    """The body failed validation: a Meteor ``Match error`` (E4) or AJV (E5)."""


class RocketChatDuplicateEmailError(RocketChatRejectedError):
    """Another inbox already has the address (E11000): ``email``, when the message names it."""

    _details = frozenset({"email"})
    email: str | None


class RocketChatUnknownInboxError(RocketChatRejectedError):
    """An update named an ``_id`` that does not exist (``error-invalid-email-inbox``)."""


class RocketChatNotFoundError(RocketChatCallError):
    """HTTP 404 (``Resource not found``)."""


class RocketChatRateLimitedError(RocketChatCallError):
    """HTTP 429 that could not be waited out; ``reset_at`` (epoch seconds) if known."""

    _details = frozenset({"reset_at"})
    reset_at: float | None


class RocketChatUnavailableError(RocketChatCallError):
    """5xx, transport error or timeout, after the retries allowed.

    Attributes:
        write_state: for a write, ``"not-applied"`` when a read-back showed that it
            did not happen, ``"unknown"`` when that could not be established;
            ``None`` for reads.
        request_sent: ``False`` when the connection was never established, so the
            request cannot have been processed.
    """

    _details = frozenset({"write_state", "request_sent"})
    write_state: str | None
    request_sent: bool

    def __init__(self, message: str, *, request_sent: bool = True, **kw: Any) -> None:
        super().__init__(message, request_sent=request_sent, **kw)


class RocketChatProtocolError(RocketChatCallError):
    """The answer was not the JSON Rocket.Chat sends (an HTML page, a wrong shape)."""


class RocketChatRedirectError(RocketChatCallError):
    """A redirect was not followed (another origin, a method change, too many)."""


class RocketChatTlsError(RocketChatCallError):
    """The TLS handshake with Rocket.Chat failed (certificate, protocol)."""


class RocketChatDepartmentError(RocketChatCallError):
    """A department name is unknown or ambiguous: an input error (field ``department``)."""
