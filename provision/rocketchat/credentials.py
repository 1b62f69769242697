"""Rocket.Chat credentials from the environment, and the URL policy checked before any I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from provision.errors import ConfigError, ConfigProblem
from provision.models import Secret

__all__ = ["Credentials", "PasswordAuth", "TokenAuth", "check_url", "credentials_from_env"]


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
        ConfigError: not an http(s) URL, credentials in the URL, an API path
            (``.../api/v1``: the client adds it), or plain HTTP refused.
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
    segments = parsed.path.strip("/").split("/")
    if "api" in segments:
        # The client adds /api/v1/...; a copied API address would ask for /api/v1/api/v1/me.
        base = parsed.copy_with(path="/" + "/".join(segments[: segments.index("api")]))
        raise ConfigError(
            [
                ConfigProblem(
                    f"is an API address ({parsed.path}); give the server's base URL: "
                    f"{str(base).rstrip('/')}",
                    field=field,
                )
            ]
        )
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
