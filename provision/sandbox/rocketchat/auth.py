"""Who may call what: users and their tokens, login with 2FA, permissions, the rate limiter.

Spec §1.8 (401/403/429 bodies, ``X-RateLimit-*`` headers) and §2 (login forms, email
2FA, personal access tokens).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from provision.sandbox.rocketchat.wire import Abort, Headers, Response, failure

__all__ = [
    "ADMIN_PERMISSIONS",
    "DEPARTMENT_VIEW",
    "MANAGE",
    "RateLimit",
    "RateLimiter",
    "User",
    "authenticate",
    "login",
    "meteor_id",
    "require",
]

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
MANAGE: Final = ("manage-email-inbox",)
DEPARTMENT_VIEW: Final = ("view-livechat-departments", "view-l-room")

_NOT_LOGGED_IN = "You must be logged in to do this."
_FORBIDDEN = "User does not have the permissions required for this action [error-unauthorized]"
_METEOR_ID_CHARS = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"


def meteor_id() -> str:
    """A 17-character id like Meteor's ``Random.id()`` (users, departments)."""
    return "".join(secrets.choice(_METEOR_ID_CHARS) for _ in range(17))


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


def authenticate(users: Mapping[str, User], headers: Mapping[str, str], *, seven: bool) -> User:
    """The user of ``X-Auth-Token`` + ``X-User-Id``, or abort with 401 (§1.8)."""
    token = headers.get("x-auth-token")
    user = users.get(headers.get("x-user-id", ""))
    if token and user is not None and token in user.tokens:
        return user
    body: dict[str, Any] = {"status": "error", "message": _NOT_LOGGED_IN}
    if seven:
        # 7.x ApiClass keeps the 6.x keys and adds success/error (§1.8).
        body = {"success": False, "error": _NOT_LOGGED_IN, **body}
    raise Abort(Response.json(401, body))


def require(user: User | None, permissions: Iterable[str]) -> None:
    """Abort with 403 unless ``user`` holds one of ``permissions`` (§1.8)."""
    if user is None or not any(p in user.permissions for p in permissions):
        raise failure(_FORBIDDEN, status=403)


def login(
    users: Iterable[User], body: Mapping[str, Any], headers: Mapping[str, str], *, seven: bool
) -> Response:
    """``POST /api/v1/login`` with the body forms and failures of spec §2."""
    users = list(users)
    extra = {"success": False} if seven else {}

    def unauthorized(error: Any, message: str, **more: Any) -> Abort:
        payload = {**extra, "status": "error", "error": error, "message": message, **more}
        return Abort(Response.json(401, payload))

    if isinstance(body.get("resume"), str):
        found = next((u for u in users if body["resume"] in u.tokens), None)
        if found is None:
            raise unauthorized("Unauthorized", "Unauthorized")
        return _logged_in(found, seven=seven)
    found = _find_login_user(users, body)
    if found is None or found.password is None:
        raise unauthorized("Unauthorized", "Unauthorized")
    if not _password_ok(body.get("password"), found.password):
        raise unauthorized(403, "Incorrect password")
    if found.two_factor:
        # Email 2FA, on by default (§2); the body code wins over X-2FA-Code.
        code = body.get("code") or headers.get("x-2fa-code")
        details = {
            "method": "email",
            "availableMethods": ["email"],
            "codeGenerated": True,
            "emailOrUsername": found.email or found.username,
        }
        if not code:
            raise unauthorized("totp-required", "TOTP Required", details=details)
        if code != found.two_factor_code:
            raise unauthorized("totp-invalid", "TOTP Invalid", details=details)
    return _logged_in(found, seven=seven)


def _find_login_user(users: Iterable[User], body: Mapping[str, Any]) -> User | None:
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
    for candidate in users:
        if by_name is not None and candidate.username == by_name:
            return candidate
        if by_email is not None and candidate.email == by_email:
            return candidate
    return None


def _logged_in(user: User, *, seven: bool) -> Response:
    token = secrets.token_urlsafe(32)
    user.tokens[token] = "login"
    payload: dict[str, Any] = {
        "status": "success",
        "data": {"userId": user.id, "authToken": token, "me": user.me()},
    }
    if seven:
        payload["success"] = True
    return Response.json(200, payload)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """Rate limiter settings (``API_Enable_Rate_Limiter_Limit_*_Default``, §1.8)."""

    calls: int = 10
    interval_ms: int = 60_000


@dataclass(slots=True)
class _Bucket:
    reset_ms: float
    count: int = 0


@dataclass(slots=True)
class RateLimiter:
    """Fixed window per client IP + route + method, as Meteor's DDPRateLimiter (§1.8)."""

    buckets: dict[tuple[str, str, str], _Bucket] = field(default_factory=dict)

    def check(
        self, limit: RateLimit | None, key: tuple[str, str, str], user: User | None
    ) -> Headers:
        """Count one call; its ``X-RateLimit-*`` headers, or abort with 429."""
        if limit is None or (user is not None and "api-bypass-rate-limit" in user.permissions):
            return []
        now_ms = time.time() * 1000
        bucket = self.buckets.get(key)
        if bucket is None or now_ms >= bucket.reset_ms:
            bucket = self.buckets[key] = _Bucket(reset_ms=now_ms + limit.interval_ms)
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
            raise Abort(Response.json(429, {"success": False, "error": message}, headers))
        return headers
