"""Hostile or broken Rocket.Chat: what ``tests/test_rocketchat_client.py`` leaves out (issue 5, 2).

That module covers 5xx bursts and their retries, timeouts, HTML error pages, 200 with
``success: false``, redirects to another host and scheme, and the read-back before a
POST is retried. Here: a TLS certificate for another name, an HTTPS server that
redirects to plain HTTP, truncated JSON, huge bodies, an answer that trickles in slower
than the run's deadline, and a slow POST that Rocket.Chat applies after the client gave
up. Each ends in a classified error, within the deadline, without a secret in its text
and without the token reaching anything but the configured origin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from provision.errors import (
    RocketChatProtocolError,
    RocketChatRedirectError,
    RocketChatTlsError,
    RocketChatUnavailableError,
)
from provision.models import Secret
from provision.rocketchat.client import RocketChat
from provision.rocketchat.credentials import TokenAuth
from provision.rocketchat.payload import inbox_payload, plan_body_for_create
from provision.rocketchat.transport import RetryPolicy, make_http_client
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.rocketchat import RocketChatDouble, User, start_rocketchat
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat
from tests.test_rocketchat_client import make_inbox

TOKEN = "CANARY-hostile-rc-token-4d1e"
INBOX = "/api/v1/email-inbox"
SEARCH = f"{INBOX}.search"
FAST = RetryPolicy(attempts=2, backoff=0.001, max_backoff=0.005)


@pytest.fixture
def double() -> FaultyRocketChat:
    return FaultyRocketChat()


@pytest.fixture
def admin(double: RocketChatDouble) -> User:
    return double.add_admin("hostile-admin", token=TOKEN)


def assert_clean(exc: BaseException) -> None:
    assert TOKEN not in f"{exc} {exc.args!r}"


async def connected(url: str, admin: User, **kw: object) -> tuple[RocketChat, httpx.AsyncClient]:
    http = make_http_client(url, timeout=float(kw.pop("timeout", 5.0)), **kw)  # type: ignore[arg-type]
    client = RocketChat(http, TokenAuth(user_id=admin.id, token=Secret(TOKEN)), retry=FAST)
    await client.connect()
    return client, http


@pytest.fixture
async def plain(double: RocketChatDouble, admin: User) -> AsyncIterator[RocketChat]:
    running = await start_rocketchat(double)
    client, http = await connected(running.url, admin)
    try:
        yield client
    finally:
        await http.aclose()
        await running.close()


async def test_certificate_for_another_name_sends_no_token(
    double: RocketChatDouble, admin: User, sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    context = sandbox_ca.server_context(CertKind.WRONG_HOST)
    async with await start_rocketchat(double, ssl_context=context) as running:
        http = make_http_client(running.url, ca_file=ca_file)
        async with http:
            client = RocketChat(http, TokenAuth(user_id=admin.id, token=Secret(TOKEN)), retry=FAST)
            with pytest.raises(RocketChatTlsError) as caught:
                await client.connect()
    assert "127.0.0.1" in str(caught.value)  # names the host the certificate does not cover
    assert double.requests == []  # the handshake failed: no request, no token
    assert_clean(caught.value)


async def test_https_redirect_to_plain_http_is_not_followed(
    double: RocketChatDouble, admin: User, sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    elsewhere = RocketChatDouble()
    async with (
        await start_rocketchat(double, ssl_context=sandbox_ca.server_context()) as running,
        await start_rocketchat(elsewhere) as downgrade,
    ):
        client, http = await connected(running.url, admin, ca_file=ca_file)
        try:
            double.inject("GET", SEARCH, Fault.redirect(f"{downgrade.url}{SEARCH}?email=x"))
            with pytest.raises(RocketChatRedirectError, match=r"http://127\.0\.0\.1") as caught:
                await client.search_inbox("support@example.com")
        finally:
            await http.aclose()
    assert elsewhere.requests == []
    assert_clean(caught.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [(200, RocketChatProtocolError), (500, RocketChatUnavailableError)],
)
async def test_truncated_json_is_a_classified_error(
    double: RocketChatDouble, plain: RocketChat, status: int, error: type[Exception]
) -> None:
    body = b'{"success": true, "emailInbox": {"_id": "abc", "email": "support@exa'
    double.inject("GET", SEARCH, Fault(status=status, body=body), times=5)
    with pytest.raises(error) as caught:
        await plain.search_inbox("support@example.com")
    assert "JSON" in str(caught.value) or "non-JSON" in str(caught.value)
    assert_clean(caught.value)


@pytest.mark.parametrize("kind", ["json", "html"])
async def test_huge_body_is_refused_not_parsed(
    double: RocketChatDouble, plain: RocketChat, kind: str
) -> None:
    size = 40 * 2**20
    if kind == "json":
        fault = Fault(status=200, body=b'{"success": true, "pad": "' + b"x" * size + b'"}')
    else:
        fault = Fault(status=502, body=b"<html>" + b"x" * size, content_type="text/html")
    double.inject("GET", SEARCH, fault, times=5)
    started = time.perf_counter()
    with pytest.raises((RocketChatProtocolError, RocketChatUnavailableError)) as caught:
        await plain.search_inbox("support@example.com")
    assert time.perf_counter() - started < 5
    assert "too large" in str(caught.value)
    assert_clean(caught.value)


class _Endless(httpx.AsyncByteStream):
    """A body without a length that never ends, a MiB at a time."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"x" * 2**20
        while True:
            yield chunk
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        pass


class _Trickle(httpx.AsyncByteStream):
    """A body that never finishes: a byte every 50 ms (each read is within any timeout)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"success": true, "emailInbox": null'
        while True:
            await asyncio.sleep(0.05)
            yield b" "

    async def aclose(self) -> None:
        pass


class _StreamOn(httpx.AsyncBaseTransport):
    """The real transport, except that one path answers 200 with ``stream``."""

    def __init__(self, path: str, stream: httpx.AsyncByteStream) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.path = path
        self.stream = stream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            return httpx.Response(
                200, headers={"content-type": "application/json"}, stream=self.stream
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_answer_that_trickles_past_the_deadline_is_cut(
    double: RocketChatDouble, admin: User
) -> None:
    async with await start_rocketchat(double) as running:
        http = make_http_client(running.url, transport=_StreamOn(SEARCH, _Trickle()))
        async with http:
            deadline = time.monotonic() + 1.0
            client = RocketChat(
                http,
                TokenAuth(user_id=admin.id, token=Secret(TOKEN)),
                retry=FAST,
                deadline=deadline,
            )
            await client.connect()
            started = time.perf_counter()
            with pytest.raises(RocketChatUnavailableError) as caught:
                async with asyncio.timeout(5):  # the guard: a hang fails here
                    await client.search_inbox("support@example.com")
    assert time.perf_counter() - started < 1.5
    assert "deadline" in str(caught.value)
    assert_clean(caught.value)


async def test_endless_body_without_a_length_is_cut_at_the_limit(
    double: RocketChatDouble, admin: User
) -> None:
    async with await start_rocketchat(double) as running:
        http = make_http_client(running.url, transport=_StreamOn(SEARCH, _Endless()))
        async with http:
            client = RocketChat(http, TokenAuth(user_id=admin.id, token=Secret(TOKEN)), retry=FAST)
            await client.connect()
            with pytest.raises(RocketChatProtocolError, match="too large") as caught:
                async with asyncio.timeout(5):
                    await client.search_inbox("support@example.com")
    assert_clean(caught.value)


async def test_slow_post_applied_after_the_client_gave_up_is_not_doubled(
    double: RocketChatDouble, admin: User
) -> None:
    """The POST times out, the read-back finds nothing yet, the retry creates the inbox;
    the first POST lands later and is refused by the unique address (Rocket.Chat's E11000),
    so there is one inbox."""
    async with await start_rocketchat(double) as running:
        client, http = await connected(running.url, admin, timeout=0.3)
        try:
            double.inject("POST", INBOX, Fault.slow(0.8))
            inbox_id = await client.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
            async with asyncio.timeout(5):  # the slow first POST still lands on the server
                await double.wait_answered("POST", INBOX, 2)
        finally:
            await http.aclose()
    assert list(double.inboxes) == [inbox_id]
    assert [r.status for r in double.requests_to("POST", INBOX)] == [400, 200]
