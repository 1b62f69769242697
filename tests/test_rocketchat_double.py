"""The Rocket.Chat double follows spec §1, §2 and §6 (shared/spec/rocketchat-email-inbox.md).

Most tests call the ASGI app in process (``httpx.ASGITransport``); the last ones
serve it over real HTTP and HTTPS on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from provision.sandbox.ca import SandboxCA
from provision.sandbox.rocketchat import (
    RateLimit,
    RocketChatDouble,
    User,
    meteor_check,
    start_rocketchat,
)
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat

INBOX = "/api/v1/email-inbox"


def inbox_body(**changes: Any) -> dict[str, Any]:
    """The portable body of spec §1.2, with top-level changes."""
    body: dict[str, Any] = {
        "active": True,
        "name": "Support",
        "email": "support@example.com",
        "description": "",
        "senderInfo": "Support Team",
        "smtp": {
            "server": "smtp.example.com",
            "port": 587,
            "username": "support@example.com",
            "password": "smtp-secret",
            "secure": False,
        },
        "imap": {
            "server": "imap.example.com",
            "port": 993,
            "username": "support@example.com",
            "password": "imap-secret",
            "secure": True,
            "maxRetries": 10,
        },
    }
    body.update(changes)
    return body


@pytest.fixture
def app(request: pytest.FixtureRequest) -> RocketChatDouble:
    # Tests of fault injection ask for the test-only subclass (see `faulty`).
    return FaultyRocketChat() if getattr(request, "param", False) else RocketChatDouble()


#: Serve the test with FaultyRocketChat (tests/doubles/rocketchat_faults.py).
faulty = pytest.mark.parametrize("app", [True], indirect=True, ids=["faulty"])


@pytest.fixture
def admin(app: RocketChatDouble) -> User:
    return app.add_admin(password="admin-password")


def auth(user: User) -> dict[str, str]:
    return {"X-Auth-Token": user.token, "X-User-Id": user.id}


@pytest.fixture
async def http(app: RocketChatDouble) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://rc.test") as client:
        yield client


@pytest.fixture
async def as_admin(http: httpx.AsyncClient, admin: User) -> httpx.AsyncClient:
    http.headers.update(auth(admin))
    return http


# ----------------------------------------------------------------- info, auth


async def test_info_reports_the_configured_version(
    app: RocketChatDouble, http: httpx.AsyncClient
) -> None:
    assert (await http.get("/api/info")).json() == {"version": "6.13.0", "success": True}
    app.version = "7.4.1"
    assert (await http.get("/api/info")).json()["version"] == "7.4.1"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Auth-Token": "nope", "X-User-Id": "nope"}, {"X-Auth-Token": "only-token"}],
    ids=["none", "wrong", "half"],
)
async def test_missing_or_wrong_auth_is_401_in_6x_form(
    http: httpx.AsyncClient, admin: User, headers: dict[str, str]
) -> None:
    response = await http.get(f"{INBOX}.list", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"status": "error", "message": "You must be logged in to do this."}


async def test_401_in_7x_form_from_version_7(
    app: RocketChatDouble, http: httpx.AsyncClient
) -> None:
    app.version = "7.0.0"
    response = await http.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "error": "You must be logged in to do this.",
        "status": "error",
        "message": "You must be logged in to do this.",
    }


async def test_user_without_permission_gets_403(
    app: RocketChatDouble, http: httpx.AsyncClient
) -> None:
    agent = app.add_user("agent")
    response = await http.get(f"{INBOX}.search", params={"email": "x"}, headers=auth(agent))
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "error": "User does not have the permissions required for this action [error-unauthorized]",
    }


async def test_undefined_method_is_405_with_allow(as_admin: httpx.AsyncClient) -> None:
    response = await as_admin.get(INBOX)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"status": "error", "message": "API endpoint does not exist"}
    response = await as_admin.put(f"{INBOX}/abc")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, DELETE")


async def test_me_returns_the_user(as_admin: httpx.AsyncClient, admin: User) -> None:
    data = (await as_admin.get("/api/v1/me")).json()
    assert data["_id"] == admin.id
    assert data["username"] == "admin"
    assert data["success"] is True


# ---------------------------------------------------------------- login/logout


@pytest.mark.parametrize(
    "body",
    [
        {"user": "admin", "password": "admin-password"},
        {"user": "admin@example.com", "password": "admin-password"},
        {"username": "admin", "password": "admin-password"},
        {"email": "admin@example.com", "password": "admin-password"},
        {"user": {"username": "admin"}, "password": "admin-password"},
        {
            "user": "admin",
            "password": {"hashed": hashlib.sha256(b"admin-password").hexdigest()},
        },
    ],
    ids=["user", "user-email", "username", "email", "user-object", "hashed"],
)
async def test_login_body_forms(
    app: RocketChatDouble, http: httpx.AsyncClient, admin: User, body: dict[str, Any]
) -> None:
    response = await http.post("/api/v1/login", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "success"
    assert data["data"]["userId"] == admin.id
    token = data["data"]["authToken"]
    assert admin.tokens[token] == "login"
    me = await http.get("/api/v1/me", headers={"X-Auth-Token": token, "X-User-Id": admin.id})
    assert me.status_code == 200


async def test_login_wrong_password_and_unknown_user(http: httpx.AsyncClient, admin: User) -> None:
    wrong = await http.post("/api/v1/login", json={"user": "admin", "password": "x"})
    assert wrong.status_code == 401
    assert wrong.json() == {"status": "error", "error": 403, "message": "Incorrect password"}
    unknown = await http.post("/api/v1/login", json={"user": "ghost", "password": "x"})
    assert unknown.status_code == 401
    assert unknown.json() == {"status": "error", "error": "Unauthorized", "message": "Unauthorized"}


async def test_login_two_factor_email(app: RocketChatDouble, http: httpx.AsyncClient) -> None:
    user = app.add_admin("boss", "pw", two_factor=True)
    required = await http.post("/api/v1/login", json={"user": "boss", "password": "pw"})
    assert required.status_code == 401
    data = required.json()
    assert data["error"] == "totp-required"
    assert data["message"] == "TOTP Required"
    assert data["details"]["method"] == "email"
    invalid = await http.post(
        "/api/v1/login", json={"user": "boss", "password": "pw", "code": "000000"}
    )
    assert (invalid.status_code, invalid.json()["error"]) == (401, "totp-invalid")
    ok = await http.post(
        "/api/v1/login", json={"user": "boss", "password": "pw", "code": user.two_factor_code}
    )
    assert ok.status_code == 200
    header = await http.post(
        "/api/v1/login",
        json={"user": "boss", "password": "pw"},
        headers={"X-2FA-Code": user.two_factor_code},
    )
    assert header.status_code == 200


async def test_logout_of_a_login_token_keeps_the_pat(
    app: RocketChatDouble, http: httpx.AsyncClient, admin: User
) -> None:
    session = app.add_token(admin)
    headers = {"X-Auth-Token": session, "X-User-Id": admin.id}
    assert (await http.post("/api/v1/logout", headers=headers)).status_code == 200
    assert app.logouts == [(admin.id, session, "login")]
    assert (await http.get("/api/v1/me", headers=auth(admin))).status_code == 200


async def test_logout_deletes_the_presented_token_even_a_pat(
    app: RocketChatDouble, http: httpx.AsyncClient, admin: User
) -> None:
    pat = admin.token
    response = await http.post("/api/v1/logout", headers=auth(admin))
    assert response.json() == {
        "status": "success",
        "data": {"message": "You've been logged out!"},
    }
    assert app.logouts == [(admin.id, pat, "personalAccessToken")]
    assert app.logged_out_tokens == [pat]
    again = await http.get("/api/v1/me", headers={"X-Auth-Token": pat, "X-User-Id": admin.id})
    assert again.status_code == 401


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "Match error: Missing key 'active'"),
        (
            {k: v for k, v in inbox_body().items() if k != "email"},
            "Match error: Missing key 'email'",
        ),
        (
            inbox_body(imap={k: v for k, v in inbox_body()["imap"].items() if k != "maxRetries"}),
            "Match error: Missing key 'maxRetries' in field imap",
        ),
        (
            inbox_body(smtp={**inbox_body()["smtp"], "port": "587"}),
            "Match error: Expected number, got string in field smtp.port",
        ),
        (inbox_body(active="true"), "Match error: Expected boolean, got string in field active"),
        (inbox_body(foo=1), "Match error: Unknown key in field foo"),
        (
            inbox_body(department=5),
            "Match error: Expected string, got number in field department",
        ),
        (
            inbox_body(department=None),
            "Match error: Expected string, got null in field department",
        ),
        (inbox_body(_id=None), "Match error: Expected string, got null in field _id"),
        (inbox_body(imap="x"), "Match error: Expected object, got string in field imap"),
        (inbox_body(smtp=[]), "Match error: Expected plain object in field smtp"),
        (
            inbox_body(imap={**inbox_body()["imap"], "port": True}),
            "Match error: Expected number, got boolean in field imap.port",
        ),
    ],
    ids=[
        "empty",
        "missing-email",
        "missing-maxRetries",
        "port-string",
        "active-string",
        "unknown-key",
        "department-number",
        "department-null",
        "id-null",
        "imap-string",
        "smtp-array",
        "port-bool",
    ],
)
async def test_post_validation_wording(
    as_admin: httpx.AsyncClient, app: RocketChatDouble, body: dict[str, Any], error: str
) -> None:
    response = await as_admin.post(INBOX, json=body)
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": error}
    assert app.inboxes == {}


async def test_validation_reports_body_keys_before_missing_keys_in_body_order(
    as_admin: httpx.AsyncClient,
) -> None:
    # Missing keys come last; among present keys the first bad one in body order wins.
    body = {"name": 1, "foo": "x"}
    assert (await as_admin.post(INBOX, json=body)).json()["error"] == (
        "Match error: Expected string, got number in field name"
    )
    body = {"foo": "x", "name": 1}
    assert (await as_admin.post(INBOX, json=body)).json()["error"] == (
        "Match error: Unknown key in field foo"
    )
    body = {"name": "n", "active": True}
    assert (await as_admin.post(INBOX, json=body)).json()["error"] == (
        "Match error: Missing key 'email'"
    )


def test_meteor_check_quotes_odd_keys_like_prepend_path() -> None:
    pattern = {"a": {"b-c": "string"}}
    assert meteor_check({"a": {"b-c": 1}}, pattern) == (
        'Match error: Expected string, got number in field a["b-c"]'
    )
    assert meteor_check({"x-y": 1}, {}) == "Match error: Unknown key in field x-y"
    assert meteor_check({"1": 0, "z": 0}, {}) == "Match error: Unknown key in field 1"


async def test_extra_keys_inside_smtp_and_imap_are_stored(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    body = inbox_body(smtp={**inbox_body()["smtp"], "tls": {"x": 1}})
    response = await as_admin.post(INBOX, json=body)
    assert response.status_code == 200
    assert app.inboxes[response.json()["_id"]]["smtp"]["tls"] == {"x": 1}


# --------------------------------------------------------------- insert/update


async def test_insert_stores_body_dates_and_creator(
    as_admin: httpx.AsyncClient, app: RocketChatDouble, admin: User
) -> None:
    response = await as_admin.post(INBOX, json=inbox_body())
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"_id", "success"}
    stored = app.stored(data["_id"])
    assert stored["_createdBy"] == {"_id": admin.id, "username": "admin"}
    assert stored["_createdAt"] == stored["_updatedAt"]
    assert stored["_createdAt"].endswith("Z")
    body = {k: v for k, v in stored.items() if not k.startswith("_")}
    assert body == inbox_body()


async def test_passwords_come_back_in_clear_from_every_read(
    as_admin: httpx.AsyncClient,
) -> None:
    inbox_id = (await as_admin.post(INBOX, json=inbox_body())).json()["_id"]
    got = (await as_admin.get(f"{INBOX}/{inbox_id}")).json()
    listed = (await as_admin.get(f"{INBOX}.list")).json()["emailInboxes"][0]
    found = (await as_admin.get(f"{INBOX}.search", params={"email": "support@example.com"})).json()
    for doc in (got, listed, found["emailInbox"]):
        assert doc["smtp"]["password"] == "smtp-secret"
        assert doc["imap"]["password"] == "imap-secret"


async def test_duplicate_email_is_e11000_case_sensitive(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    assert (await as_admin.post(INBOX, json=inbox_body())).status_code == 200
    again = await as_admin.post(INBOX, json=inbox_body())
    assert again.status_code == 400
    assert again.json() == {
        "success": False,
        "error": "E11000 duplicate key error collection: rocketchat.rocketchat_email_inbox "
        'index: email_1 dup key: { email: "support@example.com" }',
    }
    other = await as_admin.post(INBOX, json=inbox_body(email="Support@example.com"))
    assert other.status_code == 200
    # Changing an inbox's address to another inbox's one clashes too.
    clash = await as_admin.post(
        INBOX, json=inbox_body(_id=other.json()["_id"], email="support@example.com")
    )
    assert clash.status_code == 400
    assert clash.json()["error"].startswith("E11000 duplicate key error")
    assert len(app.inboxes) == 2


async def test_update_sets_fields_keeps_omitted_optionals_and_created_at(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    created = await as_admin.post(
        INBOX, json=inbox_body(department="dep1", description="first", senderInfo="S")
    )
    inbox_id = created.json()["_id"]
    before = app.stored(inbox_id)
    body = inbox_body(_id=inbox_id, name="Renamed", smtp={**inbox_body()["smtp"], "port": 465})
    for key in ("description", "senderInfo"):
        body.pop(key)
    updated = await as_admin.post(INBOX, json=body)
    assert updated.json() == {"_id": inbox_id, "success": True}
    after = app.stored(inbox_id)
    assert after["name"] == "Renamed"
    assert after["smtp"]["port"] == 465
    assert (after["description"], after["senderInfo"], after["department"]) == (
        "first",
        "S",
        "dep1",
    )
    assert after["_createdAt"] == before["_createdAt"]


async def test_update_department_all_unsets_it(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    inbox_id = (await as_admin.post(INBOX, json=inbox_body(department="dep1"))).json()["_id"]
    await as_admin.post(INBOX, json=inbox_body(_id=inbox_id, department="All"))
    assert "department" not in app.inboxes[inbox_id]


async def test_smtp_and_imap_are_replaced_whole_on_update(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    body = inbox_body(smtp={**inbox_body()["smtp"], "extra": 1})
    inbox_id = (await as_admin.post(INBOX, json=body)).json()["_id"]
    await as_admin.post(INBOX, json=inbox_body(_id=inbox_id))
    assert "extra" not in app.inboxes[inbox_id]["smtp"]


async def test_update_of_unknown_id_is_error_invalid_email_inbox(
    as_admin: httpx.AsyncClient,
) -> None:
    response = await as_admin.post(INBOX, json=inbox_body(_id="does-not-exist"))
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "error-invalid-email-inbox"}


async def test_empty_id_takes_the_insert_path_and_fails(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    response = await as_admin.post(INBOX, json=inbox_body(_id=""))
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "Failed to create email inbox"}
    assert "" in app.inboxes  # the junk document is stored (spec §1.2)


async def test_create_before_4_8_answers_without_id(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    app.version = "4.4.0"
    response = await as_admin.post(INBOX, json=inbox_body())
    assert response.json() == {"success": True}
    assert len(app.inboxes) == 1


# ---------------------------------------------------------------- reads, delete


async def test_get_and_delete_unknown_are_404(as_admin: httpx.AsyncClient) -> None:
    for response in (
        await as_admin.get(f"{INBOX}/nope"),
        await as_admin.delete(f"{INBOX}/nope"),
        await as_admin.post(f"{INBOX}.send-test/nope"),
    ):
        assert response.status_code == 404
        assert response.json() == {"success": False, "error": "Resource not found"}


async def test_delete_removes_the_inbox(as_admin: httpx.AsyncClient, app: RocketChatDouble) -> None:
    inbox_id = (await as_admin.post(INBOX, json=inbox_body())).json()["_id"]
    response = await as_admin.delete(f"{INBOX}/{inbox_id}")
    assert response.json() == {"_id": inbox_id, "success": True}
    assert app.inboxes == {}


async def _create(client: httpx.AsyncClient, **changes: object) -> str:
    response = await client.post(INBOX, json=inbox_body(**changes))
    inbox_id: str = response.json()["_id"]
    return inbox_id


@pytest.mark.parametrize("e5", [False, True], ids=["E4", "E5"])
async def test_delete_answers_id_then_404(
    app: RocketChatDouble, as_admin: httpx.AsyncClient, e5: bool
) -> None:
    app.e5 = e5
    inbox_id = await _create(as_admin)
    first = await as_admin.delete(f"{INBOX}/{inbox_id}")
    assert (first.status_code, first.json()) == (200, {"_id": inbox_id, "success": True})
    again = await as_admin.delete(f"{INBOX}/{inbox_id}")
    assert (again.status_code, again.json()) == (
        404,
        {"success": False, "error": "Resource not found"},
    )
    gone = await as_admin.get(f"{INBOX}/{inbox_id}")
    assert gone.status_code == 404
    search = await as_admin.get(f"{INBOX}.search", params={"email": "support@example.com"})
    assert search.json() == {"emailInbox": None, "success": True}
    assert app.deleted == [inbox_id]


async def test_delete_needs_the_permission_and_a_login(
    app: RocketChatDouble, as_admin: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    inbox_id = await _create(as_admin)
    agent = app.add_user("agent")
    refused = await http.delete(f"{INBOX}/{inbox_id}", headers=auth(agent))
    assert (refused.status_code, refused.json()["error"]) == (
        403,
        "User does not have the permissions required for this action [error-unauthorized]",
    )
    anonymous = await http.delete(
        f"{INBOX}/{inbox_id}", headers={"X-Auth-Token": "", "X-User-Id": ""}
    )
    assert anonymous.status_code == 401
    assert list(app.inboxes) == [inbox_id]
    assert app.deleted == []


async def test_delete_removes_only_that_inbox_and_cancels_its_self_disable(
    app: RocketChatDouble, as_admin: httpx.AsyncClient
) -> None:
    app.bad_imap_passwords = {"bad"}
    app.self_disable_delay = 3600
    doomed = await _create(
        as_admin,
        email="old@example.com",
        imap={**inbox_body()["imap"], "password": "bad"},
    )
    kept = await _create(as_admin)
    await as_admin.delete(f"{INBOX}/{doomed}")
    assert list(app.inboxes) == [kept]
    assert doomed not in app._handles  # nothing left to switch off


async def test_get_unknown_id_before_5_3_is_200_with_null_payload(
    app: RocketChatDouble, as_admin: httpx.AsyncClient
) -> None:
    app.version = "5.2.0"
    old = await as_admin.get(f"{INBOX}/nope")
    assert (old.status_code, old.json()) == (200, {"success": True})
    app.version = "5.3.0"
    assert (await as_admin.get(f"{INBOX}/nope")).status_code == 404


@faulty
async def test_fault_500_on_the_next_delete_leaves_the_inbox(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    inbox_id = await _create(as_admin)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.error(500))
    assert (await as_admin.delete(f"{INBOX}/{inbox_id}")).status_code == 500
    assert list(app.inboxes) == [inbox_id]
    assert (await as_admin.delete(f"{INBOX}/{inbox_id}")).status_code == 200


async def test_search_absent_is_200_null_and_query_is_checked(
    as_admin: httpx.AsyncClient,
) -> None:
    absent = await as_admin.get(f"{INBOX}.search", params={"email": "none@example.com"})
    assert (absent.status_code, absent.json()) == (200, {"emailInbox": None, "success": True})
    extra = await as_admin.get(f"{INBOX}.search", params={"email": "a", "foo": "b"})
    assert (extra.status_code, extra.json()["error"]) == (
        400,
        "Match error: Unknown key in field foo",
    )
    missing = await as_admin.get(f"{INBOX}.search")
    assert missing.json()["error"] == "Match error: Missing key 'email'"


async def test_search_is_exact_and_case_sensitive(as_admin: httpx.AsyncClient) -> None:
    await as_admin.post(INBOX, json=inbox_body())
    other = await as_admin.get(f"{INBOX}.search", params={"email": "SUPPORT@example.com"})
    assert other.json()["emailInbox"] is None


async def test_list_pages_and_sorts(as_admin: httpx.AsyncClient, app: RocketChatDouble) -> None:
    for name in ("c", "a", "b"):
        await as_admin.post(INBOX, json=inbox_body(name=name, email=f"{name}@example.com"))
    data = (await as_admin.get(f"{INBOX}.list", params={"offset": 1, "count": 1})).json()
    assert [d["name"] for d in data["emailInboxes"]] == ["b"]
    assert (data["count"], data["offset"], data["total"]) == (1, 1, 3)
    data = (await as_admin.get(f"{INBOX}.list", params={"sort": '{"name":-1}'})).json()
    assert [d["name"] for d in data["emailInboxes"]] == ["c", "b", "a"]
    app.list_count_limit = 2
    data = (await as_admin.get(f"{INBOX}.list", params={"count": 100})).json()
    assert data["count"] == 2


# ------------------------------------------------------------------- send-test


async def test_send_test_cases(as_admin: httpx.AsyncClient, app: RocketChatDouble) -> None:
    active = (await as_admin.post(INBOX, json=inbox_body())).json()["_id"]
    inactive = (
        await as_admin.post(INBOX, json=inbox_body(active=False, email="off@example.com"))
    ).json()["_id"]
    ok = await as_admin.post(f"{INBOX}.send-test/{active}")
    assert ok.json() == {"_id": active, "success": True}
    assert [t.to for t in app.sent_tests] == ["admin@example.com"]
    off = await as_admin.post(f"{INBOX}.send-test/{inactive}")
    assert (off.status_code, off.json()) == (400, {"success": False, "error": "inbox-not-found"})
    unverified = app.add_admin("fresh", email_verified=False)
    response = await as_admin.post(f"{INBOX}.send-test/{active}", headers=auth(unverified))
    assert response.json() == {"success": False, "error": "user-without-verified-email"}


# ------------------------------------------------------------------ departments


async def test_departments_list_with_text_filter(
    as_admin: httpx.AsyncClient, app: RocketChatDouble
) -> None:
    sales = app.add_department("Sales")
    app.add_department("Support")
    data = (await as_admin.get("/api/v1/livechat/department", params={"text": "sal"})).json()
    assert [(d["_id"], d["name"]) for d in data["departments"]] == [(sales["_id"], "Sales")]
    assert data["total"] == 1
    page = (await as_admin.get("/api/v1/livechat/department", params={"count": 1})).json()
    assert (page["count"], page["total"]) == (1, 2)


# ------------------------------------------------------------------ rate limit


async def test_rate_limit_for_non_admins_with_headers(
    app: RocketChatDouble, http: httpx.AsyncClient, admin: User
) -> None:
    app.rate_limit = RateLimit(calls=2, interval_ms=60_000)
    bot = app.add_user("bot", permissions={"manage-email-inbox"})
    params = {"email": "x@example.com"}
    first = await http.get(f"{INBOX}.search", params=params, headers=auth(bot))
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    reset = int(first.headers["x-ratelimit-reset"])
    # Absolute epoch milliseconds, one interval after the window opened.
    assert abs(reset - (app.requests[0].at * 1000 + 60_000)) < 1000
    await http.get(f"{INBOX}.search", params=params, headers=auth(bot))
    limited = await http.get(f"{INBOX}.search", params=params, headers=auth(bot))
    assert limited.status_code == 429
    assert limited.json() == {
        "success": False,
        "error": "Error, too many requests. Please slow down. You must wait 60 seconds "
        "before trying this endpoint again. [error-too-many-requests]",
    }
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) == reset
    # Per route: another route is not limited yet; admins bypass (api-bypass-rate-limit).
    assert (await http.get(f"{INBOX}.list", headers=auth(bot))).status_code == 200
    for _ in range(3):
        response = await http.get(f"{INBOX}.search", params=params, headers=auth(admin))
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers


# ------------------------------------------------------------------------- E5


async def test_e5_ajv_messages_and_defaults(
    app: RocketChatDouble, as_admin: httpx.AsyncClient
) -> None:
    app.e5 = True
    missing = await as_admin.post(
        INBOX, json={k: v for k, v in inbox_body().items() if k != "email"}
    )
    assert missing.json() == {
        "success": False,
        "errorType": "error-invalid-params",
        "error": "must have required property 'email'",
    }
    extra = await as_admin.post(INBOX, json=inbox_body(smtp={**inbox_body()["smtp"], "tls": 1}))
    assert extra.json()["error"] == "must NOT have additional properties"
    wrong = await as_admin.post(INBOX, json=inbox_body(active=[1]))
    assert wrong.json()["error"] == "must be boolean"
    imap = {k: v for k, v in inbox_body()["imap"].items() if k != "maxRetries"}
    body = inbox_body(imap=imap, smtp={**inbox_body()["smtp"], "port": "587"})
    created = await as_admin.post(INBOX, json=body)
    assert created.status_code == 200
    stored = app.inboxes[created.json()["_id"]]
    assert stored["imap"]["maxRetries"] == 5
    assert stored["smtp"]["port"] == 587  # coerceTypes: true
    assert app.requests[-1].body["smtp"]["port"] == "587"  # the log shows what was sent
    app.e5_password_min = 8
    short = await as_admin.post(
        INBOX, json=inbox_body(email="s@x", smtp={**inbox_body()["smtp"], "password": "short"})
    )
    assert short.json()["error"] == "must NOT have fewer than 8 characters"


async def test_e5_validates_before_authenticating(
    app: RocketChatDouble, http: httpx.AsyncClient
) -> None:
    app.e5 = True
    response = await http.post(INBOX, json={})
    assert response.status_code == 400
    assert response.json()["errorType"] == "error-invalid-params"
    search = await http.get(f"{INBOX}.search", params={"email": "a", "x": "y"})
    assert search.json()["error"] == "must NOT have additional properties"
    assert (await http.post(INBOX, json=inbox_body())).status_code == 401


# --------------------------------------------------------------- faults, log


@faulty
async def test_faults_status_html_unsuccessful_and_count(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    path = f"{INBOX}.search"
    app.inject("GET", path, Fault.error(503), times=2)
    app.inject("GET", path, Fault.html(502))
    app.inject("GET", path, Fault.unsuccessful("boom"))
    params = {"email": "a"}
    statuses = [(await as_admin.get(path, params=params)) for _ in range(5)]
    assert [r.status_code for r in statuses] == [503, 503, 502, 200, 200]
    assert statuses[2].headers["content-type"] == "text/html"
    assert b"<h1>502 Bad Gateway</h1>" in statuses[2].content
    assert statuses[3].json() == {"success": False, "error": "boom"}
    assert statuses[4].json() == {"emailInbox": None, "success": True}


@faulty
async def test_fault_apply_then_502_keeps_the_write(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    app.inject("POST", INBOX, Fault.error(502, apply=True))
    response = await as_admin.post(INBOX, json=inbox_body())
    assert response.status_code == 502
    assert len(app.inboxes) == 1


@faulty
async def test_fault_by_route_template_and_redirect(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    app.inject("GET", f"{INBOX}/:_id", Fault.redirect("https://elsewhere.test/x"))
    response = await as_admin.get(f"{INBOX}/abc")
    assert (response.status_code, response.headers["location"]) == (
        302,
        "https://elsewhere.test/x",
    )


@faulty
async def test_slow_fault_is_released_by_shutdown(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    app.inject("GET", "/api/v1/me", Fault.slow(30))
    pending = asyncio.create_task(as_admin.get("/api/v1/me"))
    while not app.requests:  # the request has arrived and is waiting
        await asyncio.sleep(0)
    assert not pending.done()
    app.shutdown()
    response = await asyncio.wait_for(pending, 5)
    assert response.status_code == 503  # released, and nothing processed


@faulty
async def test_slow_fault_answers_normally_after_its_delay(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    app.inject("GET", "/api/v1/me", Fault.slow(0.01))
    assert (await as_admin.get("/api/v1/me")).status_code == 200


async def test_request_log_records_headers_and_body(
    app: RocketChatDouble, as_admin: httpx.AsyncClient, admin: User
) -> None:
    await as_admin.post(INBOX, json=inbox_body(), params={"x": "1"})
    [logged] = app.requests_to("POST", INBOX)
    assert logged.token == admin.token
    assert logged.user_id == admin.id
    assert logged.headers["content-type"] == "application/json"
    assert logged.body == inbox_body()
    assert logged.param("x") == "1"
    assert logged.status == 200


async def test_bad_imap_password_self_disables_later(
    app: RocketChatDouble, as_admin: httpx.AsyncClient
) -> None:
    app.bad_imap_passwords = {"wrong"}
    app.self_disable_delay = 0.01
    bad_imap = {**inbox_body()["imap"], "password": "wrong"}
    bad = (await as_admin.post(INBOX, json=inbox_body(imap=bad_imap))).json()["_id"]
    good = (await as_admin.post(INBOX, json=inbox_body(email="good@example.com"))).json()["_id"]
    assert app.inboxes[bad]["active"] is True
    await asyncio.wait_for(app.wait_self_disabled(bad), 5)
    assert (await as_admin.get(f"{INBOX}/{bad}")).json()["active"] is False
    assert app.inboxes[good]["active"] is True  # same delay, scheduled earlier if at all
    assert app.self_disabled == [bad]


def test_reset_forgets_state() -> None:
    app = FaultyRocketChat(version="7.1.0")
    app.add_admin()
    app.version = "6.0.0"
    app.inject("GET", "/api/info", Fault.error())
    app.reset()
    assert (app.users, app.version, app.requests) == ({}, "7.1.0", [])


# -------------------------------------------------------------- real sockets


async def test_served_over_http_on_loopback() -> None:
    async with await start_rocketchat() as server:
        admin = server.app.add_admin()
        assert server.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=server.url) as client:
            info = await client.get("/api/info")
            me = await client.get("/api/v1/me", headers=auth(admin))
        assert info.json()["success"] is True
        assert me.json()["_id"] == admin.id
        assert server.app.requests[0].client == "127.0.0.1"


async def test_served_over_https(sandbox_ca: SandboxCA) -> None:
    context = sandbox_ca.server_context()
    async with await start_rocketchat(ssl_context=context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=server.url, verify=sandbox_ca.client_context()) as c:
            assert (await c.get("/api/info")).status_code == 200
