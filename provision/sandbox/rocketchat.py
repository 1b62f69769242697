"""A Rocket.Chat test double: the email-inbox REST API, served over real HTTP.

It follows the checklist of ``shared/spec/rocketchat-email-inbox.md`` §6 in the E4
dialect (every 5.3-7.x release), with an E5 switch (AJV validation, spec §0/§1.2):

1. ``X-Auth-Token`` + ``X-User-Id`` on every route but ``/api/info`` and login; 401
   bodies in the 6.x form, or the 7.x form when ``version`` is 7 or later (§1.8).
2. Users without ``manage-email-inbox`` get 403 ``[error-unauthorized]`` (§1.8).
3. A fixed-window rate limiter per client IP + route + method for users without
   ``api-bypass-rate-limit``, with ``X-RateLimit-*`` headers (epoch ms) and the 429
   body (§1.8).
4. ``POST /api/v1/email-inbox`` is validated like Meteor's ``check()``: body keys
   in body order first, then missing keys in pattern order, first error only, the
   exact ``Match error: ...`` wording (§1.2).
5. Insert / update semantics: falsy ``_id`` inserts, truthy updates (unknown ->
   ``error-invalid-email-inbox``), ``department: "All"`` unsets, omitted optionals
   stay (§1.2).
6. A case-sensitive unique index on ``email`` answers with the E11000 text (§1.2).
7. GET/DELETE by id answer 404 ``Resource not found``; search answers 200 with
   ``emailInbox: null`` (§1.4-§1.6).
8. ``send-test`` answers 404 / ``inbox-not-found`` / ``user-without-verified-email``
   / 200 (§1.7).
9. Passwords come back in clear from every read (§1.3).
10. Optionally an inbox whose IMAP password is in :attr:`RocketChatDouble.bad_imap_passwords`
    switches itself off after :attr:`RocketChatDouble.self_disable_delay` seconds (§3.2, §4).

Tests drive it through seed helpers (:meth:`~RocketChatDouble.add_admin`,
:meth:`~RocketChatDouble.add_user`, :meth:`~RocketChatDouble.add_department`), fault
injection (:meth:`~RocketChatDouble.inject` with a :class:`Fault`) and the request
log (:attr:`~RocketChatDouble.requests`). :func:`start_rocketchat` serves it with
uvicorn in the running event loop on a socket bound before the server starts, so
clients can connect at once.

One deliberate difference from the spec text: Meteor's ``check()`` stores
``Match.Maybe(String)`` object keys as plain ``String`` patterns
(``optionalPatterns[key] = subPattern.pattern`` in meteor ``packages/check/match.js``),
so a ``null`` or a number in ``description``/``senderInfo``/``department``/``_id`` is
reported as ``Expected string, got null in field department``; the double follows
the Meteor source, not the ``Failed Match.OneOf ...`` example of §1.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import hashlib
import json
import logging
import math
import re
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

__all__ = [
    "ADMIN_PERMISSIONS",
    "Fault",
    "LoggedRequest",
    "RateLimit",
    "RocketChatDouble",
    "RunningRocketChat",
    "SentTest",
    "User",
    "meteor_check",
    "start_rocketchat",
]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]

#: What the ``admin`` role grants that the double looks at
#: (``apps/meteor/app/authorization/server/constant/permissions.ts``).
ADMIN_PERMISSIONS: Final = frozenset(
    {
        "manage-email-inbox",
        "api-bypass-rate-limit",
        "view-livechat-departments",
        "manage-livechat-departments",
        "create-personal-access-tokens",
    }
)

_MANAGE = "manage-email-inbox"
_DEPARTMENT_VIEW = ("view-livechat-departments", "view-l-room")
_LOGGED_HEADERS = (
    "x-auth-token",
    "x-user-id",
    "x-2fa-code",
    "authorization",
    "cookie",
    "content-type",
    "host",
    "user-agent",
    "x-real-ip",
)
_NOT_LOGGED_IN = "You must be logged in to do this."
_FORBIDDEN = "User does not have the permissions required for this action [error-unauthorized]"
_METEOR_ID_CHARS = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
_HTML_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def _meteor_id() -> str:
    """A 17-character id like Meteor's ``Random.id()`` (users, departments)."""
    return "".join(secrets.choice(_METEOR_ID_CHARS) for _ in range(17))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    """Dates as the REST API renders them: ``2024-10-15T12:00:00.000Z`` (§1.3)."""
    return (
        value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{value.microsecond // 1000:03d}Z"
    )


def _to_json(value: Any) -> Any:
    """Deep copy for the wire: datetimes become ISO strings."""
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value


# --------------------------------------------------------------------------- values


@dataclass(slots=True, kw_only=True)
class User:
    """A Rocket.Chat user as far as the double cares.

    Attributes:
        id: the user id (``X-User-Id``).
        username: login name.
        password: plain password for ``/api/v1/login`` (``None``: cannot log in).
        email: first email address, ``None`` for none.
        email_verified: whether that address is verified (send-test needs it, §1.7).
        roles: role names shown by ``/api/v1/me``.
        permissions: permissions the double checks.
        two_factor: email 2FA on (on by default in Rocket.Chat, §2).
        two_factor_code: the code the double "emails".
        tokens: token -> ``"login"`` or ``"personalAccessToken"`` (both live in
            ``services.resume.loginTokens``, §2).
    """

    id: str
    username: str
    password: str | None = None
    email: str | None = None
    email_verified: bool = True
    roles: list[str] = field(default_factory=lambda: ["user"])
    permissions: set[str] = field(default_factory=set)
    two_factor: bool = False
    two_factor_code: str = "246810"
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """The first token of the user (seeded users get one)."""
        return next(iter(self.tokens))

    def me(self) -> dict[str, Any]:
        """The ``/api/v1/me`` / login ``me`` document."""
        emails = [{"address": self.email, "verified": self.email_verified}] if self.email else []
        return {
            "_id": self.id,
            "username": self.username,
            "name": self.username,
            "emails": emails,
            "status": "online",
            "active": True,
            "roles": list(self.roles),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """Rate limiter settings (``API_Enable_Rate_Limiter_Limit_*_Default``, §1.8)."""

    calls: int = 10
    interval_ms: int = 60_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """A scripted misbehaviour for the next request(s) of a route.

    Attributes:
        status: HTTP status to answer with.
        body: body to answer with (``None``: a JSON error body).
        content_type: content type of ``body``.
        headers: extra response headers (``Location`` for redirects).
        delay: seconds to wait before answering (released early by ``close``).
        apply: run the real handler first (its writes stay), then answer with the fault.
        passthrough: after ``delay``, answer normally (a slow but correct server).
    """

    status: int = 500
    body: bytes | None = None
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    apply: bool = False
    passthrough: bool = False

    @classmethod
    def error(cls, status: int = 500, *, apply: bool = False) -> Fault:
        """A JSON error with the given 5xx status."""
        body = json.dumps({"success": False, "error": _REASONS.get(status, "error")}).encode()
        return cls(status=status, body=body, apply=apply)

    @classmethod
    def html(cls, status: int = 502, *, apply: bool = False) -> Fault:
        """An HTML error page, as a reverse proxy sends it."""
        page = _HTML_PAGE.format(status=status, reason=_REASONS.get(status, "Error"))
        return cls(status=status, body=page.encode(), content_type="text/html", apply=apply)

    @classmethod
    def slow(cls, delay: float) -> Fault:
        """Answer correctly, but only after ``delay`` seconds (processed after the wait)."""
        return cls(delay=delay, passthrough=True)

    @classmethod
    def unsuccessful(cls, message: str = "error-unexpected", *, status: int = 200) -> Fault:
        """HTTP 200 (or ``status``) with ``success: false``."""
        return cls(status=status, body=json.dumps({"success": False, "error": message}).encode())

    @classmethod
    def redirect(cls, location: str, *, status: int = 302) -> Fault:
        """A redirect to ``location`` (absolute or relative)."""
        return cls(
            status=status, body=b"", content_type="text/plain", headers=(("location", location),)
        )

    def response(self) -> _Response:
        body = self.body
        if body is None:
            body = json.dumps(
                {"success": False, "error": _REASONS.get(self.status, "error")}
            ).encode()
        return _Response(self.status, body, [("content-type", self.content_type), *self.headers])


@dataclass(slots=True, kw_only=True)
class LoggedRequest:
    """One request as the double saw it.

    Attributes:
        method: HTTP method.
        path: path without query.
        query: query parameters in order.
        headers: a subset of the request headers (lower-case names), incl.
            ``x-auth-token`` and ``x-user-id``.
        body: the parsed JSON body (``None`` when absent or not JSON).
        raw_body: the body bytes.
        client: client IP.
        at: arrival time (``time.time()``).
        status: the status answered.
    """

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    client: str
    at: float
    status: int | None = None

    @property
    def token(self) -> str | None:
        """The ``X-Auth-Token`` presented, if any."""
        return self.headers.get("x-auth-token")

    @property
    def user_id(self) -> str | None:
        """The ``X-User-Id`` presented, if any."""
        return self.headers.get("x-user-id")

    def param(self, name: str) -> str | None:
        """First query parameter called ``name``."""
        return next((v for k, v in self.query if k == name), None)


@dataclass(frozen=True, slots=True)
class SentTest:
    """A send-test that would have sent a mail (§1.7: fire and forget)."""

    inbox_id: str
    to: str


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> _Response:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return cls(status, body, [("content-type", "application/json"), *headers])


class _Abort(Exception):
    """Stop processing and answer with ``response``."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


def _failure(error: str, *, status: int = 400, **extra: Any) -> _Abort:
    """``API.v1.failure``: ``{"success": false, "error": ...}`` (§1.1)."""
    return _Abort(_Response.json(status, {"success": False, "error": error, **extra}))


@dataclass(slots=True, kw_only=True)
class _Request:
    log: LoggedRequest
    headers: dict[str, str]
    json_error: bool = False
    coerced: Any = None

    @property
    def body(self) -> Any:
        return self.log.body


Handler = Callable[[_Request, User | None, dict[str, str]], Awaitable[_Response]]
Validator = Callable[[_Request], None]


@dataclass(slots=True)
class _Method:
    handler: Handler
    auth: bool = True
    permissions: tuple[str, ...] = ()
    e5_validate: Validator | None = None


@dataclass(slots=True)
class _Route:
    template: str
    pattern: re.Pattern[str]
    methods: dict[str, _Method]


@dataclass(slots=True)
class _Armed:
    method: str
    path: str
    fault: Fault
    remaining: int


@dataclass(slots=True)
class _Bucket:
    reset_ms: float
    count: int = 0


# --------------------------------------------------------------- Meteor check() (E4)


@dataclass(frozen=True, slots=True)
class _Maybe:
    pattern: Any


@dataclass(frozen=True, slots=True)
class _Including:
    fields: dict[str, Any]


# Pattern of apps/meteor/app/api/server/v1/email-inbox.ts (E4, spec §1.2); atoms are
# the JavaScript ``typeof`` names.
_E4_INBOX: Final[dict[str, Any]] = {
    "_id": _Maybe("string"),
    "active": "boolean",
    "name": "string",
    "email": "string",
    "description": _Maybe("string"),
    "senderInfo": _Maybe("string"),
    "department": _Maybe("string"),
    "smtp": _Including(
        {
            "server": "string",
            "port": "number",
            "username": "string",
            "password": "string",
            "secure": "boolean",
        }
    ),
    "imap": _Including(
        {
            "server": "string",
            "port": "number",
            "username": "string",
            "password": "string",
            "secure": "boolean",
            "maxRetries": "number",
        }
    ),
}
# Reserved words that _prependPath quotes (meteor packages/check/match.js).
_JS_KEYWORDS = frozenset(
    [
        "do",
        "if",
        "in",
        "for",
        "let",
        "new",
        "try",
        "var",
        "case",
        "else",
        "enum",
        "eval",
        "false",
        "null",
        "this",
        "true",
        "void",
        "with",
        "break",
        "catch",
        "class",
        "const",
        "super",
        "throw",
        "while",
        "yield",
        "delete",
        "export",
        "import",
        "public",
        "return",
        "static",
        "switch",
        "typeof",
        "default",
        "extends",
        "finally",
        "package",
        "private",
        "continue",
        "debugger",
        "function",
        "arguments",
        "interface",
        "protected",
        "implements",
        "instanceof",
    ]
)


def _typeof(value: Any) -> str:
    """JavaScript's ``typeof`` for a JSON value, with ``null`` spelled out."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def _js_keys(value: dict[str, Any]) -> list[str]:
    """Key order of ``for (key in obj)``: array-index keys first, ascending."""
    index = sorted((k for k in value if k.isdigit() and str(int(k)) == k), key=int)
    return index + [k for k in value if k not in index]


def _prepend_path(key: str, base: str) -> str:
    """``_prependPath`` of meteor ``packages/check/match.js``."""
    if re.fullmatch(r"[0-9]+", key):
        key = f"[{key}]"
    elif not re.fullmatch(r"[a-z_$][0-9a-z_$]*", key, re.IGNORECASE) or key in _JS_KEYWORDS:
        key = json.dumps([key])
    if base and not base.startswith("["):
        return f"{key}.{base}"
    return key + base


def _match(value: Any, pattern: Any) -> tuple[str, str] | None:
    """``testSubtree`` of meteor's ``check``: ``None`` or ``(message, path)``."""
    if isinstance(pattern, str):
        if _typeof(value) == pattern:
            return None
        return f"Expected {pattern}, got {_typeof(value)}", ""
    fields = pattern.fields if isinstance(pattern, _Including) else pattern
    if value is None:
        return "Expected object, got null", ""
    if not isinstance(value, dict):
        if isinstance(value, list):
            return "Expected plain object", ""
        return f"Expected object, got {_typeof(value)}", ""
    required = {k: p for k, p in fields.items() if not isinstance(p, _Maybe)}
    # Match.Maybe inside an object: the *inner* pattern is used (match.js
    # ``optionalPatterns[key] = subPattern.pattern``), so null is refused.
    optional = {k: p.pattern for k, p in fields.items() if isinstance(p, _Maybe)}
    for key in _js_keys(value):
        if key in required:
            found = _match(value[key], required.pop(key))
        elif key in optional:
            found = _match(value[key], optional[key])
        elif isinstance(pattern, _Including):
            continue
        else:
            return "Unknown key", key
        if found is not None:
            return found[0], _prepend_path(key, found[1])
    if required:
        return f"Missing key '{next(iter(required))}'", ""
    return None


def meteor_check(value: Any, pattern: Any) -> str | None:
    """Run Meteor's ``check()`` and return its ``Match error`` text, or ``None``."""
    found = _match(value, pattern)
    if found is None:
        return None
    message, path = found
    return f"Match error: {message}" + (f" in field {path}" if path else "")


# ---------------------------------------------------------------------- AJV (E5)

_E5_SERVER: Final[dict[str, Any]] = {
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
# isEmailInbox in packages/rest-typings/src/v1/email-inbox.ts (stored revision 0a79e1ed, §1.2).
_E5_INBOX: Final[dict[str, Any]] = {
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
        "smtp": _E5_SERVER,
        "imap": {
            **_E5_SERVER,
            "properties": {**_E5_SERVER["properties"], "maxRetries": {"type": "number"}},
        },
    },
}
_E5_SEARCH: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["email"],
    "properties": {"email": {"type": "string"}},
}
_E5_LIST: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": [],
    "properties": {k: {"type": "string"} for k in ("count", "offset", "sort", "query")},
}
_NUMERIC = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _ajv_coerce(value: Any, wanted: str) -> tuple[bool, Any]:
    """AJV ``coerceTypes: true`` for scalars (``packages/rest-typings/src/v1/Ajv.ts``)."""
    have = _typeof(value)
    if have == wanted:
        return True, value
    if wanted == "number":
        if have == "string" and _NUMERIC.match(value):
            number = float(value)
            return True, int(number) if number.is_integer() else number
        if have == "boolean":
            return True, int(value)
        if have == "null":
            return True, 0
    elif wanted == "string":
        if have == "number":
            return True, str(int(value)) if float(value).is_integer() else repr(value)
        if have == "boolean":
            return True, "true" if value else "false"
        if have == "null":
            return True, ""
    elif wanted == "boolean":
        if value in ("true", "false"):
            return True, value == "true"
        if have == "number" and value in (0, 1):
            return True, bool(value)
        if have == "null":
            return True, False
    return False, value


def _ajv(value: Any, schema: Mapping[str, Any], *, password_min: int | None = None) -> str | None:
    """First AJV error message for ``value`` (coerced in place), or ``None``.

    AJV evaluates ``required`` before ``additionalProperties`` before ``properties``
    (keyword order of its vocabularies) and stops at the first error (§1.2 E5).
    """
    if schema["type"] == "object":
        if not isinstance(value, dict):
            return "must be object"
        for key in schema["required"]:
            if key not in value:
                return f"must have required property '{key}'"
        props: Mapping[str, Any] = schema["properties"]
        if schema.get("additionalProperties") is False and any(k not in props for k in value):
            return "must NOT have additional properties"
        for key, sub in props.items():
            if key not in value:
                continue
            if sub.get("nullable") and value[key] is None:
                continue
            if sub["type"] == "object":
                error = _ajv(value[key], sub, password_min=password_min)
            else:
                ok, coerced = _ajv_coerce(value[key], sub["type"])
                if not ok:
                    return f"must be {sub['type']}"
                value[key] = coerced
                error = None
                if key == "password" and password_min is not None and len(coerced) < password_min:
                    error = f"must NOT have fewer than {password_min} characters"
            if error is not None:
                return error
    return None


# ----------------------------------------------------------------------- the double


class RocketChatDouble:
    """An in-memory Rocket.Chat serving the email-inbox API as a raw ASGI app.

    Every setting is a plain attribute that tests may change at any time.

    Attributes:
        version: what ``/api/info`` reports; 7.x or later switches 401 and login
            bodies to their 7.x form, before 4.8 create answers without ``_id``, 6.10
            or later answers "Failed to create email inbox" for an empty ``_id`` (§1.2).
        e5: validate with AJV instead of ``check()`` (§0 E5).
        e5_password_min: E5 ``minLength`` on passwords (§1.2, unconfirmed upstream).
        rate_limit: limiter settings, ``None`` to turn it off.
        list_count_limit: ``API_Upper_Count_Limit`` (§1.3).
        database: database name shown in E11000 messages.
        bad_imap_passwords: IMAP passwords that make an active inbox switch itself off.
        self_disable_delay: seconds until that happens (``loop.call_later``).
        requests: every request seen, in order.
        logouts: ``(user id, token, token kind)`` of every successful logout.
        sent_tests: send-test requests that would have sent a mail.
        self_disabled: ids of inboxes that switched themselves off.
    """

    def __init__(
        self,
        *,
        version: str = "6.13.0",
        e5: bool = False,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._routes = self._build_routes()
        self._initial = (version, e5, rate_limit if rate_limit is not None else RateLimit())
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._closing: asyncio.Event | None = None
        self._answered: asyncio.Condition | None = None
        self._generation = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything (users, inboxes, faults, logs) and restore the settings."""
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self._waiters.clear()
        self.version, self.e5, self.rate_limit = self._initial
        self.e5_password_min: int | None = None
        self.list_count_limit = 100
        self.database = "rocketchat"
        self.bad_imap_passwords: set[str] = set()
        self.self_disable_delay = 0.0
        self.users: dict[str, User] = {}
        self.inboxes: dict[str, dict[str, Any]] = {}
        self.departments: list[dict[str, Any]] = []
        self.requests: list[LoggedRequest] = []
        self.logouts: list[tuple[str, str, str]] = []
        self.sent_tests: list[SentTest] = []
        self.self_disabled: list[str] = []
        if self._closing is not None:
            self._closing.set()  # release slow responses still pending
        self._closing = None
        self._generation += 1
        self._faults: list[_Armed] = []
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}

    # ------------------------------------------------------------------ seeding

    def add_user(
        self,
        username: str,
        password: str | None = None,
        *,
        admin: bool = False,
        permissions: Iterable[str] = (),
        email: str | None = None,
        email_verified: bool = True,
        two_factor: bool = False,
        token: str | None = None,
        user_id: str | None = None,
    ) -> User:
        """Add a user with one personal access token.

        Args:
            username: login name.
            password: password for ``/api/v1/login``.
            admin: give the ``admin`` role and :data:`ADMIN_PERMISSIONS`.
            permissions: further permissions.
            email: the user's address (default ``<username>@example.com``).
            email_verified: whether that address is verified.
            two_factor: require an emailed 2FA code on password logins.
            token: the personal access token (random when ``None``).
            user_id: the id (random when ``None``).

        Returns:
            The stored user; ``user.token`` is its personal access token.
        """
        user = User(
            id=user_id or _meteor_id(),
            username=username,
            password=password,
            email=email if email is not None else f"{username}@example.com",
            email_verified=email_verified,
            roles=["admin", "user"] if admin else ["user"],
            permissions=set(ADMIN_PERMISSIONS if admin else ()) | set(permissions),
            two_factor=two_factor,
        )
        user.tokens[token or secrets.token_urlsafe(32)] = "personalAccessToken"
        self.users[user.id] = user
        return user

    def add_admin(self, username: str = "admin", password: str | None = None, **kw: Any) -> User:
        """Add an admin (``manage-email-inbox``, ``api-bypass-rate-limit``, ...)."""
        return self.add_user(username, password, admin=True, **kw)

    def add_token(self, user: User, *, kind: str = "login") -> str:
        """Give ``user`` another token (``"login"`` or ``"personalAccessToken"``) and return it."""
        token = secrets.token_urlsafe(32)
        user.tokens[token] = kind
        return token

    def add_department(self, name: str, *, department_id: str | None = None) -> dict[str, Any]:
        """Add an Omnichannel department and return it."""
        department = {
            "_id": department_id or _meteor_id(),
            "name": name,
            "enabled": True,
            "showOnRegistration": True,
            "showOnOfflineForm": True,
            "email": "",
            "description": "",
            "numAgents": 0,
        }
        self.departments.append(department)
        return department

    def add_inbox(self, body: Mapping[str, Any], *, created_by: User | None = None) -> str:
        """Store an inbox directly (no validation) and return its id."""
        now = _now()
        inbox_id = secrets.token_hex(12)
        by = {"_id": created_by.id, "username": created_by.username} if created_by else None
        self.inboxes[inbox_id] = {
            "_id": inbox_id,
            **copy.deepcopy(dict(body)),
            "_createdAt": now,
            "_updatedAt": now,
            "_createdBy": by,
        }
        return inbox_id

    # ------------------------------------------------------------ test helpers

    def inject(self, method: str, path: str, fault: Fault, *, times: int = 1) -> None:
        """Make the next ``times`` requests of a route misbehave.

        Args:
            method: HTTP method, or ``"*"``.
            path: the request path (``/api/v1/email-inbox``) or a route template
                (``/api/v1/email-inbox/:_id``).
            fault: what to do.
            times: how many requests it applies to.
        """
        self._faults.append(_Armed(method.upper(), path, fault, times))

    def requests_to(self, method: str, path: str) -> list[LoggedRequest]:
        """The logged requests with this method and path."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    async def wait_answered(self, method: str, path: str, count: int) -> list[LoggedRequest]:
        """Wait until ``count`` requests with this method and path have been answered.

        A synchronisation point for tests (a slow request that a client gave up on
        still completes on the server); put a timeout around it.
        """
        if self._answered is None:
            self._answered = asyncio.Condition()

        def answered() -> bool:
            done = [r for r in self.requests_to(method, path) if r.status is not None]
            return len(done) >= count

        async with self._answered:
            await self._answered.wait_for(answered)
        return self.requests_to(method, path)

    @property
    def logged_out_tokens(self) -> list[str]:
        """Tokens deleted by ``/api/v1/logout``."""
        return [token for _, token, _ in self.logouts]

    def stored(self, inbox_id: str) -> dict[str, Any]:
        """A stored inbox as the API would return it (dates as strings)."""
        return dict(_to_json(self.inboxes[inbox_id]))

    async def wait_self_disabled(self, inbox_id: str) -> None:
        """Return once the inbox has switched itself off (§6.10)."""
        if inbox_id in self.self_disabled:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(inbox_id, []).append(future)
        await future

    def shutdown(self) -> None:
        """Cancel pending side effects and release slow responses (they answer 503)."""
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._generation += 1
        if self._closing is not None:
            self._closing.set()

    # -------------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point (HTTP only; lifespan is off)."""
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        request = self._parse(scope, raw)
        self.requests.append(request.log)
        response = await self._dispatch(request)
        request.log.status = response.status
        if self._answered is not None:
            async with self._answered:
                self._answered.notify_all()
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    def _parse(self, scope: Scope, raw: bytes) -> _Request:
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            headers[key.decode("latin-1").lower()] = value.decode("latin-1")
        client = headers.get("x-real-ip") or (scope.get("client") or ("unknown", 0))[0]
        body: Any = None
        json_error = False
        if raw.strip():
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                json_error = True
        log = LoggedRequest(
            method=scope["method"].upper(),
            path=scope["path"],
            query=parse_qsl(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            ),
            headers={k: v for k, v in headers.items() if k in _LOGGED_HEADERS},
            body=body,
            raw_body=raw,
            client=str(client),
            at=time.time(),
        )
        return _Request(log=log, headers=headers, json_error=json_error)

    def _take_fault(self, request: _Request, route: _Route | None) -> Fault | None:
        for armed in self._faults:
            if armed.method not in ("*", request.log.method):
                continue
            if armed.path != request.log.path and (route is None or armed.path != route.template):
                continue
            armed.remaining -= 1
            if armed.remaining <= 0:
                self._faults.remove(armed)
            return armed.fault
        return None

    async def _pause(self, seconds: float) -> None:
        if self._closing is None:
            self._closing = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _dispatch(self, request: _Request) -> _Response:
        route, params = self._route(request.log.path)
        fault = self._take_fault(request, route)
        if fault is not None and fault.delay > 0:
            generation = self._generation
            await self._pause(fault.delay)
            if generation != self._generation:
                # Reset (or shut down) meanwhile: never touch the new state.
                return Fault.error(503).response()
        if fault is not None and not (fault.apply or fault.passthrough):
            return fault.response()
        response = await self._process(request, route, params)
        if fault is not None and fault.apply and not fault.passthrough:
            return fault.response()
        return response

    def _route(self, path: str) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found:
                return route, found.groupdict()
        return None, {}

    async def _process(
        self, request: _Request, route: _Route | None, params: dict[str, str]
    ) -> _Response:
        if route is None:
            # Not in the spec: Restivus's answer for an unknown endpoint.
            return _Response.json(
                404, {"status": "error", "message": "API endpoint does not exist"}
            )
        method = route.methods.get(request.log.method)
        if method is None:
            # 6.x Restivus: undefined method on a defined route -> 405 + Allow (§1.8).
            allow = ", ".join(route.methods)
            return _Response.json(
                405,
                {"status": "error", "message": "API endpoint does not exist"},
                [("allow", allow)],
            )
        limit_headers: Headers = []
        try:
            if request.json_error:
                raise _failure("Invalid JSON body")
            # E5 typed routes validate before authenticating (§1.1).
            if self.e5 and method.e5_validate is not None:
                method.e5_validate(request)
            user = self._authenticate(request) if method.auth else None
            limit_headers = self._rate_limit(request, route, user)
            if method.permissions and (
                user is None or not any(p in user.permissions for p in method.permissions)
            ):
                raise _failure(_FORBIDDEN, status=403)
            response = await method.handler(request, user, params)
        except _Abort as stop:
            response = stop.response
        response.headers.extend(limit_headers)
        return response

    # ------------------------------------------------------------ auth and limits

    def _seven(self) -> bool:
        return _version_tuple(self.version) >= (7,)

    def _authenticate(self, request: _Request) -> User:
        token = request.headers.get("x-auth-token")
        user = self.users.get(request.headers.get("x-user-id", ""))
        if token and user is not None and token in user.tokens:
            return user
        body: dict[str, Any] = {"status": "error", "message": _NOT_LOGGED_IN}
        if self._seven():
            # 7.x ApiClass keeps the 6.x keys and adds success/error (§1.8).
            body = {"success": False, "error": _NOT_LOGGED_IN, **body}
        raise _Abort(_Response.json(401, body))

    def _rate_limit(self, request: _Request, route: _Route, user: User | None) -> Headers:
        """Fixed window per IP + route + method, as Meteor's DDPRateLimiter (§1.8)."""
        limit = self.rate_limit
        if limit is None or (user is not None and "api-bypass-rate-limit" in user.permissions):
            return []
        now_ms = time.time() * 1000
        key = (request.log.client, route.template, request.log.method)
        bucket = self._buckets.get(key)
        if bucket is None or now_ms >= bucket.reset_ms:
            bucket = self._buckets[key] = _Bucket(reset_ms=now_ms + limit.interval_ms)
        bucket.count += 1
        headers = [
            ("x-ratelimit-limit", str(limit.calls)),
            ("x-ratelimit-remaining", str(max(limit.calls - bucket.count, 0))),
            ("x-ratelimit-reset", str(int(bucket.reset_ms))),
        ]
        if bucket.count > limit.calls:
            seconds = math.ceil((bucket.reset_ms - now_ms) / 1000)
            message = (
                "Error, too many requests. Please slow down. You must wait "
                f"{seconds} seconds before trying this endpoint again. [error-too-many-requests]"
            )
            raise _Abort(_Response.json(429, {"success": False, "error": message}, headers))
        return headers

    # ----------------------------------------------------------------- routes

    def _build_routes(self) -> list[_Route]:
        def route(template: str, methods: dict[str, _Method]) -> _Route:
            regex = re.escape(template).replace(":_id", "(?P<_id>[^/]+)")
            return _Route(template, re.compile(regex), methods)

        manage = (_MANAGE,)
        return [
            route("/api/info", {"GET": _Method(self._info, auth=False)}),
            route("/api/v1/login", {"POST": _Method(self._login, auth=False)}),
            route("/api/v1/logout", {"POST": _Method(self._logout), "GET": _Method(self._logout)}),
            route("/api/v1/me", {"GET": _Method(self._me)}),
            route(
                "/api/v1/email-inbox",
                {"POST": _Method(self._save, permissions=manage, e5_validate=self._e5_body)},
            ),
            route(
                "/api/v1/email-inbox.list",
                {"GET": _Method(self._list, permissions=manage, e5_validate=self._e5_list)},
            ),
            route(
                "/api/v1/email-inbox.search",
                {"GET": _Method(self._search, permissions=manage, e5_validate=self._e5_search)},
            ),
            route(
                "/api/v1/email-inbox.send-test/:_id",
                {"POST": _Method(self._send_test, permissions=manage)},
            ),
            route(
                "/api/v1/email-inbox/:_id",
                {
                    "GET": _Method(self._get, permissions=manage),
                    "DELETE": _Method(self._delete, permissions=manage),
                },
            ),
            route(
                "/api/v1/livechat/department",
                {"GET": _Method(self._departments, permissions=_DEPARTMENT_VIEW)},
            ),
        ]

    async def _info(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        return _Response.json(200, {"version": self.version, "success": True})

    async def _login(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        """``POST /api/v1/login`` with the body forms and failures of spec §2."""
        body = request.body if isinstance(request.body, dict) else {}
        seven = {"success": False} if self._seven() else {}
        unauthorized = _Abort(
            _Response.json(
                401,
                {**seven, "status": "error", "error": "Unauthorized", "message": "Unauthorized"},
            )
        )
        if isinstance(body.get("resume"), str):
            found = next((u for u in self.users.values() if body["resume"] in u.tokens), None)
            if found is None:
                raise unauthorized
            return self._logged_in(found)
        found = self._find_login_user(body)
        if found is None or found.password is None:
            raise unauthorized
        if not _password_ok(body.get("password"), found.password):
            raise _Abort(
                _Response.json(
                    401, {**seven, "status": "error", "error": 403, "message": "Incorrect password"}
                )
            )
        if found.two_factor:
            # Email 2FA, on by default (§2); the body code wins over X-2FA-Code.
            code = body.get("code") or request.headers.get("x-2fa-code")
            details = {
                "method": "email",
                "availableMethods": ["email"],
                "codeGenerated": True,
                "emailOrUsername": found.email or found.username,
            }
            if not code:
                raise _Abort(
                    _Response.json(
                        401,
                        {
                            **seven,
                            "status": "error",
                            "error": "totp-required",
                            "message": "TOTP Required",
                            "details": details,
                        },
                    )
                )
            if code != found.two_factor_code:
                raise _Abort(
                    _Response.json(
                        401,
                        {
                            **seven,
                            "status": "error",
                            "error": "totp-invalid",
                            "message": "TOTP Invalid",
                            "details": details,
                        },
                    )
                )
        return self._logged_in(found)

    def _find_login_user(self, body: Mapping[str, Any]) -> User | None:
        by_name: str | None = None
        by_email: str | None = None
        given = body.get("user")
        if isinstance(given, str):
            # A "user" containing "@" is treated as an email (§2).
            by_email, by_name = (given, None) if "@" in given else (None, given)
        elif isinstance(given, dict):
            by_name, by_email = given.get("username"), given.get("email")
        else:
            by_name, by_email = body.get("username"), body.get("email")
        for candidate in self.users.values():
            if by_name is not None and candidate.username == by_name:
                return candidate
            if by_email is not None and candidate.email == by_email:
                return candidate
        return None

    def _logged_in(self, user: User) -> _Response:
        token = secrets.token_urlsafe(32)
        user.tokens[token] = "login"
        payload: dict[str, Any] = {
            "status": "success",
            "data": {"userId": user.id, "authToken": token, "me": user.me()},
        }
        if self._seven():
            payload["success"] = True
        return _Response.json(200, payload)

    async def _logout(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        """Deletes the presented token, a personal access token included (§2)."""
        assert user is not None
        token = request.headers["x-auth-token"]
        kind = user.tokens.pop(token)
        self.logouts.append((user.id, token, kind))
        return _Response.json(
            200, {"status": "success", "data": {"message": "You've been logged out!"}}
        )

    async def _me(self, request: _Request, user: User | None, params: dict[str, str]) -> _Response:
        assert user is not None
        return _Response.json(200, {**user.me(), "success": True})

    # ------------------------------------------------------------ email inboxes

    def _e5_body(self, request: _Request) -> None:
        body = copy.deepcopy(request.body) if request.body is not None else {}
        error = _ajv(body, _E5_INBOX, password_min=self.e5_password_min)
        if error is not None:
            raise _failure(error, errorType="error-invalid-params")
        request.coerced = body

    def _e5_query(self, request: _Request, schema: Mapping[str, Any]) -> None:
        error = _ajv(dict(request.log.query), schema)
        if error is not None:
            raise _failure(error, errorType="error-invalid-params")

    def _e5_search(self, request: _Request) -> None:
        self._e5_query(request, _E5_SEARCH)

    def _e5_list(self, request: _Request) -> None:
        self._e5_query(request, _E5_LIST)

    async def _save(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        """``POST /api/v1/email-inbox``: insert or update (§1.2)."""
        assert user is not None
        if self.e5:
            body = copy.deepcopy(request.coerced)
            # E5 handler default for the now optional maxRetries (§1.2).
            body["imap"].setdefault("maxRetries", 5)
        else:
            body = copy.deepcopy(request.body) if request.body is not None else {}
            error = meteor_check(body, _E4_INBOX)
            if error is not None:
                raise _failure(error)
        if body.get("_id"):
            inbox_id: Any = self._update(body)
        else:
            inbox_id = self._insert(body, user)
            # The stored document keeps the explicit empty/null _id; 6.10+ then
            # answers "Failed to create email inbox" (§1.2, inferred edge).
            if inbox_id is None or (not inbox_id and _version_tuple(self.version) >= (6, 10)):
                raise _failure("Failed to create email inbox")
        self._watch(inbox_id)
        if _version_tuple(self.version) < (4, 8):
            # E0 echoed the body's (undefined) _id: no id in the answer (§1.2).
            return _Response.json(200, {"success": True})
        return _Response.json(200, {"_id": inbox_id, "success": True})

    def _duplicate(self, index: str, key: str, value: str) -> _Abort:
        text = json.dumps(value, ensure_ascii=False)
        return _failure(
            f"E11000 duplicate key error collection: {self.database}.rocketchat_email_inbox "
            f"index: {index} dup key: {{ {key}: {text} }}"
        )

    def _insert(self, body: dict[str, Any], user: User) -> Any:
        # insertOneEmailInbox: the body plus dates and creator; an explicit falsy _id
        # in the body overrides the generated one (BaseRaw.insertOne spread, §1.2).
        inbox_id = body.pop("_id") if "_id" in body else secrets.token_hex(12)
        if inbox_id in self.inboxes:
            raise self._duplicate("_id_", "_id", inbox_id)
        if any(doc.get("email") == body.get("email") for doc in self.inboxes.values()):
            raise self._duplicate("email_1", "email", body["email"])
        now = _now()
        self.inboxes[inbox_id] = {
            "_id": inbox_id,
            **body,
            "_createdAt": now,
            "_updatedAt": now,
            "_createdBy": {"_id": user.id, "username": user.username},
        }
        return inbox_id

    def _update(self, body: dict[str, Any]) -> str:
        # updateEmailInbox: one $set; "All" unsets the department; keys absent from
        # the body are `undefined` and ignored by Meteor's Mongo driver (§1.2).
        inbox_id = body["_id"]
        doc = self.inboxes.get(inbox_id)
        if doc is None:
            raise _failure("error-invalid-email-inbox")
        if "email" in body and any(
            other_id != inbox_id and other.get("email") == body["email"]
            for other_id, other in self.inboxes.items()
        ):
            raise self._duplicate("email_1", "email", body["email"])
        for key in ("active", "name", "email", "description", "senderInfo", "smtp", "imap"):
            if key in body:
                doc[key] = body[key]
        doc["_updatedAt"] = _now()
        if "department" in body:
            if body["department"] == "All":
                doc.pop("department", None)
            else:
                doc["department"] = body["department"]
        return str(inbox_id)

    def _watch(self, inbox_id: str) -> None:
        """Schedule the self-disable of an inbox with bad IMAP credentials (§3.2, §4)."""
        handle = self._handles.pop(inbox_id, None)
        if handle is not None:
            handle.cancel()
        doc = self.inboxes.get(inbox_id)
        if doc is None or not doc.get("active") or not self._bad(doc):
            return
        loop = asyncio.get_running_loop()
        self._handles[inbox_id] = loop.call_later(
            self.self_disable_delay, self._self_disable, inbox_id
        )

    def _bad(self, doc: Mapping[str, Any]) -> bool:
        imap = doc.get("imap")
        return isinstance(imap, dict) and imap.get("password") in self.bad_imap_passwords

    def _self_disable(self, inbox_id: str) -> None:
        self._handles.pop(inbox_id, None)
        doc = self.inboxes.get(inbox_id)
        # selfDisable() sets active: false only if the inbox is still active (§3.2).
        if doc is None or not doc.get("active") or not self._bad(doc):
            return
        doc["active"] = False
        self.self_disabled.append(inbox_id)
        for future in self._waiters.pop(inbox_id, []):
            if not future.done():
                future.set_result(None)

    async def _list(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        """``GET /api/v1/email-inbox.list`` with offset/count/sort (§1.3)."""
        offset, count = self._pagination(request)
        sort_text = request.log.param("sort")
        try:
            sort = json.loads(sort_text) if sort_text else {"name": 1}
        except ValueError:
            raise _failure("Invalid sort parameter") from None
        docs = list(self.inboxes.values())
        if isinstance(sort, dict):
            # Stable sorts, least significant key first, give Mongo's multi-key order.
            for key, direction in reversed(list(sort.items())):
                docs.sort(key=_sort_by(str(key)), reverse=direction == -1)
        page = docs[offset:] if count == 0 else docs[offset : offset + count]
        return _Response.json(
            200,
            {
                "emailInboxes": [_to_json(d) for d in page],
                "count": len(page),
                "offset": offset,
                "total": len(docs),
                "success": True,
            },
        )

    def _pagination(self, request: _Request) -> tuple[int, int]:
        """``getPaginationItems``: default 50, capped by the upper limit (§1.3)."""
        try:
            offset = int(request.log.param("offset") or 0)
            count = int(request.log.param("count") or 50)
        except ValueError:
            raise _failure("Invalid offset or count") from None
        return max(offset, 0), min(max(count, 0), self.list_count_limit)

    async def _get(self, request: _Request, user: User | None, params: dict[str, str]) -> _Response:
        doc = self.inboxes.get(params["_id"])
        if doc is None:
            raise _failure("Resource not found", status=404)
        return _Response.json(200, {**_to_json(doc), "success": True})

    async def _delete(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        if self.inboxes.pop(params["_id"], None) is None:
            raise _failure("Resource not found", status=404)
        handle = self._handles.pop(params["_id"], None)
        if handle is not None:
            handle.cancel()
        return _Response.json(200, {"_id": params["_id"], "success": True})

    async def _search(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        """Exact, case-sensitive match; not found is 200 with null (§1.6)."""
        query: dict[str, Any] = {}
        for key, value in request.log.query:
            # Repeated keys arrive as an array, which check() reports as an object.
            query[key] = [*query[key], value] if key in query else value
        if not self.e5:
            error = meteor_check(query, {"email": "string"})
            if error is not None:
                raise _failure(error)
        email = query["email"]
        doc = next((d for d in self.inboxes.values() if d.get("email") == email), None)
        return _Response.json(200, {"emailInbox": _to_json(doc), "success": True})

    async def _send_test(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        """``POST email-inbox.send-test/:_id`` (§1.7)."""
        assert user is not None
        doc = self.inboxes.get(params["_id"])
        if doc is None:
            raise _failure("Resource not found", status=404)
        # Only active inboxes are configured in memory (EmailInbox.ts, §1.7, §4).
        if not doc.get("active"):
            raise _failure("inbox-not-found")
        if not (user.email and user.email_verified):
            raise _failure("user-without-verified-email")
        self.sent_tests.append(SentTest(params["_id"], user.email))
        return _Response.json(200, {"_id": params["_id"], "success": True})

    async def _departments(
        self, request: _Request, user: User | None, params: dict[str, str]
    ) -> _Response:
        """``GET /api/v1/livechat/department``: ``text`` is a case-insensitive substring."""
        offset, count = self._pagination(request)
        text = (request.log.param("text") or "").lower()
        found = [d for d in self.departments if text in d["name"].lower()]
        found.sort(key=lambda d: d["name"])
        page = found[offset:] if count == 0 else found[offset : offset + count]
        return _Response.json(
            200,
            {
                "departments": copy.deepcopy(page),
                "count": len(page),
                "offset": offset,
                "total": len(found),
                "success": True,
            },
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version.split("-")[0])[:3]
    return tuple(int(p) for p in parts)


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


def _password_ok(given: Any, stored: str) -> bool:
    if isinstance(given, str):
        return secrets.compare_digest(given, stored)
    if isinstance(given, dict) and isinstance(given.get("digest"), str):
        # {"digest": sha256 hex, "algorithm": "sha-256"} is Meteor's own hashed form.
        given = {"hashed": given["digest"]}
    if isinstance(given, dict) and isinstance(given.get("hashed"), str):
        digest = hashlib.sha256(stored.encode()).hexdigest()
        return secrets.compare_digest(given["hashed"].lower(), digest)
    return False


# -------------------------------------------------------------------------- server


@dataclass(slots=True)
class RunningRocketChat:
    """A double served by uvicorn in this event loop.

    Attributes:
        url: base URL (``http://127.0.0.1:PORT``, or ``https://`` with TLS).
        app: the double: its state, settings and request log.
    """

    url: str
    app: RocketChatDouble
    _server: Any
    _task: asyncio.Task[None]
    _socket: socket.socket

    async def close(self, grace: float = 5.0) -> None:
        """Stop serving; after ``grace`` seconds, stop waiting for open requests."""
        self.app.shutdown()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._socket.close()

    async def __aenter__(self) -> RunningRocketChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_rocketchat(
    app: RocketChatDouble | None = None,
    *,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
) -> RunningRocketChat:
    """Serve a double on ``host`` with a port chosen by the OS.

    The socket is bound and listening before uvicorn starts, so the returned URL
    accepts connections at once (no readiness polling).

    Args:
        app: the double to serve (a fresh one when ``None``).
        host: address to bind (``127.0.0.1``, ``127.0.0.2``, ``::1``).
        ssl_context: serve HTTPS with this server context.

    Returns:
        The running server; call ``close()`` (or use ``async with``).
    """
    import uvicorn  # the sandbox extra; keep it off the import path of the client

    app = app if app is not None else RocketChatDouble()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Accepted sockets inherit this: without it uvicorn's separate header and body
        # writes meet the client's delayed ACK and every response takes ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, 0))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        log_config=None,  # leave the process's logging configuration alone
        ws="none",
        ssl_context_factory=(lambda _config, _default: ssl_context) if ssl_context else None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"rocketchat-double:{port}")
    scheme = "https" if ssl_context else "http"
    netloc = f"[{host}]" if ":" in host else host
    return RunningRocketChat(f"{scheme}://{netloc}:{port}", app, server, task, sock)
