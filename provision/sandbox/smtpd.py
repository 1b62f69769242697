"""A real SMTP submission server on 127.0.0.1 (aiosmtpd), for the sandbox and the tests.

``start_smtp_server`` runs aiosmtpd's ``SMTP`` protocol inside the running event loop
(``loop.create_server``, as aiosmtplib's own test suite does) in one of three modes:

* ``plain``: no TLS at all;
* ``starttls``: plaintext, STARTTLS advertised (RFC 3207), AUTH only after it by default;
* ``implicit``: TLS from the first byte (465 style).

It authenticates against a ``users`` mapping with PLAIN, LOGIN (aiosmtpd built-ins) and
CRAM-MD5 (RFC 2195, added here), accepts and discards mail, and records what each client
sent (:class:`ReceivedCommand`, AUTH reduced to its mechanism) and every AUTH outcome
(:class:`AuthAttempt`), so tests can check that AUTH came after STARTTLS, that QUIT was
sent and that no MAIL was.

aiosmtpd quirks handled here (STYLE.md): the authenticator returns
``AuthResult(success=..., handled=False)`` (``handled=True`` sends no reply at all), and
``auth_require_tls`` only counts STARTTLS sessions, so the implicit-TLS listener turns
it off.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "SUPPORTED_MECHANISMS",
    "AuthAttempt",
    "Mode",
    "ReceivedCommand",
    "RunningServer",
    "start_smtp_server",
]

Mode = Literal["plain", "starttls", "implicit"]

#: Mechanisms the sandbox can offer.
SUPPORTED_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

_HOSTNAME = "smtp.sandbox.test"  # fixed: aiosmtpd would otherwise call socket.getfqdn()


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """One command a client sent: its verb, a safe argument, and whether TLS was on.

    ``argument`` is the command's argument except for AUTH, where only the mechanism
    is kept (never the credentials).
    """

    connection: int
    verb: str
    argument: str
    tls: bool


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One authentication outcome (the user name is kept, the password never)."""

    connection: int
    mechanism: str
    username: str
    success: bool
    tls: bool


@dataclass(eq=False)
class RunningServer:
    """A listening sandbox SMTP server. Close it with :meth:`close`."""

    host: str
    port: int
    mode: Mode
    commands: list[ReceivedCommand] = field(default_factory=list)
    auth_attempts: list[AuthAttempt] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _sessions: set[_RecordingSMTP] = field(default_factory=set)

    def verbs(self, connection: int | None = None) -> list[str]:
        """The verbs received, in order (of one connection, if given)."""
        return [c.verb for c in self.commands if connection in (None, c.connection)]

    async def close(self, *, grace: float = 2.0) -> None:
        """Stop listening, drop open sessions and wait (at most ``grace`` s) until gone."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for session in list(self._sessions):
            session.abort()
        waits = [s.lost for s in self._sessions]
        if waits:
            await asyncio.wait(waits, timeout=grace)
        # Python 3.11's wait_closed() can hang on open connections: bound it.
        await asyncio.wait([asyncio.ensure_future(server.wait_closed())], timeout=grace)

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_smtp_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    mode: Mode,
    tls_context: ssl.SSLContext | None,
    users: Mapping[str, str],
    auth_mechanisms: Sequence[str] = ("PLAIN", "LOGIN"),
    require_tls_for_auth: bool | None = None,
    hostname: str = _HOSTNAME,
) -> RunningServer:
    """Start an SMTP server in the running event loop.

    Args:
        host: address to listen on.
        port: port to listen on; 0 lets the OS choose (read it from ``.port``).
        mode: ``plain``, ``starttls`` or ``implicit`` (see the module docstring).
        tls_context: server-side context; required for ``starttls`` and ``implicit``.
        users: user name -> password accepted by AUTH.
        auth_mechanisms: mechanisms to advertise, from :data:`SUPPORTED_MECHANISMS`.
        require_tls_for_auth: offer AUTH only on encrypted sessions. Defaults to ``True``
            for ``starttls`` (AUTH appears after the upgrade) and ``False`` otherwise;
            with ``plain`` mode ``True`` means AUTH is never offered.
        hostname: the name in the greeting and EHLO reply.

    Returns:
        The running server with its port and the recorders.

    Raises:
        ValueError: a TLS mode without a context, or an unsupported mechanism.
    """
    if mode != "plain" and tls_context is None:
        raise ValueError(f"mode {mode!r} needs a tls_context")
    unknown = set(auth_mechanisms) - set(SUPPORTED_MECHANISMS)
    if unknown:
        raise ValueError(f"unsupported AUTH mechanisms: {', '.join(sorted(unknown))}")
    if require_tls_for_auth is None:
        require_tls_for_auth = mode == "starttls"
    running = RunningServer(host=host, port=port, mode=mode)
    handler = _Handler(dict(users), running)
    loop = asyncio.get_running_loop()
    counter = iter(range(1, 1_000_000_000))

    def factory() -> _RecordingSMTP:
        return _RecordingSMTP(
            handler,
            running=running,
            connection=next(counter),
            hostname=hostname,
            tls_context=tls_context if mode == "starttls" else None,
            # aiosmtpd counts only STARTTLS sessions as encrypted (STYLE.md).
            auth_require_tls=require_tls_for_auth and mode != "implicit",
            authenticator=handler.authenticate,
            auth_exclude_mechanism=[m for m in SUPPORTED_MECHANISMS if m not in auth_mechanisms],
            loop=loop,
        )

    server = await loop.create_server(
        factory, host, port, ssl=tls_context if mode == "implicit" else None
    )
    running._server = server
    running.port = server.sockets[0].getsockname()[1]
    return running


class _RecordingSMTP(SMTP):  # aiosmtpd ships no type hints: SMTP is Any to mypy
    """aiosmtpd's protocol, recording each command and when its connection ends."""

    def __init__(
        self, handler: _Handler, *, running: RunningServer, connection: int, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.running = running
        self.connection = connection
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # aiosmtpd dispatches every command through this table (_handle_client).
        self._smtp_methods = {
            verb: self._recorded(verb, method) for verb, method in self._smtp_methods.items()
        }

    @property
    def encrypted(self) -> bool:
        """Whether this session runs over TLS (implicit or after STARTTLS)."""
        transport = self.transport
        return transport is not None and transport.get_extra_info("sslcontext") is not None

    def _recorded(
        self, verb: str, method: Callable[[str | None], Any]
    ) -> Callable[[str | None], Any]:
        async def run(arg: str | None) -> None:
            argument = arg or ""
            if verb == "AUTH":
                argument = argument.split(" ", 1)[0]
            self.running.commands.append(
                ReceivedCommand(self.connection, verb, argument, self.encrypted)
            )
            await method(arg)

        return run

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.running._sessions.add(self)

    def eof_received(self) -> bool | None:
        """The end of a TLS session: let the handler read what came with it first.

        aiosmtpd cancels its handler here, dropping commands received together with
        the close: a client's QUIT and its close_notify often arrive in one read (a
        plaintext FIN never does). Postfix answers them; the handler's wake-up is
        already scheduled, so ending the session one callback later does the same.
        """
        if not self.encrypted:
            return bool(super().eof_received())
        self.loop.call_soon(functools.partial(SMTP.eof_received, self))
        return False

    def connection_lost(self, error: Exception | None) -> None:
        self.running._sessions.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        super().connection_lost(error)

    def abort(self) -> None:
        """Drop the connection now (used when the server closes)."""
        transport = self.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()


class _QuietSession(Session):
    """aiosmtpd's session without the deprecation log line on every successful AUTH."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _Handler:
    """Checks credentials, implements CRAM-MD5, and accepts (discards) mail."""

    def __init__(self, users: dict[str, str], running: RunningServer) -> None:
        self.users = users
        self.running = running

    def authenticate(
        self,
        server: _RecordingSMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """aiosmtpd authenticator for PLAIN and LOGIN (``auth_data`` is a LoginPassword)."""
        username = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        expected = self.users.get(username)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        return self._result(server, mechanism, username, ok, auth_data)

    async def auth_CRAM__MD5(self, server: _RecordingSMTP, args: list[str]) -> AuthResult:
        """CRAM-MD5 (RFC 2195); aiosmtpd maps the method name to ``CRAM-MD5``."""
        challenge = f"<{secrets.token_hex(8)}@{server.hostname}>".encode()
        response = await server.challenge_auth(challenge)
        if response is MISSING:  # aborted or not base64: aiosmtpd already answered 501
            return AuthResult(success=False, handled=True)
        login, _, digest = bytes(response).partition(b" ")
        username = login.decode("utf-8", "replace")
        expected = self.users.get(username)
        ok = expected is not None and hmac.compare_digest(
            hmac.new(expected.encode(), challenge, "md5").hexdigest().encode(), digest
        )
        return self._result(server, "CRAM-MD5", username, ok, LoginPassword(login, b""))

    def _result(
        self, server: _RecordingSMTP, mechanism: str, username: str, ok: bool, data: Any
    ) -> AuthResult:
        self.running.auth_attempts.append(
            AuthAttempt(server.connection, mechanism, username, ok, server.encrypted)
        )
        # handled=False: let aiosmtpd send 235 or 535 itself (STYLE.md).
        return AuthResult(success=ok, handled=False, auth_data=data)
