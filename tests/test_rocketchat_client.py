"""The Rocket.Chat client against the double over real HTTP on 127.0.0.1.

One double serves the whole module (uvicorn in the module's event loop) and is
reset before each test. Canary secrets are used everywhere; no exception text may
contain them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from provision.errors import (
    ConfigError,
    RocketChatAuthError,
    RocketChatCallError,
    RocketChatDepartmentError,
    RocketChatDuplicateEmailError,
    RocketChatError,
    RocketChatNotFoundError,
    RocketChatPermissionError,
    RocketChatProtocolError,
    RocketChatRateLimitedError,
    RocketChatRedirectError,
    RocketChatRejectedError,
    RocketChatTlsError,
    RocketChatTwoFactorError,
    RocketChatUnavailableError,
    RocketChatUnknownInboxError,
    RocketChatValidationError,
)
from provision.models import ImapSettings, Inbox, Secret, SmtpSettings
from provision.rocketchat.client import RocketChat, open_rocketchat
from provision.rocketchat.credentials import (
    PasswordAuth,
    TokenAuth,
    check_url,
    credentials_from_env,
)
from provision.rocketchat.dialects import Dialect, dialect_for
from provision.rocketchat.payload import (
    FieldChange,
    diff_inbox,
    inbox_payload,
    plan_body_for_create,
    plan_body_for_update,
)
from provision.rocketchat.transport import RetryPolicy, RocketChatOptions, make_http_client
from provision.sandbox.ca import SandboxCA
from provision.sandbox.rocketchat import (
    RateLimit,
    RocketChatDouble,
    RunningRocketChat,
    User,
    start_rocketchat,
)
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat

module_loop = pytest.mark.asyncio(loop_scope="module")

INBOX = "/api/v1/email-inbox"
SEARCH = f"{INBOX}.search"
TOKEN = "CANARY-TOKEN-7f3a9c"
PASSWORD = "CANARY-PASSWORD-91b2"
CODE = "CANARY-2FA-5150"
SMTP_PW = "CANARY-SMTP-PW-e1"
IMAP_PW = "CANARY-IMAP-PW-e2"
CANARIES = (TOKEN, PASSWORD, CODE, SMTP_PW, IMAP_PW)
FAST = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.005)


def assert_clean(exc: BaseException, *extra: str) -> None:
    """No secret in the exception's text, arguments, hint or server error."""
    texts = [str(exc), repr(exc.args)]
    if isinstance(exc, RocketChatCallError):
        texts += [exc.hint or "", exc.error or ""]
    for text in texts:
        for secret in (*CANARIES, *extra):
            assert secret not in text, f"secret leaked into {text!r}"


def make_inbox(**changes: Any) -> Inbox:
    fields: dict[str, Any] = {
        "name": "Support",
        "email": "support@example.com",
        "sender_info": "Support Team",
        "smtp": SmtpSettings(
            server="smtp.example.com",
            port=587,
            username="support@example.com",
            password=Secret(SMTP_PW),
            secure=False,
        ),
        "imap": ImapSettings(
            server="imap.example.com",
            port=993,
            username="support@example.com",
            password=Secret(IMAP_PW),
            secure=True,
            max_retries=10,
        ),
    }
    fields.update(changes)
    return Inbox(**fields)


# -------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[RunningRocketChat]:
    async with await start_rocketchat(FaultyRocketChat()) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def elsewhere() -> AsyncIterator[RunningRocketChat]:
    """Another host (127.0.0.2) that must never see a request."""
    async with await start_rocketchat(host="127.0.0.2") as running:
        yield running


@pytest.fixture
def app(server: RunningRocketChat) -> RocketChatDouble:
    server.app.reset()
    return server.app


@pytest.fixture
def admin(app: RocketChatDouble) -> User:
    return app.add_admin(password=PASSWORD, token=TOKEN)


MakeClient = Callable[..., RocketChat]


@pytest_asyncio.fixture(loop_scope="module")
async def make_rc(server: RunningRocketChat, admin: User) -> AsyncIterator[MakeClient]:
    opened: list[Any] = []

    def make(
        credentials: TokenAuth | PasswordAuth | None = None,
        *,
        url: str | None = None,
        retry: RetryPolicy = FAST,
        deadline: float | None = None,
        timeout: float = 5.0,
        ca_file: Path | None = None,
    ) -> RocketChat:
        http = make_http_client(url or server.url, timeout=timeout, ca_file=ca_file)
        opened.append(http)
        credentials = credentials or TokenAuth(user_id=admin.id, token=Secret(TOKEN))
        return RocketChat(http, credentials, retry=retry, deadline=deadline)

    yield make
    for http in opened:
        await http.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def rc(make_rc: MakeClient) -> RocketChat:
    client = make_rc()
    await client.connect()
    return client


def paths(app: RocketChatDouble) -> list[str]:
    return [f"{r.method} {r.path}" for r in app.requests]


# ------------------------------------------------------------------ auth


@module_loop
async def test_token_is_verified_before_anything_else(
    app: RocketChatDouble, admin: User, make_rc: MakeClient
) -> None:
    client = make_rc()
    info = await client.connect()
    assert paths(app) == ["GET /api/v1/me", "GET /api/info"]
    first = app.requests[0]
    assert (first.token, first.user_id) == (TOKEN, admin.id)
    assert (info.version, info.dialect, info.own_session) == ("6.13.0", Dialect.E4, False)
    assert info.plain_http is True
    await client.close()
    assert app.logouts == []
    assert TOKEN in admin.tokens


@module_loop
async def test_bad_token_fails_on_the_first_request(
    app: RocketChatDouble, admin: User, make_rc: MakeClient
) -> None:
    wrong = "CANARY-WRONG-TOKEN-00"
    client = make_rc(TokenAuth(user_id=admin.id, token=Secret(wrong)))
    with pytest.raises(RocketChatAuthError) as caught:
        await client.connect()
    assert caught.value.status == 401
    assert "ROCKETCHAT_AUTH_TOKEN" in (caught.value.hint or "")
    assert paths(app) == ["GET /api/v1/me"]
    assert_clean(caught.value, wrong)


@module_loop
async def test_password_login_logs_out_only_its_own_session(
    app: RocketChatDouble, admin: User, make_rc: MakeClient
) -> None:
    client = make_rc(PasswordAuth(user="admin", password=Secret(PASSWORD)))
    info = await client.connect()
    assert info.own_session is True
    login = app.requests[0]
    assert (login.method, login.path) == ("POST", "/api/v1/login")
    assert login.body == {"user": "admin", "password": PASSWORD}
    assert login.token is None
    session_token = app.requests[1].token
    assert session_token not in (None, TOKEN)
    await client.close()
    assert app.logouts == [(admin.id, session_token, "login")]
    assert TOKEN in admin.tokens  # the personal access token is untouched


@module_loop
async def test_open_rocketchat_never_logs_out_a_given_token(
    server: RunningRocketChat, app: RocketChatDouble, admin: User
) -> None:
    async with open_rocketchat(
        server.url, TokenAuth(user_id=admin.id, token=Secret(TOKEN)), RocketChatOptions(retry=FAST)
    ) as client:
        assert await client.search_inbox("support@example.com") is None
    assert app.logouts == []
    assert not [r for r in app.requests if r.path == "/api/v1/logout"]
    async with open_rocketchat(
        server.url, PasswordAuth(user="admin", password=Secret(PASSWORD))
    ) as client:
        assert client.info.own_session
    assert len(app.logouts) == 1
    assert app.logouts[0][1] != TOKEN


@module_loop
async def test_totp_required_is_explained(app: RocketChatDouble, make_rc: MakeClient) -> None:
    boss = app.add_user("boss", PASSWORD, admin=True, two_factor=True)
    boss.two_factor_code = CODE
    client = make_rc(PasswordAuth(user="boss", password=Secret(PASSWORD)))
    with pytest.raises(RocketChatTwoFactorError) as caught:
        await client.connect()
    message = str(caught.value)
    assert caught.value.two_factor_method == "email"
    assert "method email" in message
    assert "personal access token" in message
    assert "ROCKETCHAT_2FA_CODE" in message
    assert_clean(caught.value)
    wrong = make_rc(PasswordAuth(user="boss", password=Secret(PASSWORD), code=Secret("999")))
    with pytest.raises(RocketChatTwoFactorError, match="rejected the two-factor code"):
        await wrong.connect()
    with_code = make_rc(PasswordAuth(user="boss", password=Secret(PASSWORD), code=Secret(CODE)))
    await with_code.connect()
    assert app.requests_to("POST", "/api/v1/login")[-1].body["code"] == CODE
    await with_code.close()


@module_loop
async def test_wrong_password_is_an_auth_error_without_the_password(
    app: RocketChatDouble, make_rc: MakeClient
) -> None:
    client = make_rc(PasswordAuth(user="admin", password=Secret("CANARY-BAD-PW")))
    with pytest.raises(RocketChatAuthError) as caught:
        await client.connect()
    assert not isinstance(caught.value, RocketChatTwoFactorError)
    assert "Incorrect password" in str(caught.value)
    assert_clean(caught.value, "CANARY-BAD-PW")


@module_loop
async def test_403_names_the_permission(app: RocketChatDouble, make_rc: MakeClient) -> None:
    agent = app.add_user("agent", token="CANARY-AGENT-TOKEN")
    client = make_rc(TokenAuth(user_id=agent.id, token=Secret("CANARY-AGENT-TOKEN")))
    await client.connect()
    with pytest.raises(RocketChatPermissionError):
        await client.check_access()
    with pytest.raises(RocketChatPermissionError) as caught:
        await client.search_inbox("support@example.com")
    assert caught.value.permission == "manage-email-inbox"
    assert "'manage-email-inbox'" in str(caught.value)
    assert_clean(caught.value, "CANARY-AGENT-TOKEN")
    with pytest.raises(RocketChatPermissionError, match="view-livechat-departments"):
        await client.list_departments()


# ------------------------------------------------------------ rate limits


@module_loop
async def test_429_waits_until_the_reset_then_retries(
    app: RocketChatDouble, make_rc: MakeClient
) -> None:
    bot = app.add_user("bot", permissions={"manage-email-inbox"}, token="CANARY-BOT")
    client = make_rc(TokenAuth(user_id=bot.id, token=Secret("CANARY-BOT")))
    await client.connect()
    app.rate_limit = RateLimit(calls=1, interval_ms=200)
    assert await client.search_inbox("a@example.com") is None
    started = time.monotonic()
    assert await client.search_inbox("a@example.com") is None
    assert time.monotonic() - started < 2
    searches = app.requests_to("GET", SEARCH)
    assert [r.status for r in searches] == [200, 429, 200]
    # The retry went out after the window that opened with the first search closed.
    assert searches[2].at * 1000 >= searches[0].at * 1000 + 200


@module_loop
async def test_429_gives_up_when_the_reset_is_beyond_the_deadline(
    app: RocketChatDouble, make_rc: MakeClient
) -> None:
    bot = app.add_user("bot", permissions={"manage-email-inbox"}, token="CANARY-BOT")
    client = make_rc(
        TokenAuth(user_id=bot.id, token=Secret("CANARY-BOT")), deadline=time.monotonic() + 1
    )
    await client.connect()
    app.rate_limit = RateLimit(calls=1, interval_ms=60_000)
    await client.search_inbox("a@example.com")
    started = time.monotonic()
    with pytest.raises(RocketChatRateLimitedError) as caught:
        await client.search_inbox("a@example.com")
    assert time.monotonic() - started < 0.5
    assert caught.value.reset_at is not None
    assert caught.value.reset_at > time.time() + 50
    assert len(app.requests_to("GET", SEARCH)) == 2
    assert_clean(caught.value, "CANARY-BOT")


# ------------------------------------------------------------- unavailability


@module_loop
async def test_5xx_is_retried_then_reported(app: RocketChatDouble, rc: RocketChat) -> None:
    app.inject("GET", SEARCH, Fault.error(503), times=10)
    with pytest.raises(RocketChatUnavailableError) as caught:
        await rc.search_inbox("support@example.com")
    assert caught.value.status == 503
    assert caught.value.write_state is None
    assert len(app.requests_to("GET", SEARCH)) == FAST.attempts
    assert_clean(caught.value)


@module_loop
async def test_5xx_is_retried_until_it_works(app: RocketChatDouble, rc: RocketChat) -> None:
    app.inject("GET", SEARCH, Fault.html(502), times=2)
    assert await rc.search_inbox("support@example.com") is None
    assert [r.status for r in app.requests_to("GET", SEARCH)] == [502, 502, 200]


@module_loop
async def test_timeout_is_retried(app: RocketChatDouble, make_rc: MakeClient) -> None:
    client = make_rc(timeout=0.3)
    await client.connect()
    app.inject("GET", SEARCH, Fault.slow(30))
    assert await client.search_inbox("support@example.com") is None
    assert len(app.requests_to("GET", SEARCH)) == 2


@module_loop
async def test_post_not_repeated_when_read_back_shows_it_applied(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    app.inject("POST", INBOX, Fault.error(502, apply=True))
    body = plan_body_for_create(inbox_payload(make_inbox()))
    inbox_id = await rc.save_inbox(body)
    assert len(app.requests_to("POST", INBOX)) == 1
    assert len(app.requests_to("GET", SEARCH)) == 1
    assert list(app.inboxes) == [inbox_id]


@module_loop
async def test_post_retried_when_read_back_shows_it_did_not_apply(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    app.inject("POST", INBOX, Fault.error(503))
    inbox_id = await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
    assert [r.status for r in app.requests_to("POST", INBOX)] == [503, 200]
    assert list(app.inboxes) == [inbox_id]


@module_loop
async def test_post_outcome_unknown_when_read_back_fails(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    app.inject("POST", INBOX, Fault.error(502, apply=True))
    app.inject("GET", SEARCH, Fault.error(503), times=10)
    with pytest.raises(RocketChatUnavailableError) as caught:
        await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
    assert caught.value.write_state == "unknown"
    assert "may or may not have been applied" in str(caught.value)
    assert len(app.requests_to("POST", INBOX)) == 1
    assert_clean(caught.value)


@module_loop
async def test_post_gives_up_with_not_applied(app: RocketChatDouble, rc: RocketChat) -> None:
    app.inject("POST", INBOX, Fault.error(503), times=10)
    with pytest.raises(RocketChatUnavailableError) as caught:
        await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
    assert caught.value.write_state == "not-applied"
    assert len(app.requests_to("POST", INBOX)) == FAST.attempts
    assert app.inboxes == {}
    assert_clean(caught.value)


@module_loop
async def test_post_to_a_closed_port_is_not_applied_without_read_back(
    make_rc: MakeClient, admin: User
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_rc(url=f"http://127.0.0.1:{port}")
    with pytest.raises(RocketChatUnavailableError) as caught:
        await client.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
    assert caught.value.request_sent is False
    assert caught.value.write_state == "not-applied"
    assert "could not connect" in str(caught.value)
    assert_clean(caught.value)


@module_loop
async def test_html_and_unsuccessful_bodies_are_reported(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    app.inject("GET", SEARCH, Fault.html(200))
    with pytest.raises(RocketChatProtocolError, match="HTML page"):
        await rc.search_inbox("support@example.com")
    app.inject("GET", SEARCH, Fault.html(502), times=10)
    with pytest.raises(RocketChatUnavailableError, match="HTML page"):
        await rc.search_inbox("support@example.com")
    app.reset()
    app.add_admin(password=PASSWORD, token=TOKEN, user_id=rc.info.user_id)
    app.inject("GET", SEARCH, Fault.unsuccessful("something broke"))
    with pytest.raises(RocketChatRejectedError, match="something broke"):
        await rc.search_inbox("support@example.com")


# ------------------------------------------------------------------ redirects


@module_loop
async def test_redirect_to_another_host_is_not_followed(
    app: RocketChatDouble, rc: RocketChat, elsewhere: RunningRocketChat, server: RunningRocketChat
) -> None:
    elsewhere.app.reset()
    app.inject("GET", SEARCH, Fault.redirect(f"{elsewhere.url}{SEARCH}?email=x"))
    with pytest.raises(RocketChatRedirectError) as caught:
        await rc.search_inbox("support@example.com")
    assert "127.0.0.2" in str(caught.value)
    assert elsewhere.app.requests == []
    https = server.url.replace("http://", "https://")
    app.inject("GET", SEARCH, Fault.redirect(f"{https}{SEARCH}?email=x", status=301))
    with pytest.raises(RocketChatRedirectError, match=r"https://127\.0\.0\.1"):
        await rc.search_inbox("support@example.com")
    assert len(app.requests_to("GET", SEARCH)) == 2
    assert_clean(caught.value)


@module_loop
async def test_same_origin_redirect_is_followed(
    app: RocketChatDouble, rc: RocketChat, admin: User
) -> None:
    app.inject("GET", SEARCH, Fault.redirect(f"{SEARCH}?email=other@example.com", status=307))
    assert await rc.search_inbox("support@example.com") is None
    first, second = app.requests_to("GET", SEARCH)
    assert (first.status, second.status) == (307, 200)
    assert second.param("email") == "other@example.com"
    assert second.token == TOKEN


@module_loop
async def test_post_redirect_that_drops_the_body_is_refused(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    app.inject("POST", INBOX, Fault.redirect(INBOX, status=302))
    with pytest.raises(RocketChatRedirectError, match="drop the request body"):
        await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))


# -------------------------------------------------------------- URL and TLS


@pytest.mark.parametrize(
    "url",
    [
        "http://chat.example.com",
        "ftp://chat.example.com",
        "https://admin:CANARY-URL-PW@chat.example.com",
        "https://chat.example.com/?x=1",
        "not a url",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    assert "CANARY-URL-PW" not in str(caught.value)
    assert caught.value.problems[0].field == "ROCKETCHAT_URL"


@pytest.mark.parametrize(
    "url",
    [
        "https://chat.example.com",
        "https://chat.example.com/sub/",
        "http://127.0.0.1:3000",
        "http://localhost:3000",
        "http://[::1]:3000",
    ],
)
def test_check_url_accepts(url: str) -> None:
    assert check_url(url).host


def test_plain_http_needs_allow_http_for_other_hosts() -> None:
    with pytest.raises(ConfigError, match="in clear"):
        make_http_client("http://chat.example.com")
    assert check_url("http://chat.example.com", allow_http=True).scheme == "http"


@module_loop
async def test_https_verifies_the_certificate(
    sandbox_ca: SandboxCA, ca_file: Path, app: RocketChatDouble, admin: User
) -> None:
    async with await start_rocketchat(app, ssl_context=sandbox_ca.server_context()) as tls:
        creds = TokenAuth(user_id=admin.id, token=Secret(TOKEN))
        async with open_rocketchat(tls.url, creds, RocketChatOptions(ca_file=ca_file)) as client:
            assert client.info.plain_http is False
        untrusted = make_http_client(tls.url)
        async with untrusted:
            with pytest.raises(RocketChatTlsError) as caught:
                await RocketChat(untrusted, creds, retry=FAST).connect()
        assert "certificate" in str(caught.value)
        assert_clean(caught.value)


# ------------------------------------------------------- rejections mapped


@module_loop
async def test_match_error_maps_to_field_and_hint(app: RocketChatDouble, rc: RocketChat) -> None:
    body = inbox_payload(make_inbox())
    del body["imap"]["maxRetries"]
    with pytest.raises(RocketChatValidationError) as caught:
        await rc.save_inbox(body)
    assert caught.value.field == "imap.maxRetries"
    assert "5.1" in (caught.value.hint or "")
    assert "Missing key 'maxRetries' in field imap" in str(caught.value)
    assert_clean(caught.value)
    bad = {**inbox_payload(make_inbox()), "smtp": {**body["smtp"], "port": "587"}}
    with pytest.raises(RocketChatValidationError) as port:
        await rc.save_inbox(bad)
    assert port.value.field == "smtp.port"


@module_loop
async def test_ajv_error_maps_in_e5(app: RocketChatDouble, rc: RocketChat) -> None:
    app.e5 = True
    body = inbox_payload(make_inbox())
    body["smtp"]["tls"] = {"rejectUnauthorized": False}
    with pytest.raises(RocketChatValidationError) as caught:
        await rc.save_inbox(body)
    assert "must NOT have additional properties" in str(caught.value)
    assert "inside smtp and imap" in (caught.value.hint or "")
    del body["smtp"]["tls"]
    del body["email"]
    with pytest.raises(RocketChatValidationError) as missing:
        await rc.save_inbox(body)
    assert missing.value.field == "email"


@module_loop
async def test_duplicate_unknown_and_missing_inboxes(app: RocketChatDouble, rc: RocketChat) -> None:
    body = plan_body_for_create(inbox_payload(make_inbox()))
    inbox_id = await rc.save_inbox(body)
    with pytest.raises(RocketChatDuplicateEmailError) as dup:
        await rc.save_inbox(body)
    assert dup.value.email == "support@example.com"
    assert "support@example.com" in str(dup.value)
    assert_clean(dup.value)
    with pytest.raises(RocketChatUnknownInboxError):
        await rc.save_inbox({**body, "_id": "gone"})
    with pytest.raises(RocketChatNotFoundError):
        await rc.get_inbox("gone")
    await rc.delete_inbox(inbox_id)
    with pytest.raises(RocketChatNotFoundError):
        await rc.delete_inbox(inbox_id)


# ------------------------------------------------------------ delete (prune)


async def _new_inbox(rc: RocketChat) -> str:
    return await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))


@module_loop
async def test_delete_is_confirmed_by_a_read_back(app: RocketChatDouble, rc: RocketChat) -> None:
    inbox_id = await _new_inbox(rc)
    assert await rc.delete_inbox(inbox_id, "support@example.com") == 1
    assert app.deleted == [inbox_id]
    assert [r.status for r in app.requests_to("GET", f"{INBOX}/{inbox_id}")] == [404]


@module_loop
async def test_delete_500_is_resent_only_after_a_read_back_shows_it_there(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    inbox_id = await _new_inbox(rc)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.error(500))
    assert await rc.delete_inbox(inbox_id) == 2
    assert [r.status for r in app.requests_to("DELETE", f"{INBOX}/{inbox_id}")] == [500, 200]
    # read-back after the 500 (there), then the confirmation (gone)
    assert [r.status for r in app.requests_to("GET", f"{INBOX}/{inbox_id}")] == [200, 404]
    assert app.deleted == [inbox_id]


@module_loop
async def test_delete_that_applied_is_not_resent(app: RocketChatDouble, rc: RocketChat) -> None:
    inbox_id = await _new_inbox(rc)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.error(502, apply=True))
    assert await rc.delete_inbox(inbox_id) == 1
    assert len(app.requests_to("DELETE", f"{INBOX}/{inbox_id}")) == 1
    assert app.deleted == [inbox_id]


@module_loop
async def test_delete_timeout_after_it_applied_is_confirmed_gone(
    app: FaultyRocketChat, make_rc: MakeClient
) -> None:
    client = make_rc(timeout=0.3)
    await client.connect()
    inbox_id = await _new_inbox(client)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.held(asyncio.Event(), apply=True))
    assert await client.delete_inbox(inbox_id) == 1
    assert app.deleted == [inbox_id]
    assert len(app.requests_to("DELETE", f"{INBOX}/{inbox_id}")) == 1


@module_loop
async def test_delete_gives_up_not_applied_or_unknown(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    inbox_id = await _new_inbox(rc)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.error(503), times=10)
    with pytest.raises(RocketChatUnavailableError) as kept:
        await rc.delete_inbox(inbox_id)
    assert kept.value.write_state == "not-applied"
    assert "still there" in str(kept.value)
    assert len(app.requests_to("DELETE", f"{INBOX}/{inbox_id}")) == FAST.attempts
    app.reset()
    app.add_admin(password=PASSWORD, token=TOKEN, user_id=rc.info.user_id)
    inbox_id = await _new_inbox(rc)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.error(502, apply=True))
    app.inject("GET", f"{INBOX}/:_id", Fault.error(503), times=10)
    with pytest.raises(RocketChatUnavailableError) as unknown:
        await rc.delete_inbox(inbox_id)
    assert unknown.value.write_state == "unknown"
    assert len(app.requests_to("DELETE", f"{INBOX}/{inbox_id}")) == 1
    assert_clean(unknown.value)


@module_loop
async def test_delete_answered_but_not_confirmed_is_unknown(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    inbox_id = await _new_inbox(rc)
    app.inject("GET", f"{INBOX}/:_id", Fault.error(503), times=10)
    with pytest.raises(RocketChatUnavailableError) as caught:
        await rc.delete_inbox(inbox_id)
    assert caught.value.write_state == "unknown"
    assert "answered the DELETE with success" in str(caught.value)
    assert app.deleted == [inbox_id]


@module_loop
async def test_inbox_present_before_5_3_asks_search(app: RocketChatDouble, rc: RocketChat) -> None:
    inbox_id = await _new_inbox(rc)
    app.version = "5.2.0"
    assert await rc.inbox_present(inbox_id, "support@example.com")
    await rc.delete_inbox(inbox_id, "support@example.com")
    assert not await rc.inbox_present(inbox_id, "support@example.com")
    # Only where GET gave no document: the delete's confirmation and the last call.
    assert len(app.requests_to("GET", SEARCH)) == 2


# --------------------------------------------------------- create/update cycle


@module_loop
async def test_create_then_unchanged_then_password_update(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    wanted = inbox_payload(make_inbox())
    assert await rc.search_inbox("support@example.com") is None
    create = plan_body_for_create(wanted)
    inbox_id = await rc.save_inbox(create)
    assert app.requests_to("POST", INBOX)[0].body == create
    stored = await rc.get_inbox(inbox_id)
    assert diff_inbox(stored, wanted) == []  # a second run would write nothing

    changed = inbox_payload(
        make_inbox(
            smtp=SmtpSettings(
                server="smtp.example.com",
                port=465,
                username="support@example.com",
                password=Secret("CANARY-NEW-PW"),
                secure=True,
            )
        )
    )
    changes = diff_inbox(stored, changed)
    assert [c.path for c in changes] == ["smtp.port", "smtp.password", "smtp.secure"]
    rendered = [str(c) for c in changes]
    assert rendered[1] == "smtp.password: changed"
    assert rendered[0] == "smtp.port: 587 -> 465"
    for secret in ("CANARY-NEW-PW", SMTP_PW):
        assert secret not in repr(changes)
        assert secret not in str([c.to_json() for c in changes])
    update = plan_body_for_update(stored, changed)
    assert next(iter(update)) == "_id"
    assert await rc.save_inbox(update) == inbox_id
    posted = app.requests_to("POST", INBOX)[-1].body
    assert posted["_id"] == inbox_id
    assert posted["imap"]["maxRetries"] == 10
    assert diff_inbox(await rc.get_inbox(inbox_id), changed) == []


@module_loop
async def test_removing_the_department_sends_all(app: RocketChatDouble, rc: RocketChat) -> None:
    with_department = inbox_payload(make_inbox(), department_id="dep-1")
    inbox_id = await rc.save_inbox(plan_body_for_create(with_department))
    stored = await rc.get_inbox(inbox_id)
    assert stored["department"] == "dep-1"
    without = inbox_payload(make_inbox())
    assert "department" not in without
    assert diff_inbox(stored, without) == [FieldChange("department", "dep-1", None)]
    update = plan_body_for_update(stored, without)
    assert update["department"] == "All"
    await rc.save_inbox(update)
    assert "department" not in app.inboxes[inbox_id]
    assert diff_inbox(await rc.get_inbox(inbox_id), without) == []


@module_loop
async def test_create_on_e0_finds_the_id_by_address(app: RocketChatDouble, rc: RocketChat) -> None:
    app.version = "4.4.0"
    inbox_id = await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
    assert list(app.inboxes) == [inbox_id]


@module_loop
async def test_list_inboxes_pages_through_everything(app: RocketChatDouble, rc: RocketChat) -> None:
    app.list_count_limit = 2
    for n in range(5):
        body = plan_body_for_create(inbox_payload(make_inbox(email=f"in{n}@example.com")))
        await rc.save_inbox(body)
    inboxes = await rc.list_inboxes()
    assert sorted(i["email"] for i in inboxes) == [f"in{n}@example.com" for n in range(5)]
    assert len(app.requests_to("GET", f"{INBOX}.list")) == 3


@module_loop
async def test_send_test_is_requested_or_explained(app: RocketChatDouble, rc: RocketChat) -> None:
    active = await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
    await rc.send_test(active)
    assert [t.inbox_id for t in app.sent_tests] == [active]
    inactive = await rc.save_inbox(
        plan_body_for_create(inbox_payload(make_inbox(active=False, email="off@example.com")))
    )
    with pytest.raises(RocketChatRejectedError) as caught:
        await rc.send_test(inactive)
    assert caught.value.error == "inbox-not-found"
    assert "inactive" in (caught.value.hint or "")


@module_loop
async def test_self_disabled_inbox_reads_back_inactive(
    app: RocketChatDouble, rc: RocketChat
) -> None:
    app.bad_imap_passwords = {IMAP_PW}
    inbox_id = await rc.save_inbox(plan_body_for_create(inbox_payload(make_inbox())))
    await asyncio.wait_for(app.wait_self_disabled(inbox_id), 5)
    assert (await rc.get_inbox(inbox_id))["active"] is False


# ---------------------------------------------------------------- departments


@module_loop
async def test_department_resolution(app: RocketChatDouble, rc: RocketChat) -> None:
    sales = app.add_department("Sales")
    app.add_department("Twice")
    app.add_department("Twice")
    assert await rc.resolve_department(sales["_id"]) == sales["_id"]
    assert await rc.resolve_department("Sales") == sales["_id"]
    with pytest.raises(RocketChatDepartmentError) as unknown:
        await rc.resolve_department("sales ")
    assert unknown.value.field == "department"
    with pytest.raises(RocketChatDepartmentError) as near:
        await rc.resolve_department("SALES")
    assert "did you mean 'Sales'" in (near.value.hint or "")
    with pytest.raises(RocketChatDepartmentError, match="ambiguous: 2 departments"):
        await rc.resolve_department("Twice")


# ------------------------------------------------------------- pure helpers


def _stored(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"_id": "id1", **body, "_createdAt": "x", "_updatedAt": "x", **extra}


def test_payload_is_the_portable_body() -> None:
    body = inbox_payload(make_inbox(description=None, sender_info=None))
    assert list(body) == ["active", "name", "email", "description", "senderInfo", "smtp", "imap"]
    assert (body["description"], body["senderInfo"]) == ("", "")
    assert body["imap"]["maxRetries"] == 10
    assert body["smtp"]["password"] == SMTP_PW
    assert inbox_payload(make_inbox(department="Sales"), department_id="d1")["department"] == "d1"


def test_plan_for_create_rules() -> None:
    body = inbox_payload(make_inbox())
    del body["imap"]["maxRetries"]
    for department in ("All", "", None):
        planned = plan_body_for_create({**body, "_id": "", "department": department})
        assert "department" not in planned
        assert "_id" not in planned
        assert planned["imap"]["maxRetries"] == 10
    assert "maxRetries" not in body["imap"]  # the input is not changed
    assert plan_body_for_create({**body, "department": "d1"})["department"] == "d1"


def test_plan_for_update_rules() -> None:
    body = inbox_payload(make_inbox())
    stored = _stored(body)
    assert "department" not in plan_body_for_update(stored, body)
    assert plan_body_for_update(_stored(body, department="d1"), body)["department"] == "All"
    moved = plan_body_for_update(_stored(body, department="d1"), {**body, "department": "d2"})
    assert moved["department"] == "d2"
    assert moved["_id"] == "id1"


def test_diff_rules() -> None:
    body = inbox_payload(make_inbox())
    stored = _stored(body, description=None)
    del stored["senderInfo"]
    stored["smtp"] = {**body["smtp"], "extra": 1}
    # Absent/null/empty descriptions are the same; stored extra keys are ignored.
    assert diff_inbox(stored, {**body, "senderInfo": ""}) == []
    assert diff_inbox(stored, {**body, "senderInfo": "", "department": "All"}) == []
    same = _stored(body)
    # JavaScript types: 1 is not true, 993.0 is 993.
    assert diff_inbox({**same, "active": 1}, body) == [FieldChange("active", 1, True)]
    assert diff_inbox(same, {**body, "imap": {**body["imap"], "port": 993.0}}) == []
    secret = diff_inbox(same, {**body, "imap": {**body["imap"], "password": "x"}})
    assert secret == [FieldChange("imap.password", None, None, secret=True)]
    assert secret[0].to_json() == {"field": "imap.password", "change": "changed"}
    assert str(FieldChange("senderInfo", None, "S")) == "senderInfo: (none) -> 'S'"


@pytest.mark.parametrize(
    ("version", "dialect"),
    [
        ("3.18.0", Dialect.E0),
        ("4.8.1", Dialect.E1),
        ("5.1.0", Dialect.E2),
        ("5.2.3", Dialect.E3),
        ("5.3.0", Dialect.E4),
        ("6.13.0", Dialect.E4),
        ("7.10.0-rc.1", Dialect.E4),
        ("8.0.0", Dialect.E5),
        (None, Dialect.E4),
    ],
)
def test_dialect_for(version: str | None, dialect: Dialect) -> None:
    assert dialect_for(version) == dialect


def test_credentials_from_env() -> None:
    token = credentials_from_env({"ROCKETCHAT_USER_ID": "u1", "ROCKETCHAT_AUTH_TOKEN": TOKEN})
    assert isinstance(token, TokenAuth)
    assert token.token.reveal() == TOKEN
    assert TOKEN not in repr(token)
    login = credentials_from_env(
        {"ROCKETCHAT_USER": "admin", "ROCKETCHAT_PASSWORD": PASSWORD, "ROCKETCHAT_2FA_CODE": "1"},
        code=CODE,
    )
    assert isinstance(login, PasswordAuth)
    assert login.code is not None
    assert login.code.reveal() == CODE
    assert PASSWORD not in repr(login)
    for environ, field in [
        ({}, "ROCKETCHAT_AUTH_TOKEN"),
        ({"ROCKETCHAT_USER_ID": "u1"}, "ROCKETCHAT_AUTH_TOKEN"),
        ({"ROCKETCHAT_PASSWORD": PASSWORD}, "ROCKETCHAT_USER"),
        (
            {"ROCKETCHAT_AUTH_TOKEN": TOKEN, "ROCKETCHAT_USER_ID": "u", "ROCKETCHAT_USER": "a"},
            "ROCKETCHAT_AUTH_TOKEN",
        ),
        ({"ROCKETCHAT_USER_ID": "", "ROCKETCHAT_AUTH_TOKEN": ""}, "ROCKETCHAT_AUTH_TOKEN"),
    ]:
        with pytest.raises(ConfigError) as caught:
            credentials_from_env(environ)
        assert caught.value.problems[0].field == field
        assert_clean(caught.value)


def test_every_error_is_a_rocketchat_error() -> None:
    for cls in (
        RocketChatAuthError,
        RocketChatProtocolError,
        RocketChatRedirectError,
        RocketChatUnavailableError,
    ):
        assert issubclass(cls, RocketChatError)


def test_error_details_default_to_none_and_unknown_ones_are_refused() -> None:
    assert RocketChatRateLimitedError("limited").reset_at is None
    assert RocketChatUnavailableError("down").request_sent is True
    assert RocketChatUnavailableError("down").write_state is None
    assert RocketChatDuplicateEmailError("dup", email="a@example.com").email == "a@example.com"
    with pytest.raises(TypeError, match="reset_at"):
        RocketChatDuplicateEmailError("dup", reset_at=1.0)
