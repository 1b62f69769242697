"""What travels between the double and a client: requests as logged, responses, dates."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Abort",
    "Headers",
    "LoggedRequest",
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "failure",
    "now",
    "to_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    """Dates as the REST API renders them: ``2024-10-15T12:00:00.000Z`` (§1.3)."""
    return (
        value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{value.microsecond // 1000:03d}Z"
    )


def to_json(value: Any) -> Any:
    """Deep copy for the wire: datetimes become ISO strings."""
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


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


@dataclass(slots=True, kw_only=True)
class Request:
    """A request being answered: its log entry, all its headers, the E5-coerced body."""

    log: LoggedRequest
    headers: dict[str, str]
    json_error: bool = False
    coerced: Any = None

    @property
    def body(self) -> Any:
        return self.log.body


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return cls(status, body, [("content-type", "application/json"), *headers])


class Abort(Exception):
    """Stop processing and answer with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def failure(error: str, *, status: int = 400, **extra: Any) -> Abort:
    """``API.v1.failure``: ``{"success": false, "error": ...}`` (§1.1)."""
    return Abort(Response.json(status, {"success": False, "error": error, **extra}))
