"""Rocket.Chat REST client for ``provision set`` (``shared/spec/rocketchat-email-inbox.md``).

A :class:`RocketChat` speaks the email-inbox API on an injected
``httpx.AsyncClient`` (built by :func:`make_http_client`: verified TLS, no
automatic redirects). Every answer and every transport failure is translated in
one place (:meth:`RocketChat._interpret` / :func:`_transport_error`) into this tree::

    provision.errors.RocketChatError
     +-- RocketChatCallError            (attributes: status, error, hint, field, method, path)
          +-- RocketChatAuthError          401, failed login
          |    +-- RocketChatTwoFactorError   totp-required / totp-invalid (its method)
          |    +-- RocketChatPermissionError  403 (names the permission)
          +-- RocketChatRejectedError      400 / ``success: false``
          |    +-- RocketChatValidationError  Match error / AJV error-invalid-params (field)
          |    +-- RocketChatDuplicateEmailError  E11000 (the clashing address)
          |    +-- RocketChatUnknownInboxError    error-invalid-email-inbox
          +-- RocketChatNotFoundError      404
          +-- RocketChatRateLimitedError   429 that cannot be waited out (reset time)
          +-- RocketChatUnavailableError   5xx, transport, timeout (write_state for POST)
          +-- RocketChatProtocolError      not JSON (an HTML page), unexpected shape
          +-- RocketChatRedirectError      redirect to another origin, or too many
          +-- RocketChatTlsError           certificate / handshake failure
          +-- RocketChatDepartmentError    unknown or ambiguous department (an input error)

Messages never contain tokens, passwords, 2FA codes or request bodies; as a last
line of defence every message is scrubbed of the secrets the client knows.

The pure helpers :func:`inbox_payload`, :func:`plan_body_for_create`,
:func:`plan_body_for_update` and :func:`diff_inbox` implement the body rules of
spec §1.2 and issue 3 item 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, NoReturn

import httpx

from provision._version import __version__
from provision.errors import ConfigError, ConfigProblem, RocketChatError
from provision.models import DEFAULT_MAX_RETRIES, Inbox, Secret
from provision.tls import verifying_context
from provision.tls_failures import classify_tls_error

__all__ = [
    "Credentials",
    "Dialect",
    "FieldChange",
    "PasswordAuth",
    "RetryPolicy",
    "RocketChat",
    "RocketChatAuthError",
    "RocketChatCallError",
    "RocketChatDepartmentError",
    "RocketChatDuplicateEmailError",
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
    "ServerInfo",
    "TokenAuth",
    "check_url",
    "credentials_from_env",
    "diff_inbox",
    "dialect_for",
    "inbox_payload",
    "make_http_client",
    "open_rocketchat",
    "plan_body_for_create",
    "plan_body_for_update",
]

logger = logging.getLogger(__name__)

_INBOX: Final = "/api/v1/email-inbox"
_MANAGE: Final = "manage-email-inbox"
_MAX_REDIRECTS: Final = 5
_MAX_RATE_LIMIT_WAITS: Final = 3
#: Largest answer body read; a page of 100 inboxes is some 100 KiB. A bigger one is
#: not Rocket.Chat's (or is hostile) and is not held in memory.
_MAX_BODY: Final = 8 * 1024 * 1024
#: Added to a rate-limit wait so that the retry lands after the window reset.
_RESET_MARGIN: Final = 0.02
_SECRET_PATHS: Final = frozenset({"smtp.password", "imap.password"})
#: Shorter secrets are not masked in messages (masking "a" would garble every text);
#: messages are built without secrets in the first place.
_MIN_SCRUB: Final = 4
#: Transport errors raised before the request left: a write cannot have happened.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# --------------------------------------------------------------------------- errors


class RocketChatCallError(RocketChatError):
    """A Rocket.Chat call failed; the base of every error this module raises.

    Attributes:
        status: HTTP status, when there was an answer.
        error: the server's ``error`` text (never contains secrets), when given.
        hint: what to change, when known.
        field: the body field concerned (``imap.maxRetries``), when known.
        method: HTTP method of the call.
        path: path of the call, without query.
    """

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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error
        self.hint = hint
        self.field = field
        self.method = method
        self.path = path


class RocketChatAuthError(RocketChatCallError):
    """The credentials were refused (HTTP 401, or a failed login)."""


class RocketChatTwoFactorError(RocketChatAuthError):
    """The login needs a two-factor code (``totp-required``) or the code was wrong.

    Attributes:
        method: the 2FA method the server asked for (``email``, ``totp``), if told.
    """

    def __init__(self, message: str, *, two_factor_method: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.two_factor_method = two_factor_method


class RocketChatPermissionError(RocketChatAuthError):
    """The user lacks a permission (HTTP 403, or ``error-not-allowed`` before 5.2).

    Attributes:
        permission: the permission the route needs.
    """

    def __init__(self, message: str, *, permission: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.permission = permission


class RocketChatRejectedError(RocketChatCallError):
    """Rocket.Chat refused the request (HTTP 400, or HTTP 200 with ``success: false``)."""


class RocketChatValidationError(RocketChatRejectedError):
    """The body failed validation: a Meteor ``Match error`` (E4) or AJV (E5)."""


class RocketChatDuplicateEmailError(RocketChatRejectedError):
    """Another inbox already has the address (E11000 on the unique ``email`` index).

    Attributes:
        email: the clashing address, when the message names it.
    """

    def __init__(self, message: str, *, email: str | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.email = email


class RocketChatUnknownInboxError(RocketChatRejectedError):
    """An update named an ``_id`` that does not exist (``error-invalid-email-inbox``)."""


class RocketChatNotFoundError(RocketChatCallError):
    """HTTP 404 (``Resource not found``)."""


class RocketChatRateLimitedError(RocketChatCallError):
    """HTTP 429 that could not be waited out within the deadline.

    Attributes:
        reset_at: when the limit resets (epoch seconds), if known.
    """

    def __init__(self, message: str, *, reset_at: float | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reset_at = reset_at


class RocketChatUnavailableError(RocketChatCallError):
    """5xx, transport error or timeout, after the retries allowed.

    Attributes:
        write_state: for a write, ``"not-applied"`` when a read-back showed that it
            did not happen, ``"unknown"`` when that could not be established;
            ``None`` for reads.
        request_sent: ``False`` when the connection was never established, so the
            request cannot have been processed.
    """

    def __init__(
        self,
        message: str,
        *,
        write_state: str | None = None,
        request_sent: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.write_state = write_state
        self.request_sent = request_sent


class RocketChatProtocolError(RocketChatCallError):
    """The answer was not the JSON Rocket.Chat sends (an HTML page, a wrong shape)."""


class RocketChatRedirectError(RocketChatCallError):
    """A redirect was not followed (another origin, a method change, too many)."""


class RocketChatTlsError(RocketChatCallError):
    """The TLS handshake with Rocket.Chat failed (certificate, protocol)."""


class RocketChatDepartmentError(RocketChatCallError):
    """A department name is unknown or ambiguous: an input error (field ``department``)."""


# ----------------------------------------------------------------- credentials, URL


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenAuth:
    """A personal access token or login token with its user id (spec §2)."""

    user_id: str
    token: Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordAuth:
    """User name (or email) and password for ``POST /api/v1/login``, plus a 2FA code."""

    user: str
    password: Secret
    code: Secret | None = None


Credentials = TokenAuth | PasswordAuth


def credentials_from_env(environ: Mapping[str, str], *, code: str | None = None) -> Credentials:
    """Read Rocket.Chat credentials from environment variables.

    ``ROCKETCHAT_USER_ID`` + ``ROCKETCHAT_AUTH_TOKEN`` (a personal access token,
    recommended), or ``ROCKETCHAT_USER`` + ``ROCKETCHAT_PASSWORD`` with an optional
    ``ROCKETCHAT_2FA_CODE``. Empty values count as unset.

    Args:
        environ: the environment (``os.environ``).
        code: a 2FA code from the command line; wins over ``ROCKETCHAT_2FA_CODE``.

    Returns:
        The credentials found.

    Raises:
        ConfigError: none, both kinds, or half of a pair are set. Messages name the
            variables, never their values.
    """
    user_id = environ.get("ROCKETCHAT_USER_ID") or None
    token = environ.get("ROCKETCHAT_AUTH_TOKEN") or None
    user = environ.get("ROCKETCHAT_USER") or None
    password = environ.get("ROCKETCHAT_PASSWORD") or None
    code = code or environ.get("ROCKETCHAT_2FA_CODE") or None
    problems: list[ConfigProblem] = []
    use_token = bool(user_id or token)
    use_password = bool(user or password)
    if use_token and use_password:
        problems.append(
            ConfigProblem(
                "set either ROCKETCHAT_USER_ID + ROCKETCHAT_AUTH_TOKEN or "
                "ROCKETCHAT_USER + ROCKETCHAT_PASSWORD, not both",
                field="ROCKETCHAT_AUTH_TOKEN",
            )
        )
    elif use_token:
        for name, value in (("ROCKETCHAT_USER_ID", user_id), ("ROCKETCHAT_AUTH_TOKEN", token)):
            if value is None:
                problems.append(ConfigProblem(f"{name} is not set", field=name))
        if user_id and token:
            return TokenAuth(user_id=user_id, token=Secret(token))
    elif use_password:
        for name, value in (("ROCKETCHAT_USER", user), ("ROCKETCHAT_PASSWORD", password)):
            if value is None:
                problems.append(ConfigProblem(f"{name} is not set", field=name))
        if user and password:
            return PasswordAuth(
                user=user, password=Secret(password), code=Secret(code) if code else None
            )
    else:
        problems.append(
            ConfigProblem(
                "no Rocket.Chat credentials: set ROCKETCHAT_USER_ID and ROCKETCHAT_AUTH_TOKEN "
                "(a personal access token) or ROCKETCHAT_USER and ROCKETCHAT_PASSWORD",
                field="ROCKETCHAT_AUTH_TOKEN",
            )
        )
    raise ConfigError(problems)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool = False) -> httpx.URL:
    """Validate the Rocket.Chat base URL before any I/O.

    HTTPS is required; plain HTTP only to a loopback host or with ``allow_http``
    (the token would otherwise travel in clear).

    Args:
        url: the server URL (``https://chat.example.com``, optionally with a path).
        allow_http: accept ``http://`` to any host.

    Returns:
        The parsed URL.

    Raises:
        ConfigError: not an http(s) URL, credentials in the URL, or plain HTTP refused.
    """
    field = "ROCKETCHAT_URL"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ConfigError([ConfigProblem("not a valid URL", field=field)]) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            [ConfigProblem("must be an http:// or https:// URL with a host", field=field)]
        )
    if parsed.userinfo:
        raise ConfigError(
            [
                ConfigProblem(
                    "must not contain credentials; use ROCKETCHAT_USER_ID and "
                    "ROCKETCHAT_AUTH_TOKEN",
                    field=field,
                )
            ]
        )
    if parsed.query or parsed.fragment:
        raise ConfigError([ConfigProblem("must not have a query or fragment", field=field)])
    if parsed.scheme == "http" and not allow_http and not _is_loopback(parsed.host):
        raise ConfigError(
            [
                ConfigProblem(
                    f"plain HTTP to {parsed.host} would send the token in clear; use https:// "
                    "(or --allow-http if you must)",
                    field=field,
                )
            ]
        )
    return parsed


def make_http_client(
    url: str,
    *,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    allow_http: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """Build the ``httpx.AsyncClient`` a :class:`RocketChat` runs on.

    Certificates are verified (system store plus ``ca_file``, see
    :func:`provision.tls.verifying_context`), redirects are never followed
    automatically (:class:`RocketChat` handles them), and proxy/netrc settings of
    the environment are ignored.

    Args:
        url: the server URL, checked by :func:`check_url`.
        ca_file: extra CA certificates (PEM).
        timeout: seconds for each connect/read/write.
        allow_http: accept plain HTTP to a non-loopback host.
        transport: a transport for tests.

    Raises:
        ConfigError: the URL is refused.
    """
    base = check_url(url, allow_http=allow_http)
    return httpx.AsyncClient(
        base_url=base,
        verify=verifying_context(ca_file),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": f"provision/{__version__}", "Accept": "application/json"},
        transport=transport,
    )


# ---------------------------------------------------------------- versions, results


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What :meth:`RocketChat.connect` found.

    Attributes:
        version: ``/api/info`` version, ``None`` when the server hides it.
        dialect: API era derived from it.
        user_id: the authenticated user.
        username: its name, when known.
        own_session: ``True`` when the client logged in itself (and will log out).
        plain_http: the connection is not encrypted (loopback or ``--allow-http``).
    """

    version: str | None
    dialect: Dialect
    user_id: str
    username: str | None
    own_session: bool
    plain_http: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How hard to try.

    Attributes:
        attempts: tries for an idempotent request (and POST attempts after a
            read-back showed the write did not happen).
        backoff: first back-off in seconds; doubled per attempt.
        max_backoff: cap on one back-off.
        max_rate_limit_wait: longest wait for a rate-limit reset, in seconds.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_rate_limit_wait: float = 65.0


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs between the stored inbox and the wanted body.

    Secret fields (passwords) carry no values: ``old`` and ``new`` are ``None``
    and the change renders as ``changed``.
    """

    path: str
    old: Any
    new: Any
    secret: bool = False

    def __str__(self) -> str:
        if self.secret:
            return f"{self.path}: changed"
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}"

    def to_json(self) -> dict[str, Any]:
        """JSON form; secrets only as ``"change": "changed"``."""
        if self.secret:
            return {"field": self.path, "change": "changed"}
        return {"field": self.path, "old": self.old, "new": self.new}


def _show(value: Any) -> str:
    """A value as JSON would spell it, ``(none)`` for absent."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


# ------------------------------------------------------------------- body building


def inbox_payload(inbox: Inbox, *, department_id: str | None = None) -> dict[str, Any]:
    """The portable ``POST /api/v1/email-inbox`` body of an inbox (spec §1.2).

    Sends ``description`` and ``senderInfo`` always (empty string when unset, valid
    in every era >= 4.8), ``department`` only when there is one, ``imap.maxRetries``
    always, correct JSON types, no ``_id`` and no other key. Passwords are revealed:
    the result goes on the wire only.

    Args:
        inbox: the inbox.
        department_id: the resolved department id; ``inbox.department`` when ``None``.
    """
    body: dict[str, Any] = {
        "active": inbox.active,
        "name": inbox.name,
        "email": inbox.email,
        "description": inbox.description or "",
        "senderInfo": inbox.sender_info or "",
    }
    department = department_id if department_id is not None else inbox.department
    if department:
        body["department"] = department
    smtp, imap = inbox.smtp, inbox.imap
    body["smtp"] = {
        "server": smtp.server,
        "port": smtp.port,
        "username": smtp.username,
        "password": smtp.password.reveal(),
        "secure": smtp.secure,
    }
    body["imap"] = {
        "server": imap.server,
        "port": imap.port,
        "username": imap.username,
        "password": imap.password.reveal(),
        "secure": imap.secure,
        "maxRetries": imap.max_retries,
    }
    return body


def _with_max_retries(body: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in body.items()}
    imap = out.get("imap")
    if isinstance(imap, dict):
        # Required since 5.1 and missing from the official docs (spec §1.2, §5).
        imap.setdefault("maxRetries", DEFAULT_MAX_RETRIES)
    return out


def plan_body_for_create(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body to create an inbox with.

    No ``_id`` (an explicit empty one is stored as the id, spec §1.2), no
    ``department`` unless one is given and never ``"All"`` (stored as a junk id on
    create, spec §4), ``imap.maxRetries`` always.
    """
    out = _with_max_retries(body)
    out.pop("_id", None)
    if out.get("department") in (None, "", "All"):
        out.pop("department", None)
    return out


def plan_body_for_update(stored: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """The body to update ``stored`` to ``body``.

    ``_id`` of the stored inbox first, ``imap.maxRetries`` always; no department
    wanted while one is stored sends ``"All"``, the only way to remove it (an
    omitted key leaves it unchanged, spec §1.2).
    """
    rest = _with_max_retries(body)
    rest.pop("_id", None)
    department = rest.pop("department", None)
    out: dict[str, Any] = {"_id": stored["_id"], **rest}
    if department and department != "All":
        out["department"] = department
    elif stored.get("department"):
        out["department"] = "All"
    return out


def _same(a: Any, b: Any) -> bool:
    """JSON equality with JavaScript types: ``true`` is not ``1``, ``587`` is ``587.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _optional_text(value: Any) -> Any:
    """Absent, null and empty mean the same for description/senderInfo/department."""
    return None if value in (None, "") else value


def diff_inbox(stored: Mapping[str, Any], wanted_body: Mapping[str, Any]) -> list[FieldChange]:
    """Fields of ``wanted_body`` that differ from the ``stored`` inbox.

    ``wanted_body`` describes the whole inbox: an absent ``description``,
    ``senderInfo`` or ``department`` means "none" (so a stored department shows up
    as a change to remove), ``department: "All"`` means none as well. Keys stored
    inside ``smtp``/``imap`` but not wanted are ignored. Passwords are compared but
    never carried in the result.

    Args:
        stored: the inbox as ``GET``/``search`` returns it (passwords in clear).
        wanted_body: a body as built by :func:`inbox_payload` or a plan function.

    Returns:
        The changes in body order; empty when nothing differs.
    """
    changes: list[FieldChange] = []
    for key in ("active", "name", "email"):
        if key in wanted_body and not _same(stored.get(key), wanted_body[key]):
            changes.append(FieldChange(key, stored.get(key), wanted_body[key]))
    for key in ("description", "senderInfo", "department"):
        old = _optional_text(stored.get(key))
        new = _optional_text(wanted_body.get(key))
        if key == "department" and new == "All":
            new = None
        if not _same(old, new):
            changes.append(FieldChange(key, old, new))
    for section in ("smtp", "imap"):
        wanted = wanted_body.get(section)
        if not isinstance(wanted, Mapping):
            continue
        have = stored.get(section)
        have = have if isinstance(have, Mapping) else {}
        for key, new in wanted.items():
            path = f"{section}.{key}"
            old = have.get(key)
            if _same(old, new):
                continue
            if path in _SECRET_PATHS:
                changes.append(FieldChange(path, None, None, secret=True))
            else:
                changes.append(FieldChange(path, old, new))
    return changes


# ---------------------------------------------------------------- error mapping

_MATCH_ERROR = re.compile(r"^Match error: (?P<what>.*?)(?: in field (?P<field>.+))?$", re.DOTALL)
_MISSING = re.compile(r"^Missing key '(?P<key>[^']*)'$")
_EXPECTED = re.compile(r"^Expected (?P<want>\w+), got (?P<got>\w+)$")
_AJV_REQUIRED = re.compile(r"^must have required property '(?P<key>[^']*)'$")
_DUP_KEY = re.compile(r"dup key: \{ ?(?:email)?: ?\"(?P<email>(?:[^\"\\]|\\.)*)\" ?\}")
_WAIT_SECONDS = re.compile(r"wait (?P<seconds>\d+) seconds")
_ERA_48_52 = frozenset({"description", "senderInfo", "department"})


def _validation_hint(what: str, field: str | None) -> tuple[str | None, str | None]:
    """``(field, hint)`` for a ``Match error`` text (spec §1.2, E4)."""
    missing = _MISSING.match(what)
    if missing:
        key = missing["key"]
        path = f"{field}.{key}" if field else key
        if path == "imap.maxRetries":
            return path, "Rocket.Chat 5.1 and later require imap.maxRetries (a number)"
        if key in _ERA_48_52 and not field:
            return path, (
                "Rocket.Chat 4.8-5.2 require description, senderInfo and department "
                "(issue #26185); set a department id or upgrade to 5.3 or later"
            )
        return path, f"{path} is required"
    if what == "Unknown key":
        return field, f"this Rocket.Chat version does not accept the key {field}"
    expected = _EXPECTED.match(what)
    if expected:
        return field, f"{field} must be a JSON {expected['want']}, not {expected['got']}"
    if what.startswith("Failed Match.OneOf"):
        return field, f"{field} must be a string"
    return field, None


def _ajv_hint(error: str) -> tuple[str | None, str | None]:
    """``(field, hint)`` for an AJV message (spec §1.2, E5: no paths in messages)."""
    required = _AJV_REQUIRED.match(error)
    if required:
        return required["key"], f"{required['key']} is required"
    if "additional properties" in error:
        return None, (
            "this Rocket.Chat version validates bodies strictly: no unknown keys, "
            "also none inside smtp and imap"
        )
    if "fewer than" in error and "characters" in error:
        return None, "this Rocket.Chat version requires longer passwords (AJV minLength)"
    return None, None


async def _read_body(response: httpx.Response, limit: int = _MAX_BODY) -> bool:
    """Read a streamed body into ``response`` unless it exceeds ``limit`` bytes.

    Returns:
        ``False`` when the body is larger (declared or as it arrives); it is then not kept.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return False
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return False
        chunks.append(chunk)
    # What ``Response.aread`` does, within the limit: later reads see this content.
    response._content = b"".join(chunks)
    return True


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _describe_body(response: httpx.Response) -> str:
    ctype = response.headers.get("content-type", "").split(";")[0].strip()
    head = response.content[:200].lstrip().lower()
    if "html" in ctype or head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if not response.content:
        return "an empty body"
    try:
        response.json()
    except ValueError:
        return f"a non-JSON body ({ctype or 'no content type'})"
    return "JSON that is not an object"


def _error_text(data: Mapping[str, Any]) -> str | None:
    for key in ("error", "message"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _permission_for(path: str) -> str:
    if path.startswith("/api/v1/livechat/department"):
        return "view-livechat-departments"
    return _MANAGE


# --------------------------------------------------------------------- the client


Sleep = Callable[[float], Awaitable[None]]


class RocketChat:
    """The email-inbox API of one Rocket.Chat server, for one user.

    Use :func:`open_rocketchat` for the usual connect/close cycle, or::

        rc = RocketChat(make_http_client(url), TokenAuth(user_id=..., token=Secret(...)))
        await rc.connect()
        ...
        await rc.close()   # logs out only a session it opened itself

    Args:
        http: the HTTP client (see :func:`make_http_client`); not closed by ``close``.
        credentials: a token (verified with ``GET /api/v1/me``) or a password login.
        retry: retry and back-off policy.
        deadline: ``time.monotonic()`` value after which no wait or retry starts.
        sleep: the sleep function (tests may inject one).
        rng: uniform ``[0, 1)`` source for back-off jitter.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: Credentials,
        *,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._retry = retry or RetryPolicy()
        self.deadline = deadline
        self._sleep = sleep
        self._rng = rng
        self._user_id: str | None = None
        self._token: str | None = None
        self._own_session = False
        self._info: ServerInfo | None = None
        self._secrets: set[str] = set()
        if isinstance(credentials, TokenAuth):
            self._secrets.add(credentials.token.reveal())
        else:
            self._secrets.add(credentials.password.reveal())
            if credentials.code is not None:
                self._secrets.add(credentials.code.reveal())

    # ------------------------------------------------------------ session

    @property
    def info(self) -> ServerInfo:
        """What :meth:`connect` found.

        Raises:
            RuntimeError: before :meth:`connect`.
        """
        if self._info is None:
            raise RuntimeError("RocketChat.connect() has not run")
        return self._info

    async def connect(self) -> ServerInfo:
        """Authenticate, then read the server version.

        With a token, ``GET /api/v1/me`` is the very first request, so a bad token
        is reported before anything else. With a password, ``POST /api/v1/login``
        (with the 2FA code when given). Then ``GET /api/info`` gives the version and
        the dialect.

        Raises:
            RocketChatAuthError: credentials refused (``RocketChatTwoFactorError``
                when a code is needed).
            RocketChatCallError: any other failure.
        """
        if self._info is not None:
            return self._info
        if isinstance(self._credentials, TokenAuth):
            self._user_id = self._credentials.user_id
            self._token = self._credentials.token.reveal()
            me = await self._call("GET", "/api/v1/me")
            if me.get("_id") not in (None, self._user_id):
                raise self._error(
                    RocketChatAuthError,
                    "the token belongs to another user than ROCKETCHAT_USER_ID",
                    method="GET",
                    path="/api/v1/me",
                )
            username = me.get("username")
        else:
            username = await self._login(self._credentials)
        info = await self._call("GET", "/api/info")
        version = info.get("version")
        if not isinstance(version, str):
            nested = info.get("info")
            version = nested.get("version") if isinstance(nested, dict) else None
        assert self._user_id is not None
        self._info = ServerInfo(
            version=version if isinstance(version, str) else None,
            dialect=dialect_for(version if isinstance(version, str) else None),
            user_id=self._user_id,
            username=username if isinstance(username, str) else None,
            own_session=self._own_session,
            plain_http=self._http.base_url.scheme == "http",
        )
        logger.debug("connected to Rocket.Chat %s (%s)", self._info.version, self._info.dialect)
        return self._info

    async def _login(self, credentials: PasswordAuth) -> str | None:
        body: dict[str, Any] = {"user": credentials.user, "password": credentials.password.reveal()}
        if credentials.code is not None:
            # The body code wins over the X-2FA-Code header (spec §2).
            body["code"] = credentials.code.reveal()
        data = await self._call("POST", "/api/v1/login", json_body=body, auth=False)
        session = data.get("data")
        if not isinstance(session, dict):
            raise self._error(
                RocketChatProtocolError,
                "Rocket.Chat login answered without a session",
                method="POST",
                path="/api/v1/login",
            )
        user_id, token = session.get("userId"), session.get("authToken")
        if not (isinstance(user_id, str) and isinstance(token, str)):
            raise self._error(
                RocketChatProtocolError,
                "Rocket.Chat login answered without userId/authToken",
                method="POST",
                path="/api/v1/login",
            )
        self._secrets.add(token)
        self._user_id, self._token, self._own_session = user_id, token, True
        me = session.get("me")
        name = me.get("username") if isinstance(me, dict) else None
        return name if isinstance(name, str) else None

    async def close(self) -> None:
        """Log out, but only a session this client opened with a password login.

        A given token is never logged out: logout deletes the presented token, a
        personal access token included (spec §2). Logout failures are logged, not raised.
        """
        if self._own_session and self._token is not None:
            try:
                await self._call("POST", "/api/v1/logout", attempts=1)
            except RocketChatError as exc:
                logger.warning("Rocket.Chat logout failed: %s", exc)
        self._own_session = False
        self._token = None

    async def check_access(self) -> None:
        """Fail early when the user lacks ``manage-email-inbox`` (one list call)."""
        await self._call("GET", f"{_INBOX}.list", params={"count": "1"})

    # ------------------------------------------------------------ inboxes

    async def search_inbox(self, email: str) -> dict[str, Any] | None:
        """The inbox with exactly this address (case-sensitive), or ``None`` (spec §1.6)."""
        data = await self._call("GET", f"{_INBOX}.search", params={"email": email})
        inbox = data.get("emailInbox")
        if inbox is None:
            return None
        if not isinstance(inbox, dict):
            raise self._shape_error("GET", f"{_INBOX}.search")
        return inbox

    async def get_inbox(self, inbox_id: str) -> dict[str, Any]:
        """The inbox with this id (passwords in clear, spec §1.4).

        Raises:
            RocketChatNotFoundError: no such inbox.
        """
        data = await self._call("GET", f"{_INBOX}/{inbox_id}")
        data.pop("success", None)
        return data

    async def list_inboxes(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every inbox, paging through ``email-inbox.list`` (spec §1.3)."""
        return await self._paged(f"{_INBOX}.list", "emailInboxes", page_size)

    async def delete_inbox(self, inbox_id: str) -> None:
        """Delete an inbox (spec §1.5).

        Raises:
            RocketChatNotFoundError: no such inbox.
        """
        await self._call("DELETE", f"{_INBOX}/{inbox_id}")

    async def save_inbox(self, body: Mapping[str, Any]) -> str:
        """Create (no ``_id``) or update (with ``_id``) an inbox; return its id.

        The POST is never simply repeated: after a 5xx, a timeout or a transport
        error the inbox is read back by address, and the POST is retried only when
        that shows the write did not happen (spec §1.2: no upsert, a second create
        would be a duplicate).

        Args:
            body: from :func:`plan_body_for_create` or :func:`plan_body_for_update`.

        Raises:
            RocketChatUnavailableError: the server kept failing; ``write_state``
                says whether the write is known not to have happened.
            RocketChatRejectedError: refused (validation, duplicate, unknown id).
        """
        path = _INBOX
        for section in ("smtp", "imap"):
            value = body.get(section)
            if isinstance(value, Mapping) and isinstance(value.get("password"), str):
                self._secrets.add(value["password"])
        attempt = 0
        while True:
            attempt += 1
            try:
                data = await self._call("POST", path, json_body=dict(body), attempts=1)
                break
            except RocketChatUnavailableError as exc:
                # Never connected: nothing to read back, the write cannot have happened.
                applied = await self._read_back(body, exc) if exc.request_sent else None
                if applied is not None:
                    logger.debug("POST %s failed but the read-back shows it applied", path)
                    return applied
                delay = self._backoff(attempt)
                if attempt >= self._retry.attempts or not self._fits(delay):
                    why = (
                        "a read-back shows the inbox was not written"
                        if exc.request_sent
                        else "the request never reached the server, nothing was written"
                    )
                    raise self._error(
                        RocketChatUnavailableError,
                        f"{exc.message}; {why}",
                        write_state="not-applied",
                        request_sent=exc.request_sent,
                        status=exc.status,
                        method="POST",
                        path=path,
                    ) from exc
                await self._sleep(delay)
        inbox_id = data.get("_id")
        if isinstance(inbox_id, str) and inbox_id:
            return inbox_id
        # E0 (3.11-4.7) answers a create without the id (spec §1.2): find it.
        found = await self.search_inbox(str(body.get("email")))
        if found is not None and isinstance(found.get("_id"), str):
            return str(found["_id"])
        raise self._error(
            RocketChatProtocolError,
            "Rocket.Chat accepted the inbox but returned no id, and it cannot be found by address",
            method="POST",
            path=path,
        )

    async def _read_back(
        self, body: Mapping[str, Any], failure: RocketChatUnavailableError
    ) -> str | None:
        """Id of the inbox if ``body`` is already stored exactly, else ``None``."""
        try:
            found = await self.search_inbox(str(body.get("email")))
        except RocketChatError as exc:
            raise self._error(
                RocketChatUnavailableError,
                f"{failure.message}; the write may or may not have been applied "
                f"(reading it back failed: {exc})",
                write_state="unknown",
                status=failure.status,
                method="POST",
                path=_INBOX,
            ) from exc
        if found is None:
            return None
        wanted_id = body.get("_id")
        if wanted_id and found.get("_id") != wanted_id:
            return None
        if diff_inbox(found, body):
            return None
        found_id = found.get("_id")
        return found_id if isinstance(found_id, str) else None

    async def send_test(self, inbox_id: str) -> None:
        """Ask Rocket.Chat to send its test mail (spec §1.7).

        Success means *requested*: Rocket.Chat does not wait for the SMTP send.

        Raises:
            RocketChatRejectedError: ``inbox-not-found`` (inactive or not set up) or
                ``user-without-verified-email``.
            RocketChatNotFoundError: no such inbox.
        """
        await self._call("POST", f"{_INBOX}.send-test/{inbox_id}", attempts=1)

    # -------------------------------------------------------- departments

    async def list_departments(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every Omnichannel department (``GET /api/v1/livechat/department``)."""
        return await self._paged("/api/v1/livechat/department", "departments", page_size)

    async def resolve_department(self, name_or_id: str) -> str:
        """The id of a department given by id or by its exact name.

        Raises:
            RocketChatDepartmentError: no department has this id or name, or several
                have this name.
        """
        departments = await self.list_departments()
        if any(d.get("_id") == name_or_id for d in departments):
            return name_or_id
        named = [d for d in departments if d.get("name") == name_or_id]
        if len(named) == 1 and isinstance(named[0].get("_id"), str):
            return str(named[0]["_id"])
        if len(named) > 1:
            ids = ", ".join(str(d.get("_id")) for d in named)
            raise self._error(
                RocketChatDepartmentError,
                f"department name {name_or_id!r} is ambiguous: {len(named)} departments "
                f"have it ({ids})",
                hint="use the department id",
                field="department",
            )
        near = [
            str(d.get("name"))
            for d in departments
            if str(d.get("name", "")).casefold() == name_or_id.casefold()
        ]
        raise self._error(
            RocketChatDepartmentError,
            f"no Omnichannel department has the id or name {name_or_id!r}",
            hint=f"did you mean {near[0]!r}?" if near else "check the name in Omnichannel",
            field="department",
        )

    async def _paged(self, path: str, key: str, page_size: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset = 0
        while True:
            data = await self._call(
                "GET", path, params={"offset": str(offset), "count": str(page_size)}
            )
            page = data.get(key)
            if not isinstance(page, list):
                raise self._shape_error("GET", path)
            for item in page:
                if isinstance(item, dict) and str(item.get("_id")) not in seen:
                    seen.add(str(item.get("_id")))
                    items.append(item)
            offset += len(page)
            total = data.get("total")
            if not page or not isinstance(total, int) or offset >= total:
                return items

    # ------------------------------------------------------------ transport

    def _time_left(self) -> float | None:
        """Seconds before the deadline (``None``: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _fits(self, delay: float) -> bool:
        return self.deadline is None or time.monotonic() + delay <= self.deadline

    def _backoff(self, attempt: int) -> float:
        """Capped exponential back-off with jitter (half fixed, half random)."""
        base = min(self._retry.max_backoff, self._retry.backoff * 2.0 ** (attempt - 1))
        return base / 2 + base / 2 * self._rng()

    def _scrub(self, text: str) -> str:
        """Mask every known secret (longest first); a last line of defence."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= _MIN_SCRUB:
                text = text.replace(secret, "***")
        return text

    def _error(self, cls: type[RocketChatCallError], message: str, **kw: Any) -> Any:
        """Build an error of ``cls`` with a scrubbed message (the one place messages are made)."""
        for key in ("error", "hint"):
            if isinstance(kw.get(key), str):
                kw[key] = self._scrub(kw[key])
        return cls(self._scrub(message), **kw)

    def _shape_error(self, method: str, path: str) -> RocketChatProtocolError:
        error: RocketChatProtocolError = self._error(
            RocketChatProtocolError,
            f"Rocket.Chat answered {method} {path} with an unexpected JSON shape",
            method=method,
            path=path,
        )
        return error

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        auth: bool = True,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """One API call with retries (5xx/transport) and rate-limit waits.

        ``attempts`` of 1 disables the 5xx retry (writes); 429 is always waited out
        when the reset fits the deadline, because a limited request was not processed
        (spec §1.1: the limiter runs before the handler).
        """
        tries = attempts or self._retry.attempts
        attempt = 0
        waits = 0
        while True:
            attempt += 1
            try:
                response = await self._send(method, path, params, json_body, auth=auth)
                return self._interpret(method, path, response)
            except RocketChatRateLimitedError as exc:
                wait = self._rate_limit_wait(exc)
                if waits >= _MAX_RATE_LIMIT_WAITS or wait is None:
                    raise
                waits += 1
                attempt -= 1
                logger.debug("rate limited on %s %s; waiting %.2f s", method, path, wait)
                await self._sleep(wait)
            except RocketChatUnavailableError:
                delay = self._backoff(attempt)
                if attempt >= tries or not self._fits(delay):
                    raise
                logger.debug("%s %s failed; retrying in %.2f s", method, path, delay)
                await self._sleep(delay)

    def _rate_limit_wait(self, exc: RocketChatRateLimitedError) -> float | None:
        """Seconds to wait for the reset, or ``None`` when it does not fit."""
        seconds: float | None = None
        if exc.reset_at is not None:
            seconds = exc.reset_at - time.time()
        told = _WAIT_SECONDS.search(exc.error or "")
        if told is not None:
            # "You must wait N seconds" is relative: trust it over a skewed clock.
            relative = float(told["seconds"])
            if seconds is None or not 0 <= seconds <= relative + 1:
                seconds = relative
        if seconds is None:
            return None
        seconds = max(seconds, 0.0) + _RESET_MARGIN
        if seconds > self._retry.max_rate_limit_wait or not self._fits(seconds):
            return None
        return seconds

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        *,
        auth: bool,
    ) -> httpx.Response:
        """Send, following same-origin redirects only; map transport errors."""
        headers: dict[str, str] = {}
        if auth and self._token is not None and self._user_id is not None:
            headers["X-Auth-Token"] = self._token
            headers["X-User-Id"] = self._user_id
        url: httpx.URL | str = path
        current_method = method
        for _ in range(_MAX_REDIRECTS + 1):
            request = self._http.build_request(
                current_method,
                url,
                params=params,
                json=json_body,
                headers=headers,
            )
            started = time.perf_counter()
            try:
                # The whole exchange, body included, ends by the run's deadline: httpx's
                # timeout is per read, and a body trickling in would outlast any run.
                async with asyncio.timeout(self._time_left()):
                    response = await self._http.send(request, stream=True)
                    try:
                        complete = await _read_body(response)
                    finally:
                        await response.aclose()
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, method, path, request.url.host) from exc
            except TimeoutError:
                raise self._error(
                    RocketChatUnavailableError,
                    f"Rocket.Chat {method} {path}: no complete answer before the run's deadline",
                    hint="raise --timeout, or check the server's load",
                    method=method,
                    path=path,
                ) from None
            if not complete:
                status = response.status_code
                raise self._error(
                    RocketChatUnavailableError if status >= 500 else RocketChatProtocolError,
                    f"Rocket.Chat answered {method} {path} with HTTP {status} and a body over "
                    f"{_MAX_BODY // 2**20} MiB; too large, not read",
                    hint="check that the URL points at Rocket.Chat itself, not a proxy",
                    status=status,
                    method=method,
                    path=path,
                )
            logger.debug(
                "%s %s -> %s in %.0f ms",
                current_method,
                path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            location = response.headers.get("location")
            if not (response.is_redirect and location):
                return response
            target = request.url.join(location)
            if (target.scheme, target.host, target.port) != (
                request.url.scheme,
                request.url.host,
                request.url.port,
            ):
                # Never carry the token to another scheme or host (issue 3, item 1).
                port = f":{target.port}" if target.port else ""
                raise self._error(
                    RocketChatRedirectError,
                    f"Rocket.Chat redirected {method} {path} to {target.scheme}://"
                    f"{target.host}{port}; not followed, credentials are never sent to "
                    "another origin",
                    status=response.status_code,
                    hint="if that address is the right one, use it as the server URL",
                    method=method,
                    path=path,
                )
            if current_method != "GET" and response.status_code not in (307, 308):
                raise self._error(
                    RocketChatRedirectError,
                    f"Rocket.Chat redirected {method} {path} with HTTP "
                    f"{response.status_code}, which would drop the request body; not followed",
                    status=response.status_code,
                    method=method,
                    path=path,
                )
            url, params = target, None
        raise self._error(
            RocketChatRedirectError,
            f"too many redirects for {method} {path}",
            method=method,
            path=path,
        )

    def _transport_error(
        self, exc: httpx.HTTPError, method: str, path: str, host: str
    ) -> RocketChatCallError:
        """Translate an httpx exception; its text never holds headers or bodies."""
        tls = classify_tls_error(exc, server=host)
        if tls is not None:
            error: RocketChatCallError = self._error(
                RocketChatTlsError,
                f"TLS with Rocket.Chat failed: {tls.message}",
                hint="pass the CA that signed the server certificate with --ca-file",
                method=method,
                path=path,
            )
            return error
        if isinstance(exc, httpx.TimeoutException):
            what = f"timed out ({type(exc).__name__})"
        elif isinstance(exc, httpx.ConnectError):
            what = f"could not connect ({exc or type(exc).__name__})"
        else:
            what = f"transport error ({type(exc).__name__}: {exc})"
        error = self._error(
            RocketChatUnavailableError,
            f"Rocket.Chat {method} {path}: {what}",
            request_sent=not isinstance(exc, _NOT_SENT),
            method=method,
            path=path,
        )
        return error

    def _interpret(self, method: str, path: str, response: httpx.Response) -> dict[str, Any]:
        """Map an HTTP answer to data or to the most specific error (spec §1.8, §2)."""
        status = response.status_code
        where = {"status": status, "method": method, "path": path}
        data = _json_object(response)
        if data is None:
            body = _describe_body(response)
            if status >= 500:
                raise self._error(
                    RocketChatUnavailableError,
                    f"Rocket.Chat {method} {path} failed with HTTP {status} and {body}",
                    **where,
                )
            raise self._error(
                RocketChatProtocolError,
                f"expected JSON from Rocket.Chat for {method} {path}, got {body} (HTTP {status})",
                hint="check that the URL points at Rocket.Chat itself, not a proxy or login page",
                **where,
            )
        error = _error_text(data)
        if 200 <= status < 300:
            if data.get("success") is False or data.get("status") == "error":
                self._raise_rejected(method, path, error or "success: false", where)
            return data
        if status == 401:
            self._raise_unauthorized(path, data, error, where)
        if status == 403:
            permission = _permission_for(path)
            raise self._error(
                RocketChatPermissionError,
                f"the Rocket.Chat user lacks the {permission!r} permission "
                f"({method} {path}: HTTP 403)",
                permission=permission,
                error=error,
                hint=f"grant {permission!r} to a role of the user (the admin role has it)",
                **where,
            )
        if status == 404:
            raise self._error(
                RocketChatNotFoundError,
                f"Rocket.Chat {method} {path}: not found (HTTP 404)",
                error=error,
                **where,
            )
        if status == 429:
            reset = response.headers.get("x-ratelimit-reset")
            reset_at = float(reset) / 1000 if reset and reset.isdigit() else None
            raise self._error(
                RocketChatRateLimitedError,
                f"Rocket.Chat rate-limited {method} {path} (HTTP 429) and the limit does not "
                "reset within the deadline",
                reset_at=reset_at,
                error=error,
                hint="give the API user the api-bypass-rate-limit permission, or run fewer inboxes",
                **where,
            )
        if status >= 500:
            raise self._error(
                RocketChatUnavailableError,
                f"Rocket.Chat {method} {path} failed with HTTP {status}"
                + (f": {error}" if error else ""),
                error=error,
                **where,
            )
        self._raise_rejected(method, path, error or f"HTTP {status}", where)

    def _raise_unauthorized(
        self, path: str, data: Mapping[str, Any], error: str | None, where: dict[str, Any]
    ) -> NoReturn:
        code = data.get("error")
        details = data.get("details")
        method_2fa = details.get("method") if isinstance(details, dict) else None
        if code in ("totp-required", "totp-invalid", "totp-max-attempts"):
            how = {"email": " (a code was emailed to the user)", "totp": " (authenticator app)"}
            told = how.get(str(method_2fa), "")
            first = {
                "totp-required": f"Rocket.Chat requires a two-factor code for this login, "
                f"method {method_2fa or 'unknown'}{told}",
                "totp-invalid": "Rocket.Chat rejected the two-factor code",
                "totp-max-attempts": "too many wrong two-factor codes",
            }[str(code)]
            raise self._error(
                RocketChatTwoFactorError,
                f"{first}; pass the code with --2fa-code or ROCKETCHAT_2FA_CODE, or use a "
                "personal access token (ROCKETCHAT_USER_ID + ROCKETCHAT_AUTH_TOKEN), which "
                "needs no login",
                two_factor_method=str(method_2fa) if method_2fa else None,
                error=str(code),
                **where,
            )
        text = data.get("message") if isinstance(data.get("message"), str) else error
        if path == "/api/v1/login":
            raise self._error(
                RocketChatAuthError,
                f"Rocket.Chat login failed (HTTP 401: {text or 'Unauthorized'})",
                error=str(code) if code is not None else text,
                hint="check ROCKETCHAT_USER and ROCKETCHAT_PASSWORD",
                **where,
            )
        raise self._error(
            RocketChatAuthError,
            f"Rocket.Chat did not accept the credentials (HTTP 401: {text or 'Unauthorized'})",
            error=text,
            hint=(
                "check ROCKETCHAT_USER_ID and ROCKETCHAT_AUTH_TOKEN; the token may have "
                "expired or been deleted (a logout with a personal access token deletes it)"
                if isinstance(self._credentials, TokenAuth)
                else "the login session ended; run again"
            ),
            **where,
        )

    def _raise_rejected(
        self, method: str, path: str, error: str, where: dict[str, Any]
    ) -> NoReturn:
        what = f"Rocket.Chat rejected {method} {path}"
        match = _MATCH_ERROR.match(error)
        if match:
            field, hint = _validation_hint(match["what"], match["field"])
            raise self._error(
                RocketChatValidationError,
                f"{what}: {error}",
                error=error,
                field=field,
                hint=hint,
                **where,
            )
        if where.get("status") == 400 and (_AJV_REQUIRED.match(error) or error.startswith("must ")):
            field, hint = _ajv_hint(error)
            raise self._error(
                RocketChatValidationError,
                f"{what}: {error} (error-invalid-params)",
                error=error,
                field=field,
                hint=hint,
                **where,
            )
        if "E11000" in error:
            dup = _DUP_KEY.search(error)
            email = dup["email"].replace('\\"', '"') if dup else None
            raise self._error(
                RocketChatDuplicateEmailError,
                f"another inbox already uses the address {email or '(unknown)'} "
                "(E11000 duplicate key)",
                email=email,
                error=error,
                field="email",
                hint="addresses are unique and compared case-sensitively; update that inbox "
                "instead, or delete it",
                **where,
            )
        if error == "error-invalid-email-inbox":
            raise self._error(
                RocketChatUnknownInboxError,
                f"{what}: the inbox to update does not exist (error-invalid-email-inbox)",
                error=error,
                hint="it was probably deleted meanwhile; run again to create it",
                **where,
            )
        if error in ("error-not-allowed",) or "[error-not-allowed]" in error:
            # E0-E2 report a missing permission as 400 (spec §1.3, §1.8).
            raise self._error(
                RocketChatPermissionError,
                f"the Rocket.Chat user lacks the {_MANAGE!r} permission ({method} {path})",
                permission=_MANAGE,
                error=error,
                hint=f"grant {_MANAGE!r} to a role of the user",
                **where,
            )
        hints = {
            "inbox-not-found": "the inbox is inactive, or Rocket.Chat failed to set it up; "
            "check 'active' and the Rocket.Chat server log (logger EmailInbox)",
            "user-without-verified-email": "the API user needs a verified email address to "
            "receive the test mail",
            "Failed to create email inbox": "never send _id when creating an inbox",
        }
        raise self._error(
            RocketChatRejectedError,
            f"{what}: {error}",
            error=error,
            hint=hints.get(error),
            **where,
        )


@contextlib.asynccontextmanager
async def open_rocketchat(
    url: str,
    credentials: Credentials,
    *,
    ca_file: Path | None = None,
    allow_http: bool = False,
    http_timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    deadline: float | None = None,
) -> AsyncIterator[RocketChat]:
    """Connect (authenticate, read the version), yield the client, then close.

    The HTTP client is created here and closed on exit; a session opened by a
    password login is logged out, a given token never.

    Raises:
        ConfigError: the URL is refused (before any I/O).
        RocketChatCallError: connecting failed.
    """
    http = make_http_client(url, ca_file=ca_file, timeout=http_timeout, allow_http=allow_http)
    async with http:
        client = RocketChat(http, credentials, retry=retry, deadline=deadline)
        try:
            await client.connect()
            yield client
        finally:
            await client.close()
