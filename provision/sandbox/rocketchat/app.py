"""The double: its state and settings, seed helpers, and the HTTP surface (a raw ASGI app)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from provision.sandbox.rocketchat import store
from provision.sandbox.rocketchat.auth import (
    ADMIN_PERMISSIONS,
    DEPARTMENT_VIEW,
    MANAGE,
    RateLimit,
    RateLimiter,
    User,
    authenticate,
    login,
    meteor_id,
    require,
)
from provision.sandbox.rocketchat.validation import (
    E4_INBOX,
    E5_INBOX,
    E5_LIST,
    E5_SEARCH,
    ajv,
    meteor_check,
)
from provision.sandbox.rocketchat.wire import (
    Abort,
    LoggedRequest,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    failure,
    to_json,
)

__all__ = ["RocketChatDouble", "Route", "SentTest"]

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

Handler = Callable[[Request, User | None, dict[str, str]], Awaitable[Response]]
Validator = Callable[[Request], None]


@dataclass(frozen=True, slots=True)
class SentTest:
    """A send-test that would have sent a mail (§1.7: fire and forget)."""

    inbox_id: str
    to: str


@dataclass(slots=True)
class _Method:
    handler: Handler
    auth: bool = True
    permissions: tuple[str, ...] = ()
    e5_validate: Validator | None = None


@dataclass(slots=True)
class Route:
    """A route template (``/api/v1/email-inbox/:_id``) and its methods."""

    template: str
    pattern: re.Pattern[str]
    methods: dict[str, _Method]


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version.split("-")[0])[:3]
    return tuple(int(p) for p in parts)


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

    def route(self, path: str) -> tuple[Route | None, dict[str, str]]:
        """The route serving ``path`` and its parameters (``_id``)."""
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found:
                return route, found.groupdict()
        return None, {}

    async def process(
        self, request: Request, route: Route | None, params: dict[str, str]
    ) -> Response:
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
                method.e5_validate(request)
            user = (
                authenticate(self.users, request.headers, seven=self._seven())
                if method.auth
                else None
            )
            limit_headers = self._limiter.check(
                self.rate_limit, (request.log.client, route.template, request.log.method), user
            )
            if method.permissions:
                require(user, method.permissions)
            response = await method.handler(request, user, params)
        except Abort as stop:
            response = stop.response
        response.headers.extend(limit_headers)
        return response

    def _seven(self) -> bool:
        return _version_tuple(self.version) >= (7,)

    # ----------------------------------------------------------------- routes

    def _build_routes(self) -> list[Route]:
        def route(template: str, methods: dict[str, _Method]) -> Route:
            regex = re.escape(template).replace(":_id", "(?P<_id>[^/]+)")
            return Route(template, re.compile(regex), methods)

        inbox = "/api/v1/email-inbox"
        return [
            route("/api/info", {"GET": _Method(self._info, auth=False)}),
            route("/api/v1/login", {"POST": _Method(self._login, auth=False)}),
            route("/api/v1/logout", {"POST": _Method(self._logout), "GET": _Method(self._logout)}),
            route("/api/v1/me", {"GET": _Method(self._me)}),
            route(
                inbox, {"POST": _Method(self._save, permissions=MANAGE, e5_validate=self._e5_body)}
            ),
            route(
                f"{inbox}.list",
                {"GET": _Method(self._list, permissions=MANAGE, e5_validate=self._e5_list)},
            ),
            route(
                f"{inbox}.search",
                {"GET": _Method(self._search, permissions=MANAGE, e5_validate=self._e5_search)},
            ),
            route(
                f"{inbox}.send-test/:_id", {"POST": _Method(self._send_test, permissions=MANAGE)}
            ),
            route(
                f"{inbox}/:_id",
                {
                    "GET": _Method(self._get, permissions=MANAGE),
                    "DELETE": _Method(self._delete, permissions=MANAGE),
                },
            ),
            route(
                "/api/v1/livechat/department",
                {"GET": _Method(self._departments, permissions=DEPARTMENT_VIEW)},
            ),
        ]

    # --------------------------------------------------------------- accounts

    async def _info(self, request: Request, user: User | None, params: dict[str, str]) -> Response:
        return Response.json(200, {"version": self.version, "success": True})

    async def _login(self, request: Request, user: User | None, params: dict[str, str]) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        return login(self.users.values(), body, request.headers, seven=self._seven())

    async def _logout(
        self, request: Request, user: User | None, params: dict[str, str]
    ) -> Response:
        """Deletes the presented token, a personal access token included (§2)."""
        assert user is not None
        token = request.headers["x-auth-token"]
        kind = user.tokens.pop(token)
        self.logouts.append((user.id, token, kind))
        return Response.json(
            200, {"status": "success", "data": {"message": "You've been logged out!"}}
        )

    async def _me(self, request: Request, user: User | None, params: dict[str, str]) -> Response:
        assert user is not None
        return Response.json(200, {**user.me(), "success": True})

    # ------------------------------------------------------------ email inboxes

    def _e5_body(self, request: Request) -> None:
        body = copy.deepcopy(request.body) if request.body is not None else {}
        error = ajv(body, E5_INBOX, password_min=self.e5_password_min)
        if error is not None:
            raise failure(error, errorType="error-invalid-params")
        request.coerced = body

    def _e5_query(self, request: Request, schema: Mapping[str, Any]) -> None:
        error = ajv(dict(request.log.query), schema)
        if error is not None:
            raise failure(error, errorType="error-invalid-params")

    def _e5_search(self, request: Request) -> None:
        self._e5_query(request, E5_SEARCH)

    def _e5_list(self, request: Request) -> None:
        self._e5_query(request, E5_LIST)

    async def _save(self, request: Request, user: User | None, params: dict[str, str]) -> Response:
        """``POST /api/v1/email-inbox``: insert or update (§1.2)."""
        assert user is not None
        if self.e5:
            body = copy.deepcopy(request.coerced)
            # E5 handler default for the now optional maxRetries (§1.2).
            body["imap"].setdefault("maxRetries", 5)
        else:
            body = copy.deepcopy(request.body) if request.body is not None else {}
            error = meteor_check(body, E4_INBOX)
            if error is not None:
                raise failure(error)
        if body.get("_id"):
            inbox_id: Any = store.update(self.inboxes, body, self.database)
        else:
            inbox_id = store.insert(self.inboxes, body, user, self.database)
            # The stored document keeps the explicit empty/null _id; 6.10+ then
            # answers "Failed to create email inbox" (§1.2, inferred edge).
            if inbox_id is None or (not inbox_id and _version_tuple(self.version) >= (6, 10)):
                raise failure("Failed to create email inbox")
        self._watch(inbox_id)
        if _version_tuple(self.version) < (4, 8):
            # E0 echoed the body's (undefined) _id: no id in the answer (§1.2).
            return Response.json(200, {"success": True})
        return Response.json(200, {"_id": inbox_id, "success": True})

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

    async def _list(self, request: Request, user: User | None, params: dict[str, str]) -> Response:
        """``GET /api/v1/email-inbox.list`` with offset/count/sort (§1.3)."""
        offset, count = self._pagination(request)
        sort_text = request.log.param("sort")
        try:
            sort = json.loads(sort_text) if sort_text else {"name": 1}
        except ValueError:
            raise failure("Invalid sort parameter") from None
        docs = list(self.inboxes.values())
        store.sort_inboxes(docs, sort)
        page = docs[offset:] if count == 0 else docs[offset : offset + count]
        return Response.json(
            200,
            {
                "emailInboxes": [to_json(d) for d in page],
                "count": len(page),
                "offset": offset,
                "total": len(docs),
                "success": True,
            },
        )

    def _pagination(self, request: Request) -> tuple[int, int]:
        """``getPaginationItems``: default 50, capped by the upper limit (§1.3)."""
        try:
            offset = int(request.log.param("offset") or 0)
            count = int(request.log.param("count") or 50)
        except ValueError:
            raise failure("Invalid offset or count") from None
        return max(offset, 0), min(max(count, 0), self.list_count_limit)

    async def _get(self, request: Request, user: User | None, params: dict[str, str]) -> Response:
        doc = self.inboxes.get(params["_id"])
        if doc is None:
            raise failure("Resource not found", status=404)
        return Response.json(200, {**to_json(doc), "success": True})

    async def _delete(
        self, request: Request, user: User | None, params: dict[str, str]
    ) -> Response:
        if self.inboxes.pop(params["_id"], None) is None:
            raise failure("Resource not found", status=404)
        handle = self._handles.pop(params["_id"], None)
        if handle is not None:
            handle.cancel()
        return Response.json(200, {"_id": params["_id"], "success": True})

    async def _search(
        self, request: Request, user: User | None, params: dict[str, str]
    ) -> Response:
        """Exact, case-sensitive match; not found is 200 with null (§1.6)."""
        query: dict[str, Any] = {}
        for key, value in request.log.query:
            # Repeated keys arrive as an array, which check() reports as an object.
            query[key] = [*query[key], value] if key in query else value
        if not self.e5:
            error = meteor_check(query, {"email": "string"})
            if error is not None:
                raise failure(error)
        email = query["email"]
        doc = next((d for d in self.inboxes.values() if d.get("email") == email), None)
        return Response.json(200, {"emailInbox": to_json(doc), "success": True})

    async def _send_test(
        self, request: Request, user: User | None, params: dict[str, str]
    ) -> Response:
        """``POST email-inbox.send-test/:_id`` (§1.7)."""
        assert user is not None
        doc = self.inboxes.get(params["_id"])
        if doc is None:
            raise failure("Resource not found", status=404)
        # Only active inboxes are configured in memory (EmailInbox.ts, §1.7, §4).
        if not doc.get("active"):
            raise failure("inbox-not-found")
        if not (user.email and user.email_verified):
            raise failure("user-without-verified-email")
        self.sent_tests.append(SentTest(params["_id"], user.email))
        return Response.json(200, {"_id": params["_id"], "success": True})

    async def _departments(
        self, request: Request, user: User | None, params: dict[str, str]
    ) -> Response:
        """``GET /api/v1/livechat/department``: ``text`` is a case-insensitive substring."""
        offset, count = self._pagination(request)
        text = (request.log.param("text") or "").lower()
        found = [d for d in self.departments if text in d["name"].lower()]
        found.sort(key=lambda d: d["name"])
        page = found[offset:] if count == 0 else found[offset : offset + count]
        return Response.json(
            200,
            {
                "departments": copy.deepcopy(page),
                "count": len(page),
                "offset": offset,
                "total": len(found),
                "success": True,
            },
        )
