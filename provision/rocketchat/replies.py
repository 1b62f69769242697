"""Rocket.Chat's answers turned into data or into the most specific error (spec §1.8, §2).

Every error of the client is made by a :class:`Scrubber`, which masks the secrets
the client knows: a last line of defence, messages are built without secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn, TypeVar

import httpx

from provision.errors import (
    RocketChatAuthError,
    RocketChatCallError,
    RocketChatDuplicateEmailError,
    RocketChatNotFoundError,
    RocketChatPermissionError,
    RocketChatProtocolError,
    RocketChatRateLimitedError,
    RocketChatRejectedError,
    RocketChatTwoFactorError,
    RocketChatUnavailableError,
    RocketChatUnknownInboxError,
    RocketChatValidationError,
)

__all__ = ["MANAGE", "Scrubber", "interpret", "wait_told"]

MANAGE: Final = "manage-email-inbox"
#: Shorter secrets are not masked in messages (masking "a" would garble every text);
#: messages are built without secrets in the first place.
_MIN_SCRUB: Final = 4

E = TypeVar("E", bound=RocketChatCallError)


class Scrubber:
    """Makes the client's errors, masking every secret it has been told of."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str) -> None:
        """Mask ``secret`` from now on."""
        self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        """Mask every known secret (longest first)."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= _MIN_SCRUB:
                text = text.replace(secret, "***")
        return text

    def error(self, cls: type[E], message: str, **kw: Any) -> E:
        """An error of ``cls`` with scrubbed message, ``error`` and ``hint``."""
        for key in ("error", "hint"):
            if isinstance(kw.get(key), str):
                kw[key] = self.scrub(kw[key])
        return cls(self.scrub(message), **kw)


_MATCH_ERROR = re.compile(r"^Match error: (?P<what>.*?)(?: in field (?P<field>.+))?$", re.DOTALL)
_MISSING = re.compile(r"^Missing key '(?P<key>[^']*)'$")
_EXPECTED = re.compile(r"^Expected (?P<want>\w+), got (?P<got>\w+)$")
_AJV_REQUIRED = re.compile(r"^must have required property '(?P<key>[^']*)'$")
_DUP_KEY = re.compile(r"dup key: \{ ?(?:email)?: ?\"(?P<email>(?:[^\"\\]|\\.)*)\" ?\}")
_WAIT_SECONDS = re.compile(r"wait (?P<seconds>\d+) seconds")
_ERA_48_52 = frozenset({"description", "senderInfo", "department"})


def wait_told(error: str | None) -> float | None:
    """The seconds of a 429's "You must wait N seconds", if it says so."""
    told = _WAIT_SECONDS.search(error or "")
    return None if told is None else float(told["seconds"])


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
    return MANAGE


def interpret(
    errors: Scrubber, method: str, path: str, response: httpx.Response, *, token_auth: bool
) -> dict[str, Any]:
    """Map an HTTP answer to data or to the most specific error (spec §1.8, §2)."""
    status = response.status_code
    where = {"status": status, "method": method, "path": path}
    data = _json_object(response)
    if data is None:
        body = _describe_body(response)
        if status >= 500:
            raise errors.error(
                RocketChatUnavailableError,
                f"Rocket.Chat {method} {path} failed with HTTP {status} and {body}",
                **where,
            )
        raise errors.error(
            RocketChatProtocolError,
            f"expected JSON from Rocket.Chat for {method} {path}, got {body} (HTTP {status})",
            hint="check that the URL points at Rocket.Chat itself, not a proxy or login page",
            **where,
        )
    error = _error_text(data)
    if 200 <= status < 300:
        if data.get("success") is False or data.get("status") == "error":
            _raise_rejected(errors, method, path, error or "success: false", where)
        return data
    if status == 401:
        _raise_unauthorized(errors, path, data, error, where, token_auth=token_auth)
    if status == 403:
        permission = _permission_for(path)
        raise errors.error(
            RocketChatPermissionError,
            f"the Rocket.Chat user lacks the {permission!r} permission ({method} {path}: HTTP 403)",
            permission=permission,
            error=error,
            hint=f"grant {permission!r} to a role of the user (the admin role has it)",
            **where,
        )
    if status == 404:
        raise errors.error(
            RocketChatNotFoundError,
            f"Rocket.Chat {method} {path}: not found (HTTP 404)",
            error=error,
            **where,
        )
    if status == 429:
        reset = response.headers.get("x-ratelimit-reset")
        reset_at = float(reset) / 1000 if reset and reset.isdigit() else None
        raise errors.error(
            RocketChatRateLimitedError,
            f"Rocket.Chat rate-limited {method} {path} (HTTP 429) and the limit does not "
            "reset within the deadline",
            reset_at=reset_at,
            error=error,
            hint=_rate_limit_hint(path),
            **where,
        )
    if status >= 500:
        raise errors.error(
            RocketChatUnavailableError,
            f"Rocket.Chat {method} {path} failed with HTTP {status}"
            + (f": {error}" if error else ""),
            error=error,
            **where,
        )
    _raise_rejected(errors, method, path, error or f"HTTP {status}", where)


def _raise_unauthorized(
    errors: Scrubber,
    path: str,
    data: Mapping[str, Any],
    error: str | None,
    where: dict[str, Any],
    *,
    token_auth: bool,
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
        raise errors.error(
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
        raise errors.error(
            RocketChatAuthError,
            f"Rocket.Chat login failed (HTTP 401: {text or 'Unauthorized'})",
            error=str(code) if code is not None else text,
            hint="check ROCKETCHAT_USER and ROCKETCHAT_PASSWORD",
            **where,
        )
    raise errors.error(
        RocketChatAuthError,
        f"Rocket.Chat did not accept the credentials (HTTP 401: {text or 'Unauthorized'})",
        error=text,
        hint=(
            "check ROCKETCHAT_USER_ID and ROCKETCHAT_AUTH_TOKEN; the token may have "
            "expired or been deleted (a logout with a personal access token deletes it)"
            if token_auth
            else "the login session ended; run again"
        ),
        **where,
    )


def _raise_rejected(
    errors: Scrubber, method: str, path: str, error: str, where: dict[str, Any]
) -> NoReturn:
    what = f"Rocket.Chat rejected {method} {path}"
    match = _MATCH_ERROR.match(error)
    if match:
        field, hint = _validation_hint(match["what"], match["field"])
        raise errors.error(
            RocketChatValidationError,
            f"{what}: {error}",
            error=error,
            field=field,
            hint=hint,
            **where,
        )
    if where.get("status") == 400 and (_AJV_REQUIRED.match(error) or error.startswith("must ")):
        field, hint = _ajv_hint(error)
        raise errors.error(
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
        raise errors.error(
            RocketChatDuplicateEmailError,
            f"another inbox already uses the address {email or '(unknown)'} (E11000 duplicate key)",
            email=email,
            error=error,
            field="email",
            hint="addresses are unique and compared case-sensitively; update that inbox "
            "instead, or delete it",
            **where,
        )
    if error == "error-invalid-email-inbox":
        raise errors.error(
            RocketChatUnknownInboxError,
            f"{what}: the inbox to update does not exist (error-invalid-email-inbox)",
            error=error,
            hint="it was probably deleted meanwhile; run again to create it",
            **where,
        )
    if error in ("error-not-allowed",) or "[error-not-allowed]" in error:
        # E0-E2 report a missing permission as 400 (spec §1.3, §1.8).
        raise errors.error(
            RocketChatPermissionError,
            f"the Rocket.Chat user lacks the {MANAGE!r} permission ({method} {path})",
            permission=MANAGE,
            error=error,
            hint=f"grant {MANAGE!r} to a role of the user",
            **where,
        )
    hints = {
        "inbox-not-found": "the inbox is inactive, or Rocket.Chat failed to set it up; "
        "check 'active' and the Rocket.Chat server log (logger EmailInbox)",
        "user-without-verified-email": "the API user needs a verified email address to "
        "receive the test mail",
        "Failed to create email inbox": "never send _id when creating an inbox",
    }
    raise errors.error(
        RocketChatRejectedError,
        f"{what}: {error}",
        error=error,
        hint=hints.get(error),
        **where,
    )


def _rate_limit_hint(path: str) -> str:
    """What lifts a 429 on ``path``: the bypass permission helps only once logged in."""
    if path == "/api/v1/login":
        return (
            "the login route is limited per client IP for everyone (api-bypass-rate-limit "
            "applies only after login): use a personal access token "
            "(ROCKETCHAT_USER_ID + ROCKETCHAT_AUTH_TOKEN), which needs no login call, or "
            "run again after the reset"
        )
    if not path.startswith("/api/v1/"):
        return (
            "this anonymous route is limited per client IP for everyone (api-bypass-rate-limit "
            "does not apply to it): run again after the reset, or raise the limit in "
            "Administration > Settings > Rate Limiter"
        )
    return (
        "give the API user the api-bypass-rate-limit permission (the admin, bot and app "
        "roles have it; it lifts the limit of authenticated REST routes), raise --timeout so "
        "the wait fits, or run fewer inboxes"
    )
