"""The double: state and settings, seed helpers, self-disable, and the ASGI request pipeline."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from provision.sandbox.rocketchat import store
from provision.sandbox.rocketchat.auth import (
    ADMIN_PERMISSIONS,
    RateLimit,
    RateLimiter,
    User,
    authenticate,
    meteor_id,
    require,
)
from provision.sandbox.rocketchat.routes import Params, Route, find_route
from provision.sandbox.rocketchat.store import SentTest
from provision.sandbox.rocketchat.wire import (
    Abort,
    LoggedRequest,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    failure,
    now,
    to_json,
)

__all__ = ["RocketChatDouble"]

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
        deleted: ids removed by ``DELETE /api/v1/email-inbox/:_id``, in order.
    """

    def __init__(
        self,
        *,
        version: str = "6.13.0",
        e5: bool = False,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._initial = (version, e5, rate_limit if rate_limit is not None else RateLimit())
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything (users, inboxes, logs) and restore the settings."""
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
        self.inboxes: store.Inboxes = {}
        self.departments: list[dict[str, Any]] = []
        self.requests: list[LoggedRequest] = []
        self.logouts: list[tuple[str, str, str]] = []
        self.sent_tests: list[SentTest] = []
        self.self_disabled: list[str] = []
        self.deleted: list[str] = []
        self._limiter = RateLimiter()

    def shutdown(self) -> None:
        """Cancel pending side effects (the server is stopping)."""
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

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
            id=user_id or meteor_id(),
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
            "_id": department_id or meteor_id(),
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
        inbox_id = secrets.token_hex(12)
        by = {"_id": created_by.id, "username": created_by.username} if created_by else None
        self.inboxes[inbox_id] = store.new_inbox(inbox_id, body, by)
        return inbox_id

    # ------------------------------------------------------------ reading state

    def requests_to(self, method: str, path: str) -> list[LoggedRequest]:
        """The logged requests with this method and path."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    @property
    def logged_out_tokens(self) -> list[str]:
        """Tokens deleted by ``/api/v1/logout``."""
        return [token for _, token, _ in self.logouts]

    def stored(self, inbox_id: str) -> dict[str, Any]:
        """A stored inbox as the API would return it (dates as strings)."""
        return dict(to_json(self.inboxes[inbox_id]))

    async def wait_self_disabled(self, inbox_id: str) -> None:
        """Return once the inbox has switched itself off (§6.10)."""
        if inbox_id in self.self_disabled:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(inbox_id, []).append(future)
        await future

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
        request = self._parse(scope, b"".join(chunks))
        self.requests.append(request.log)
        response = await self.respond(request)
        request.log.status = response.status
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

    async def respond(self, request: Request) -> Response:
        """Answer a logged request (tests wrap this to inject faults)."""
        route, params = self.route(request.log.path)
        return await self.process(request, route, params)

    def _parse(self, scope: Scope, raw: bytes) -> Request:
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
        return Request(log=log, headers=headers, json_error=json_error)

    def route(self, path: str) -> tuple[Route | None, Params]:
        """The route serving ``path`` and its parameters (``_id``)."""
        return find_route(path)

    async def process(self, request: Request, route: Route | None, params: Params) -> Response:
        """Validate, authenticate, rate-limit, check permissions, then run the handler."""
        if route is None:
            # Not in the spec: Restivus's answer for an unknown endpoint.
            return Response.json(404, {"status": "error", "message": "API endpoint does not exist"})
        method = route.methods.get(request.log.method)
        if method is None:
            # 6.x Restivus: undefined method on a defined route -> 405 + Allow (§1.8).
            allow = ", ".join(route.methods)
            return Response.json(
                405,
                {"status": "error", "message": "API endpoint does not exist"},
                [("allow", allow)],
            )
        limit_headers: list[tuple[str, str]] = []
        try:
            if request.json_error:
                raise failure("Invalid JSON body")
            # E5 typed routes validate before authenticating (§1.1).
            if self.e5 and method.e5_validate is not None:
                method.e5_validate(self, request)
            user = (
                authenticate(self.users, request.headers, seven=self.seven) if method.auth else None
            )
            limit_headers = self._limiter.check(
                self.rate_limit, (request.log.client, route.template, request.log.method), user
            )
            if method.permissions:
                require(user, method.permissions)
            response = await method.handler(self, request, user, params)
        except Abort as stop:
            response = stop.response
        response.headers.extend(limit_headers)
        return response

    @property
    def version_info(self) -> tuple[int, ...]:
        """``version`` as numbers: ``(6, 13, 0)``."""
        parts = re.findall(r"\d+", self.version.split("-")[0])[:3]
        return tuple(int(p) for p in parts)

    @property
    def seven(self) -> bool:
        """7.x or later: 401 and login bodies in their 7.x form (§1.8)."""
        return self.version_info >= (7,)

    # ------------------------------------------------------ self-disable (§3.2, §4)

    def watch(self, inbox_id: str) -> None:
        """Schedule the self-disable of an inbox with bad IMAP credentials (§3.2, §4)."""
        self.forget(inbox_id)
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
        doc["_updatedAt"] = now()  # an updateOne, which sets _updatedAt (BaseRaw)
        self.self_disabled.append(inbox_id)
        for future in self._waiters.pop(inbox_id, []):
            if not future.done():
                future.set_result(None)

    def forget(self, inbox_id: str) -> None:
        """Cancel a pending self-disable (the inbox was deleted)."""
        handle = self._handles.pop(inbox_id, None)
        if handle is not None:
            handle.cancel()
