"""Fault injection for the Rocket.Chat double: test-only, so it stays out of the package.

:class:`FaultyRocketChat` is the double plus :meth:`~FaultyRocketChat.inject` (answer the
next request(s) of a route with a :class:`Fault`) and
:meth:`~FaultyRocketChat.wait_answered` (a synchronisation point for slow requests).
:meth:`Fault.hold` keeps a request until the test releases it, and
:meth:`~FaultyRocketChat.wait_received` waits until requests have arrived (held or not):
together they stop a client at an exact moment without a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from provision.sandbox.rocketchat import RocketChatDouble
from provision.sandbox.rocketchat.routes import Route
from provision.sandbox.rocketchat.wire import LoggedRequest, Request, Response

__all__ = ["Fault", "FaultyRocketChat"]


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
        hold: keep the request until this event is set, then answer normally (with
            ``apply``: the write is done at once, only the answer waits). A reset or
            shutdown meanwhile answers 503 without processing it.
    """

    status: int = 500
    body: bytes | None = None
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    apply: bool = False
    passthrough: bool = False
    hold: asyncio.Event | None = None

    @classmethod
    def held(cls, release: asyncio.Event, *, apply: bool = False) -> Fault:
        """Keep the request until ``release`` is set (``apply``: process it first)."""
        return cls(hold=release, apply=apply, passthrough=True)

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

    def response(self) -> Response:
        body = self.body
        if body is None:
            body = json.dumps(
                {"success": False, "error": _REASONS.get(self.status, "error")}
            ).encode()
        return Response(self.status, body, [("content-type", self.content_type), *self.headers])


@dataclass(slots=True)
class _Armed:
    method: str
    path: str
    fault: Fault
    remaining: int
    skip: int = 0


class FaultyRocketChat(RocketChatDouble):
    """The double, with scripted faults and a wait for answered requests."""

    def __init__(self, **kw: Any) -> None:
        self._closing: asyncio.Event | None = None
        self._answered: asyncio.Condition | None = None
        self._received: asyncio.Condition | None = None
        self._generation = 0
        self._faults: list[_Armed] = []
        super().__init__(**kw)

    def reset(self) -> None:
        """Forget everything, armed faults included; release slow responses still pending."""
        super().reset()
        if self._closing is not None:
            self._closing.set()
        self._closing = None
        self._generation += 1
        self._faults = []

    def shutdown(self) -> None:
        """Also release slow responses (they answer 503)."""
        super().shutdown()
        self._generation += 1
        if self._closing is not None:
            self._closing.set()

    def inject(
        self, method: str, path: str, fault: Fault, *, times: int = 1, skip: int = 0
    ) -> None:
        """Make the next ``times`` requests of a route misbehave.

        Args:
            method: HTTP method, or ``"*"``.
            path: the request path (``/api/v1/email-inbox``) or a route template
                (``/api/v1/email-inbox/:_id``).
            fault: what to do.
            times: how many requests it applies to.
            skip: let this many matching requests through first.
        """
        self._faults.append(_Armed(method.upper(), path, fault, times, skip))

    async def wait_received(self, method: str, path: str, count: int) -> None:
        """Wait until ``count`` requests of a route (path or template) have arrived.

        Held ones count: the point is to know where a client is. Put a timeout around it.
        """
        if self._received is None:
            self._received = asyncio.Condition()
        async with self._received:
            await self._received.wait_for(lambda: self._count(method, path) >= count)

    def _count(self, method: str, path: str) -> int:
        def matches(logged: LoggedRequest) -> bool:
            route = self.route(logged.path)[0]
            return logged.path == path or (route is not None and route.template == path)

        return sum(1 for r in self.requests if r.method == method.upper() and matches(r))

    def inbox_id(self, email: str) -> str:
        """The id of the stored inbox with this address (``KeyError`` if none)."""
        for inbox_id, doc in self.inboxes.items():
            if doc.get("email") == email:
                return str(inbox_id)
        raise KeyError(email)

    def imap_keeps_failing(self, email: str) -> str:
        """Rocket.Chat's IMAP connection of this inbox fails ``imap.maxRetries`` times (its
        password was rotated at the provider, say): it switches the inbox off as
        ``selfDisable()`` does (§3.2). Returns the inbox's id."""
        inbox_id = self.inbox_id(email)
        self.bad_imap_passwords.add(self.inboxes[inbox_id]["imap"]["password"])
        self._self_disable(inbox_id)
        return inbox_id

    def switch_off(self, email: str) -> str:
        """The inbox is stored inactive although its logins work (switched off by an
        earlier outage, or by hand). Returns the inbox's id."""
        inbox_id = self.inbox_id(email)
        self.inboxes[inbox_id]["active"] = False
        return inbox_id

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

    async def respond(self, request: Request) -> Response:
        if self._received is not None:
            async with self._received:
                self._received.notify_all()
        response = await self._respond_with_fault(request)
        # Set here too, so that waiters woken below see it.
        request.log.status = response.status
        if self._answered is not None:
            async with self._answered:
                self._answered.notify_all()
        return response

    async def _respond_with_fault(self, request: Request) -> Response:
        route, params = self.route(request.log.path)
        fault = self._take_fault(request, route)
        if fault is not None and fault.hold is not None:
            return await self._held(request, route, params, fault, fault.hold)
        if fault is not None and fault.delay > 0:
            generation = self._generation
            await self._pause(fault.delay)
            if generation != self._generation:
                # Reset (or shut down) meanwhile: never touch the new state.
                return Fault.error(503).response()
        if fault is not None and not (fault.apply or fault.passthrough):
            return fault.response()
        response = await self.process(request, route, params)
        if fault is not None and fault.apply and not fault.passthrough:
            return fault.response()
        return response

    async def _held(
        self,
        request: Request,
        route: Route | None,
        params: dict[str, str],
        fault: Fault,
        release: asyncio.Event,
    ) -> Response:
        applied = await self.process(request, route, params) if fault.apply else None
        generation = self._generation
        if self._closing is None:
            self._closing = asyncio.Event()
        closing = self._closing
        waits = [asyncio.ensure_future(release.wait()), asyncio.ensure_future(closing.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if applied is not None:
            return applied
        if generation != self._generation:
            return Fault.error(503).response()
        return await self.process(request, route, params)

    def _take_fault(self, request: Request, route: Route | None) -> Fault | None:
        for armed in self._faults:
            if armed.method not in ("*", request.log.method):
                continue
            if armed.path != request.log.path and (route is None or armed.path != route.template):
                continue
            if armed.skip > 0:
                armed.skip -= 1
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
