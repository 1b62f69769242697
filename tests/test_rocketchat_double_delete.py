"""The double's ``DELETE /api/v1/email-inbox/:_id`` follows spec §1.5, §1.8 and §6 item 7.

In process (``httpx.ASGITransport``), like most of ``test_rocketchat_double.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from provision.sandbox.rocketchat import RocketChatDouble, User
from tests.doubles.rocketchat_faults import Fault, FaultyRocketChat
from tests.test_rocketchat_double import auth, inbox_body

INBOX = "/api/v1/email-inbox"


@pytest.fixture
def app() -> FaultyRocketChat:
    return FaultyRocketChat()


@pytest.fixture
def admin(app: RocketChatDouble) -> User:
    return app.add_admin()


@pytest.fixture
async def http(app: RocketChatDouble) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://rc.test") as client:
        yield client


@pytest.fixture
async def as_admin(http: httpx.AsyncClient, admin: User) -> httpx.AsyncClient:
    http.headers.update(auth(admin))
    return http


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


async def test_fault_500_on_the_next_delete_leaves_the_inbox(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    inbox_id = await _create(as_admin)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.error(500))
    assert (await as_admin.delete(f"{INBOX}/{inbox_id}")).status_code == 500
    assert list(app.inboxes) == [inbox_id]
    assert (await as_admin.delete(f"{INBOX}/{inbox_id}")).status_code == 200


async def test_fault_applied_then_silent_deletes_at_once_and_answers_late(
    app: FaultyRocketChat, as_admin: httpx.AsyncClient
) -> None:
    inbox_id = await _create(as_admin)
    app.inject("DELETE", f"{INBOX}/:_id", Fault.applied_then_silent(30))
    pending = asyncio.create_task(as_admin.delete(f"{INBOX}/{inbox_id}"))
    async with asyncio.timeout(5):
        while not app.deleted:  # applied while the answer is still held back
            await asyncio.sleep(0)
    assert app.inboxes == {}
    assert not pending.done()
    app.shutdown()
    response = await asyncio.wait_for(pending, 5)
    assert response.status_code == 503
