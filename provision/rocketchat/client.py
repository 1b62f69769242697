"""The ``RocketChat`` client: the email-inbox API calls of ``provision set`` and ``export``.

Sessions (token or password login), inboxes and departments, per
``shared/spec/rocketchat-email-inbox.md``. HTTP, retries and redirects are
``transport``'s, turning answers into errors is ``replies``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from provision.errors import (
    RocketChatAuthError,
    RocketChatDepartmentError,
    RocketChatError,
    RocketChatNotFoundError,
    RocketChatProtocolError,
    RocketChatRateLimitedError,
    RocketChatUnavailableError,
)
from provision.rocketchat.credentials import Credentials, PasswordAuth, TokenAuth
from provision.rocketchat.dialects import Dialect, dialect_for
from provision.rocketchat.payload import diff_inbox
from provision.rocketchat.replies import Scrubber
from provision.rocketchat.transport import (
    RetryPolicy,
    RocketChatOptions,
    Sleep,
    Transport,
    make_http_client,
)
from provision.rocketchat.writes import write_unrepeated

__all__ = ["RocketChat", "ServerInfo", "open_rocketchat"]

logger = logging.getLogger("provision.rocketchat")

_INBOX = "/api/v1/email-inbox"


def _segment(inbox_id: str) -> str:
    """An id as one path segment: ids come from the server, which may send anything."""
    return quote(inbox_id, safe="")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What :meth:`RocketChat.connect` found.

    Attributes:
        version: ``/api/info`` version, ``None`` when the server hides it.
        dialect: API era derived from it.
        user_id: the authenticated user.
        username: its name, when known.
        own_session: ``True`` when the client logged in itself (and will log out).
        plain_http: the connection is not encrypted (loopback or ``--allow-http``).
    """

    version: str | None
    dialect: Dialect
    user_id: str
    username: str | None
    own_session: bool
    plain_http: bool


class RocketChat:
    """The email-inbox API of one Rocket.Chat server, for one user.

    Use :func:`open_rocketchat` for the usual connect/close cycle, or::

        rc = RocketChat(make_http_client(url), TokenAuth(user_id=..., token=Secret(...)))
        await rc.connect()
        ...
        await rc.close()   # logs out only a session it opened itself

    Args:
        http: the HTTP client (see :func:`make_http_client`); not closed by ``close``.
        credentials: a token (verified with ``GET /api/v1/me``) or a password login.
        retry, deadline, sleep, rng: how calls are retried and timed, see
            :class:`~provision.rocketchat.transport.Transport`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: Credentials,
        *,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._credentials = credentials
        self._errors = Scrubber()
        self._t = Transport(
            http=http,
            errors=self._errors,
            token_auth=isinstance(credentials, TokenAuth),
            retry=retry or RetryPolicy(),
            deadline=deadline,
            sleep=sleep,
            rng=rng,
        )
        self._user_id: str | None = None
        self._own_session = False
        self._info: ServerInfo | None = None
        if isinstance(credentials, TokenAuth):
            self._errors.add(credentials.token.reveal())
        else:
            self._errors.add(credentials.password.reveal())
            if credentials.code is not None:
                self._errors.add(credentials.code.reveal())

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` value after which no wait or retry starts."""
        return self._t.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._t.deadline = value

    # ------------------------------------------------------------ session

    @property
    def info(self) -> ServerInfo:
        """What :meth:`connect` found.

        Raises:
            RuntimeError: before :meth:`connect`.
        """
        if self._info is None:
            raise RuntimeError("RocketChat.connect() has not run")
        return self._info

    async def connect(self) -> ServerInfo:
        """Authenticate, then read the server version.

        With a token, ``GET /api/v1/me`` is the very first request, so a bad token
        is reported before anything else. With a password, ``POST /api/v1/login``
        (with the 2FA code when given). Then ``GET /api/info`` gives the version and
        the dialect.

        Raises:
            RocketChatAuthError: credentials refused (``RocketChatTwoFactorError``
                when a code is needed).
            RocketChatCallError: any other failure.
        """
        if self._info is not None:
            return self._info
        if isinstance(self._credentials, TokenAuth):
            self._user_id = self._credentials.user_id
            self._t.auth = (self._user_id, self._credentials.token.reveal())
            me = await self._t.call("GET", "/api/v1/me")
            if me.get("_id") not in (None, self._user_id):
                raise self._errors.error(
                    RocketChatAuthError,
                    "the token belongs to another user than ROCKETCHAT_USER_ID",
                    method="GET",
                    path="/api/v1/me",
                )
            username = me.get("username")
        else:
            username = await self._login(self._credentials)
        info = await self._server_info()
        version = info.get("version")
        if not isinstance(version, str):
            nested = info.get("info")
            version = nested.get("version") if isinstance(nested, dict) else None
        assert self._user_id is not None
        self._info = ServerInfo(
            version=version if isinstance(version, str) else None,
            dialect=dialect_for(version if isinstance(version, str) else None),
            user_id=self._user_id,
            username=username if isinstance(username, str) else None,
            own_session=self._own_session,
            plain_http=self._t.http.base_url.scheme == "http",
        )
        logger.debug("connected to Rocket.Chat %s (%s)", self._info.version, self._info.dialect)
        return self._info

    async def _server_info(self) -> dict[str, Any]:
        """``GET /api/info``, once per client and best effort.

        The route is anonymous, so Rocket.Chat limits it per client IP for everyone
        (``api-bypass-rate-limit`` cannot help, spec §1.8): a pipeline running
        ``set`` and ``export`` often from one address meets its 429. The version only
        names the server in the report (the client speaks every dialect), so a 429
        here is neither waited for nor an error: the version stays unknown.
        """
        try:
            return await self._t.call("GET", "/api/info", attempts=1, rate_limit_waits=0)
        except RocketChatRateLimitedError:
            logger.debug("GET /api/info is rate-limited; the server version stays unknown")
            return {}

    async def _login(self, credentials: PasswordAuth) -> str | None:
        body: dict[str, Any] = {"user": credentials.user, "password": credentials.password.reveal()}
        if credentials.code is not None:
            # The body code wins over the X-2FA-Code header (spec §2).
            body["code"] = credentials.code.reveal()
        data = await self._t.call("POST", "/api/v1/login", json_body=body, auth=False)
        session = data.get("data")
        if not isinstance(session, dict):
            raise self._errors.error(
                RocketChatProtocolError,
                "Rocket.Chat login answered without a session",
                method="POST",
                path="/api/v1/login",
            )
        user_id, token = session.get("userId"), session.get("authToken")
        if not (isinstance(user_id, str) and isinstance(token, str)):
            raise self._errors.error(
                RocketChatProtocolError,
                "Rocket.Chat login answered without userId/authToken",
                method="POST",
                path="/api/v1/login",
            )
        self._errors.add(token)
        self._user_id, self._own_session = user_id, True
        self._t.auth = (user_id, token)
        me = session.get("me")
        name = me.get("username") if isinstance(me, dict) else None
        return name if isinstance(name, str) else None

    async def close(self) -> None:
        """Log out, but only a session this client opened with a password login.

        A given token is never logged out: logout deletes the presented token, a
        personal access token included (spec §2). Logout failures are logged, not raised.
        """
        if self._own_session and self._t.auth is not None:
            try:
                await self._t.call("POST", "/api/v1/logout", attempts=1)
            except RocketChatError as exc:
                logger.warning("Rocket.Chat logout failed: %s", exc)
        self._own_session = False
        self._t.auth = None

    async def check_access(self) -> None:
        """Fail early when the user lacks ``manage-email-inbox`` (one list call)."""
        await self._t.call("GET", f"{_INBOX}.list", params={"count": "1"})

    # ------------------------------------------------------------ inboxes

    async def search_inbox(self, email: str) -> dict[str, Any] | None:
        """The inbox with exactly this address (case-sensitive), or ``None`` (spec §1.6)."""
        data = await self._t.call("GET", f"{_INBOX}.search", params={"email": email})
        inbox = data.get("emailInbox")
        if inbox is None:
            return None
        if not isinstance(inbox, dict):
            raise self._shape_error("GET", f"{_INBOX}.search")
        return self._learn(inbox)

    async def get_inbox(self, inbox_id: str) -> dict[str, Any]:
        """The inbox with this id (passwords in clear, spec §1.4).

        Raises:
            RocketChatNotFoundError: no such inbox.
        """
        data = await self._t.call("GET", f"{_INBOX}/{_segment(inbox_id)}")
        data.pop("success", None)
        return self._learn(data)

    async def list_inboxes(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every inbox, paging through ``email-inbox.list`` (spec §1.3)."""
        return [
            self._learn(doc)
            for doc in await self._paged(f"{_INBOX}.list", "emailInboxes", page_size)
        ]

    def _learn(self, inbox: dict[str, Any]) -> dict[str, Any]:
        """Keep the stored passwords out of every later error text (a server may echo them)."""
        for section in ("smtp", "imap"):
            settings = inbox.get(section)
            if isinstance(settings, Mapping) and isinstance(settings.get("password"), str):
                self._errors.add(settings["password"])
        return inbox

    async def delete_inbox(self, inbox_id: str, email: str | None = None) -> int:
        """Delete an inbox and confirm by a read-back that it is gone (spec §1.5).

        The DELETE is never simply repeated: after a 5xx, a timeout or a transport
        error the inbox is read back, and the DELETE is sent again only when that
        shows the inbox still there (a repeated DELETE of a deleted inbox is a 404,
        which would hide that the first one worked).

        Args:
            inbox_id: the inbox's ``_id``.
            email: its address, for the read-back on servers before 5.3 (spec §1.4).

        Returns:
            How many DELETE requests were sent.

        Raises:
            RocketChatNotFoundError: no such inbox (nothing was deleted).
            RocketChatUnavailableError: the server kept failing; ``write_state`` is
                ``"not-applied"`` (read back: still there) or ``"unknown"``.
            RocketChatProtocolError: the DELETE was answered, the inbox is still there.
        """
        path = f"{_INBOX}/{_segment(inbox_id)}"

        async def gone(exc: RocketChatUnavailableError) -> bool | None:
            return None if await self._still_there(inbox_id, email, exc) else True

        _, went, attempt = await write_unrepeated(
            self._t, self._errors, "DELETE", path, gone, kept="the inbox is still there"
        )
        if went:
            return attempt
        try:
            present = await self.inbox_present(inbox_id, email)
        except RocketChatError as exc:
            raise self._errors.error(
                RocketChatUnavailableError,
                f"Rocket.Chat answered the DELETE with success, but reading it back failed: {exc}",
                write_state="unknown",
                method="DELETE",
                path=path,
            ) from exc
        if present:
            raise self._errors.error(
                RocketChatProtocolError,
                "Rocket.Chat answered the DELETE with success, but the inbox is still there",
                hint="another writer may have recreated it; run again to see",
                method="DELETE",
                path=path,
            )
        return attempt

    async def inbox_present(self, inbox_id: str, email: str | None = None) -> bool:
        """Whether the inbox with this id is stored: ``GET email-inbox/:_id``.

        404 means absent (5.3+, spec §1.4); before 5.3 an unknown id is a 200 without
        a document, then a search by ``email`` confirms (spec §1.6).
        """
        try:
            found = await self.get_inbox(inbox_id)
        except RocketChatNotFoundError:
            return False
        if found.get("_id") == inbox_id:
            return True
        if email is None:
            return False
        by_address = await self.search_inbox(email)
        return by_address is not None and by_address.get("_id") == inbox_id

    def _unconfirmed(
        self,
        failure: RocketChatUnavailableError,
        exc: RocketChatError,
        what: str,
        done: str,
        method: str,
        path: str,
    ) -> RocketChatUnavailableError:
        """A write that failed and whose read-back failed too: its state is unknown."""
        return self._errors.error(
            RocketChatUnavailableError,
            f"{failure.message}; {what} may or may not have been {done} "
            f"(reading it back failed: {exc})",
            write_state="unknown",
            status=failure.status,
            method=method,
            path=path,
        )

    async def _still_there(
        self, inbox_id: str, email: str | None, failure: RocketChatUnavailableError
    ) -> bool:
        try:
            return await self.inbox_present(inbox_id, email)
        except RocketChatError as exc:
            path = f"{_INBOX}/{_segment(inbox_id)}"
            raise self._unconfirmed(failure, exc, "the inbox", "deleted", "DELETE", path) from exc

    async def save_inbox(self, body: Mapping[str, Any]) -> str:
        """Create (no ``_id``) or update (with ``_id``) an inbox; return its id.

        The POST is never simply repeated: after a 5xx, a timeout or a transport
        error the inbox is read back by address, and the POST is retried only when
        that shows the write did not happen (spec §1.2: no upsert, a second create
        would be a duplicate).

        Args:
            body: from :func:`plan_body_for_create` or :func:`plan_body_for_update`.

        Raises:
            RocketChatUnavailableError: the server kept failing; ``write_state``
                says whether the write is known not to have happened.
            RocketChatRejectedError: refused (validation, duplicate, unknown id).
        """
        path = _INBOX
        for section in ("smtp", "imap"):
            value = body.get(section)
            if isinstance(value, Mapping) and isinstance(value.get("password"), str):
                self._errors.add(value["password"])

        async def applied(exc: RocketChatUnavailableError) -> str | None:
            return await self._read_back(body, exc)

        data, applied_id, _ = await write_unrepeated(
            self._t,
            self._errors,
            "POST",
            path,
            applied,
            json_body=dict(body),
            kept="the inbox was not written",
        )
        if applied_id is not None:
            return applied_id
        assert data is not None
        inbox_id = data.get("_id")
        if isinstance(inbox_id, str) and inbox_id:
            return inbox_id
        # E0 (3.11-4.7) answers a create without the id (spec §1.2): find it.
        found = await self.search_inbox(str(body.get("email")))
        if found is not None and isinstance(found.get("_id"), str):
            return str(found["_id"])
        raise self._errors.error(
            RocketChatProtocolError,
            "Rocket.Chat accepted the inbox but returned no id, and it cannot be found by address",
            method="POST",
            path=path,
        )

    async def _read_back(
        self, body: Mapping[str, Any], failure: RocketChatUnavailableError
    ) -> str | None:
        """Id of the inbox if ``body`` is already stored exactly, else ``None``."""
        try:
            found = await self.search_inbox(str(body.get("email")))
        except RocketChatError as exc:
            raise self._unconfirmed(failure, exc, "the write", "applied", "POST", _INBOX) from exc
        if found is None:
            return None
        wanted_id = body.get("_id")
        if wanted_id and found.get("_id") != wanted_id:
            return None
        if diff_inbox(found, body):
            return None
        found_id = found.get("_id")
        return found_id if isinstance(found_id, str) else None

    async def send_test(self, inbox_id: str) -> None:
        """Ask Rocket.Chat to send its test mail (spec §1.7).

        Success means *requested*: Rocket.Chat does not wait for the SMTP send.

        Raises:
            RocketChatRejectedError: ``inbox-not-found`` (inactive or not set up) or
                ``user-without-verified-email``.
            RocketChatNotFoundError: no such inbox.
        """
        await self._t.call("POST", f"{_INBOX}.send-test/{inbox_id}", attempts=1)

    # -------------------------------------------------------- departments

    async def list_departments(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every Omnichannel department (``GET /api/v1/livechat/department``)."""
        return await self._paged("/api/v1/livechat/department", "departments", page_size)

    async def resolve_department(self, name_or_id: str) -> str:
        """The id of a department given by id or by its exact name.

        Raises:
            RocketChatDepartmentError: no department has this id or name, or several
                have this name.
        """
        departments = await self.list_departments()
        if any(d.get("_id") == name_or_id for d in departments):
            return name_or_id
        named = [d for d in departments if d.get("name") == name_or_id]
        if len(named) == 1 and isinstance(named[0].get("_id"), str):
            return str(named[0]["_id"])
        if len(named) > 1:
            ids = ", ".join(str(d.get("_id")) for d in named)
            raise self._errors.error(
                RocketChatDepartmentError,
                f"department name {name_or_id!r} is ambiguous: {len(named)} departments "
                f"have it ({ids})",
                hint="use the department id",
                field="department",
            )
        near = [
            str(d.get("name"))
            for d in departments
            if str(d.get("name", "")).casefold() == name_or_id.casefold()
        ]
        raise self._errors.error(
            RocketChatDepartmentError,
            f"no Omnichannel department has the id or name {name_or_id!r}",
            hint=f"did you mean {near[0]!r}?" if near else "check the name in Omnichannel",
            field="department",
        )

    async def _paged(self, path: str, key: str, page_size: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset = 0
        while True:
            data = await self._t.call(
                "GET", path, params={"offset": str(offset), "count": str(page_size)}
            )
            page = data.get(key)
            if not isinstance(page, list):
                raise self._shape_error("GET", path)
            for item in page:
                if isinstance(item, dict) and str(item.get("_id")) not in seen:
                    seen.add(str(item.get("_id")))
                    items.append(item)
            offset += len(page)
            total = data.get("total")
            if not page or not isinstance(total, int) or offset >= total:
                return items

    def _shape_error(self, method: str, path: str) -> RocketChatProtocolError:
        error: RocketChatProtocolError = self._errors.error(
            RocketChatProtocolError,
            f"Rocket.Chat answered {method} {path} with an unexpected JSON shape",
            method=method,
            path=path,
        )
        return error


@contextlib.asynccontextmanager
async def open_rocketchat(
    url: str,
    credentials: Credentials,
    options: RocketChatOptions | None = None,
    *,
    deadline: float | None = None,
) -> AsyncIterator[RocketChat]:
    """Connect (authenticate, read the version), yield the client, then close.

    The HTTP client is created here and closed on exit; a session opened by a
    password login is logged out, a given token never.

    Raises:
        ConfigError: the URL is refused (before any I/O).
        RocketChatCallError: connecting failed.
    """
    options = options or RocketChatOptions()
    http = make_http_client(
        url,
        ca_file=options.ca_file,
        timeout=options.step_timeout,
        allow_http=options.allow_http,
    )
    async with http:
        client = RocketChat(http, credentials, retry=options.retry, deadline=deadline)
        try:
            await client.connect()
            yield client
        finally:
            await client.close()
