"""The HTTP surface: the route table and its handlers (spec §1.1-§1.8, §2)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.sandbox.rocketchat import store
from provision.sandbox.rocketchat.auth import DEPARTMENT_VIEW, MANAGE, User, login
from provision.sandbox.rocketchat.validation import (
    E4_INBOX,
    E5_INBOX,
    E5_LIST,
    E5_SEARCH,
    ajv,
    e5_defaults,
    meteor_check,
)
from provision.sandbox.rocketchat.wire import Request, Response, failure, to_json

if TYPE_CHECKING:
    from provision.sandbox.rocketchat.app import RocketChatDouble

__all__ = ["Method", "Params", "Route", "find_route"]

Params = dict[str, str]
Handler = Callable[["RocketChatDouble", Request, User | None, Params], Awaitable[Response]]
Validator = Callable[["RocketChatDouble", Request], None]


@dataclass(frozen=True, slots=True)
class Method:
    """How one method of a route is served: auth, permissions, E5 validation, handler."""

    handler: Handler
    auth: bool = True
    permissions: tuple[str, ...] = ()
    e5_validate: Validator | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A route template (``/api/v1/email-inbox/:_id``) and its methods."""

    template: str
    pattern: re.Pattern[str]
    methods: dict[str, Method]


def find_route(path: str) -> tuple[Route | None, Params]:
    """The route serving ``path`` and its parameters (``_id``)."""
    for route in _ROUTES:
        found = route.pattern.fullmatch(path)
        if found:
            return route, found.groupdict()
    return None, {}


async def _info(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    return Response.json(200, {"version": double.version, "success": True})


async def _login(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    body = request.body if isinstance(request.body, dict) else {}
    return login(double.users.values(), body, request.headers, seven=double.seven)


async def _logout(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    """Deletes the presented token, a personal access token included (§2)."""
    assert user is not None
    token = request.headers["x-auth-token"]
    kind = user.tokens.pop(token)
    double.logouts.append((user.id, token, kind))
    return Response.json(200, {"status": "success", "data": {"message": "You've been logged out!"}})


async def _me(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    assert user is not None
    return Response.json(200, {**user.me(), "success": True})


def _e5_body(double: RocketChatDouble, request: Request) -> None:
    body = copy.deepcopy(request.body) if request.body is not None else {}
    error = ajv(body, E5_INBOX, password_min=double.e5_password_min)
    if error is not None:
        raise failure(error, errorType="error-invalid-params")
    request.coerced = body


def _e5_query(request: Request, schema: Mapping[str, Any]) -> None:
    error = ajv(dict(request.log.query), schema)
    if error is not None:
        raise failure(error, errorType="error-invalid-params")


def _e5_search(double: RocketChatDouble, request: Request) -> None:
    _e5_query(request, E5_SEARCH)


def _e5_list(double: RocketChatDouble, request: Request) -> None:
    _e5_query(request, E5_LIST)


async def _save(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    """``POST /api/v1/email-inbox``: insert or update (§1.2)."""
    assert user is not None
    if double.e5:
        body = copy.deepcopy(request.coerced)
        e5_defaults(body)
    else:
        body = copy.deepcopy(request.body) if request.body is not None else {}
        error = meteor_check(body, E4_INBOX)
        if error is not None:
            raise failure(error)
    if body.get("_id"):
        inbox_id: Any = store.update(double.inboxes, body, double.database)
    else:
        inbox_id = store.insert(double.inboxes, body, user, double.database)
        # The stored document keeps the explicit empty/null _id; 6.10+ then
        # answers "Failed to create email inbox" (§1.2, inferred edge).
        if inbox_id is None or (not inbox_id and double.version_info >= (6, 10)):
            raise failure("Failed to create email inbox")
    double.watch(inbox_id)
    if double.version_info < (4, 8):
        # E0 echoed the body's (undefined) _id: no id in the answer (§1.2).
        return Response.json(200, {"success": True})
    return Response.json(200, {"_id": inbox_id, "success": True})


async def _list(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    """``GET /api/v1/email-inbox.list`` with offset/count/sort (§1.3)."""
    offset, count = _pagination(double, request)
    sort_text = request.log.param("sort")
    try:
        sort = json.loads(sort_text) if sort_text else {"name": 1}
    except ValueError:
        raise failure("Invalid sort parameter") from None
    docs = list(double.inboxes.values())
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


def _pagination(double: RocketChatDouble, request: Request) -> tuple[int, int]:
    """``getPaginationItems``: default 50, capped by the upper limit (§1.3)."""
    try:
        offset = int(request.log.param("offset") or 0)
        count = int(request.log.param("count") or 50)
    except ValueError:
        raise failure("Invalid offset or count") from None
    return max(offset, 0), min(max(count, 0), double.list_count_limit)


async def _get(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    doc = double.inboxes.get(params["_id"])
    if doc is None:
        if double.version_info < (5, 3):
            # Before PR #26796 (5.3.0) an unknown id was a 200 with a null payload (§1.4).
            return Response.json(200, {"success": True})
        raise failure("Resource not found", status=404)
    return Response.json(200, {**to_json(doc), "success": True})


async def _delete(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    """``DELETE /api/v1/email-inbox/:_id``: the same answers in E4 and E5 (§1.5, §1.8)."""
    if double.inboxes.pop(params["_id"], None) is None:
        raise failure("Resource not found", status=404)
    # The deletion restarts the inbox connections (§4): a pending self-disable is moot.
    double.forget(params["_id"])
    double.deleted.append(params["_id"])
    return Response.json(200, {"_id": params["_id"], "success": True})


async def _search(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    """Exact, case-sensitive match; not found is 200 with null (§1.6)."""
    query: dict[str, Any] = {}
    for key, value in request.log.query:
        # Repeated keys arrive as an array, which check() reports as an object.
        query[key] = [*query[key], value] if key in query else value
    if not double.e5:
        error = meteor_check(query, {"email": "string"})
        if error is not None:
            raise failure(error)
    email = query["email"]
    doc = next((d for d in double.inboxes.values() if d.get("email") == email), None)
    return Response.json(200, {"emailInbox": to_json(doc), "success": True})


async def _send_test(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    """``POST email-inbox.send-test/:_id`` (§1.7)."""
    assert user is not None
    doc = double.inboxes.get(params["_id"])
    if doc is None:
        raise failure("Resource not found", status=404)
    # Only active inboxes are configured in memory (EmailInbox.ts, §1.7, §4).
    if not doc.get("active"):
        raise failure("inbox-not-found")
    if not (user.email and user.email_verified):
        raise failure("user-without-verified-email")
    double.sent_tests.append(store.SentTest(params["_id"], user.email))
    return Response.json(200, {"_id": params["_id"], "success": True})


async def _departments(
    double: RocketChatDouble, request: Request, user: User | None, params: Params
) -> Response:
    """``GET /api/v1/livechat/department``: ``text`` is a case-insensitive substring."""
    offset, count = _pagination(double, request)
    text = (request.log.param("text") or "").lower()
    found = [d for d in double.departments if text in d["name"].lower()]
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


def _route(template: str, methods: dict[str, Method]) -> Route:
    regex = re.escape(template).replace(":_id", "(?P<_id>[^/]+)")
    return Route(template, re.compile(regex), methods)


_INBOX = "/api/v1/email-inbox"
_ROUTES: tuple[Route, ...] = (
    _route("/api/info", {"GET": Method(_info, auth=False)}),
    _route("/api/v1/login", {"POST": Method(_login, auth=False)}),
    _route("/api/v1/logout", {"POST": Method(_logout), "GET": Method(_logout)}),
    _route("/api/v1/me", {"GET": Method(_me)}),
    _route(_INBOX, {"POST": Method(_save, permissions=MANAGE, e5_validate=_e5_body)}),
    _route(f"{_INBOX}.list", {"GET": Method(_list, permissions=MANAGE, e5_validate=_e5_list)}),
    _route(
        f"{_INBOX}.search", {"GET": Method(_search, permissions=MANAGE, e5_validate=_e5_search)}
    ),
    _route(f"{_INBOX}.send-test/:_id", {"POST": Method(_send_test, permissions=MANAGE)}),
    _route(
        f"{_INBOX}/:_id",
        {"GET": Method(_get, permissions=MANAGE), "DELETE": Method(_delete, permissions=MANAGE)},
    ),
    _route(
        "/api/v1/livechat/department", {"GET": Method(_departments, permissions=DEPARTMENT_VIEW)}
    ),
)
