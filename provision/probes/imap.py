"""IMAP probe: log in exactly as Rocket.Chat's node-imap does, and report what it found.

Rocket.Chat reads an email inbox with node-imap 0.8.19 configured from the inbox's
``imap`` object (spec §3.2): ``secure: true`` is TLS from the first byte with
``rejectUnauthorized: false`` and no SNI; ``secure: false`` is plaintext and never
STARTTLS (node-imap's ``autotls`` defaults to ``never``). It sends ``LOGIN "user"
"password"`` (never AUTHENTICATE), gives up 10 s into connecting and 5 s after
connecting if not logged in, opens INBOX read-write and searches ``UNSEEN SINCE``.

The probe walks the same path, one recorded step each: ``resolve``, ``connect``,
``tls`` (secure only), ``greeting``, ``capabilities``, ``auth``, ``mailbox``, ``quit``.
It never fetches a body, never stores a flag and never sends STARTTLS (spec §3.3).
Around that path it adds what Rocket.Chat cannot tell you, each on a second,
credential-free connection: whether the certificate would verify, and which TLS mode a
port really speaks when the configured one fails.

aioimaplib (GPL-3.0-only) is imported here only. It speaks the command protocol
(tags, untagged routing, response collection); the connection is our own socket from
``_net`` and the greeting is read by this module, so a silent port, a TLS record and a
foreign banner can be told apart (probe-anchors.md §3 rows 8-12).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aioimaplib

from provision import tls
from provision.models import ImapSettings, Inbox, ProbeOptions, Secret
from provision.probes import _net
from provision.probes._providers import provider_failure
from provision.probes._scrub import SecretsFilter, scrub
from provision.probes._steps import Recorder, StepTimeout, early_mode_check_after
from provision.probes.failure import ProbeFailed
from provision.results import ExitCode, Failure, FailureClass, Finding, Stage, StageResult, Step
from provision.tls_failures import classify_tls_error

__all__ = ["PLAN_PLAINTEXT", "PLAN_TLS", "probe_imap"]

#: The plan printed for ``imap.secure: true`` (spec §3.2).
PLAN_TLS = "implicit TLS, certificate not verified, no SNI (as node-imap)"
#: The plan printed for ``imap.secure: false`` (spec §3.2).
PLAN_PLAINTEXT = "plaintext, never STARTTLS (as node-imap)"

# Rocket.Chat passes connTimeout: 10000 and keeps node-imap's authTimeout default of
# 5000 ms, counted from the (TLS) connect to a successful LOGIN (spec §3.2, issue #27268).
RC_CONNECT_TIMEOUT = 10.0
RC_AUTH_TIMEOUT = 5.0

# A greeting longer than this is not IMAP (RFC 3501 sets no limit; real ones are < 1 KiB).
MAX_GREETING = 8192
# Caps that keep a misbehaving server from filling memory or the CPU (the probe's whole
# conversation is a few KiB in some 30 lines; SEARCH UNSEEN SINCE today is its only reply
# that grows, ~8 bytes a hit): a reply line that never ends, everything received on one
# connection, and lines received on one connection.
MAX_PENDING = 1024 * 1024
MAX_RECEIVED = 2 * 1024 * 1024
MAX_LINES = 1_000
# How long to wait for a connection to close after our close or LOGOUT before aborting.
CLOSE_GRACE = 1.0

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CODE = re.compile(r"^\s*\[([A-Za-z0-9.-]+)[^\]]*\]")
_CAPABILITY_CODE = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_EXISTS = re.compile(rb"^(\d+) EXISTS", re.IGNORECASE)
_THROTTLE_CODES = frozenset({"UNAVAILABLE", "LIMIT", "INUSE"})
_THROTTLE_TEXT = re.compile(r"too many|maximum number|rate limit", re.IGNORECASE)
_UNSENDABLE = re.compile(r"[\x00\r\n]")
# First bytes of a TLS record (handshake 0x16 or alert 0x15, version major 3): a TLS
# server that got our silence or plaintext (probe-anchors.md §3 row 9).
_TLS_RECORD = (b"\x15\x03", b"\x16\x03")

# aioimaplib logs every line it sends and receives at DEBUG, and servers echo commands:
# mask the passwords of running probes there (the LOGIN line itself it masks already).
_LOG_FILTER = SecretsFilter()
logging.getLogger(aioimaplib.__name__ + ".aioimaplib").addFilter(_LOG_FILTER)


async def probe_imap(inbox: Inbox, options: ProbeOptions, *, deadline: float) -> StageResult:
    """Log in to the inbox's IMAP server the way Rocket.Chat would.

    Args:
        inbox: the inbox; only ``inbox.imap`` is used.
        options: step cap, CA file for the certificate check.
        deadline: event-loop time at which the whole run ends.

    Returns:
        The ``imap`` stage: passed, passed with warnings (plaintext credentials, an
        unverified certificate, slower than Rocket.Chat allows) or failed with a
        :class:`~provision.results.FailureClass`, the server's (scrubbed) text, a hint
        and the setting to change. Facts: ``plan``, ``address``, ``tls``,
        ``certificate_verified``, ``greeting``, ``capabilities``,
        ``capabilities_after_login``, ``idle``, ``preauth``, ``exists``, ``unseen``,
        ``confirmed_mode``.

    Network, protocol and authentication outcomes never raise; a bug does.
    """
    rec = Recorder(stage=Stage.IMAP, deadline=deadline, step_timeout=options.step_timeout)
    run = _ImapRun(rec, inbox.imap, options)
    try:
        with _LOG_FILTER.guarding(inbox.imap.password):
            await run.run()
    except ProbeFailed as exc:
        rec.result.fail_with(exc.failure)
    return rec.finish()


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class _Greeting:
    """What arrived first on a connection.

    ``kind`` is ``line`` (a CRLF-terminated line, in ``data``), ``tls-record`` (the
    bytes of a TLS record), ``closed`` (the peer closed; ``data`` is what came before)
    or ``too-long`` (no line end within :data:`MAX_GREETING` bytes).
    """

    kind: Literal["line", "tls-record", "closed", "too-long"]
    data: bytes = b""

    @property
    def ok(self) -> bool:
        """An IMAP server's ``* OK`` or ``* PREAUTH`` greeting (RFC 3501 §7.1)."""
        return self.kind == "line" and _status(self.data) in ("OK", "PREAUTH")

    @property
    def preauth(self) -> bool:
        return self.kind == "line" and _status(self.data) == "PREAUTH"


@dataclass(frozen=True, slots=True)
class _CertCheck:
    """Outcome of the credential-free, verifying handshake."""

    verified: bool
    reason: str


def _status(line: bytes) -> str:
    """``OK``/``PREAUTH``/``BYE``... of an untagged status line, else ``""``."""
    parts = line.split(None, 2)
    if len(parts) >= 2 and parts[0] == b"*":
        return parts[1].decode("ascii", "replace").upper()
    return ""


class _GreetingBuffer:
    """Collects the first bytes of a connection until a greeting can be judged."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, chunk: bytes) -> tuple[_Greeting | None, bytes]:
        """Add bytes; return the greeting once known, and the bytes after it."""
        self.data += chunk
        if bytes(self.data[:2]) in _TLS_RECORD:
            return _Greeting("tls-record", bytes(self.data[:16])), b""
        end = self.data.find(b"\r\n")
        if end >= 0:
            return _Greeting("line", bytes(self.data[:end])), bytes(self.data[end + 2 :])
        if len(self.data) > MAX_GREETING:
            return _Greeting("too-long", bytes(self.data[:120])), b""
        return None, b""

    def closed(self) -> _Greeting:
        return _Greeting("closed", bytes(self.data))


# --------------------------------------------------------------------------- wire


class _GreetingProtocol(asyncio.Protocol):
    """Reads a greeting and nothing else: the diagnostic connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.greeting: asyncio.Future[_Greeting] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._buffer = _GreetingBuffer()

    def data_received(self, data: bytes) -> None:
        if not self.greeting.done():
            greeting, _ = self._buffer.feed(data)
            if greeting is not None:
                self.greeting.set_result(greeting)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.greeting.done():
            self.greeting.set_result(self._buffer.closed())
        if not self.closed.done():
            self.closed.set_result(None)


class _ImapProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, with the greeting read by us and its failures contained.

    aioimaplib treats any first line containing ``OK`` as a greeting (so ``+OK`` POP3
    passes), raises from ``data_received`` on input it cannot parse (asyncio then logs
    the error with the pending command, password included, in its repr), never fails
    pending commands when the connection drops, silently drops lines that are not IMAP
    responses (the command then waits for its cap, as if the server were silent), and
    copies its whole pending input once per line it parses, recursively (a chunk full of
    short lines costs memory quadratic in its size). Here the greeting is judged by
    :class:`_GreetingBuffer`, aioimaplib is fed one complete line at a time within
    :data:`MAX_PENDING`, :data:`MAX_RECEIVED` and :data:`MAX_LINES`, a line that is
    neither tagged, untagged nor a continuation is a parse error, parser errors close
    the connection and are kept in ``error``, and ``closed`` lets callers stop waiting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, None)
        self.greeting: asyncio.Future[_Greeting] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.buffer = _GreetingBuffer()
        self._pending = bytearray()
        self._received = 0
        self._lines = 0

    def data_received(self, data: bytes) -> None:
        if not self.greeting.done():
            greeting, data = self.buffer.feed(data)
            if greeting is None:
                return
            if greeting.ok:
                # aioimaplib's own states (NONAUTH/AUTH), so its command checks work.
                self.state = aioimaplib.AUTH if greeting.preauth else aioimaplib.NONAUTH
            self.greeting.set_result(greeting)
        if self.error is not None or not self.greeting.result().ok or not data:
            return
        try:
            self._feed(data)
        except Exception as exc:  # any parser failure: contain it, see class docstring
            self.error = exc
            self.transport.abort()

    def _feed(self, data: bytes) -> None:
        """Hand aioimaplib the complete lines of ``data``, one at a time, within the caps."""
        self._received += len(data)
        if self._received > MAX_RECEIVED:
            raise ValueError(f"the server sent more than {MAX_RECEIVED} bytes")
        pending = self._pending
        pending += data
        start = 0
        while (end := pending.find(b"\r\n", start)) >= 0:
            self._lines += 1
            if self._lines > MAX_LINES:
                raise ValueError(f"the server sent more than {MAX_LINES} lines")
            super().data_received(bytes(pending[start : end + 2]))
            start = end + 2
        del pending[:start]
        if len(pending) > MAX_PENDING:
            raise ValueError(f"a reply line exceeded {MAX_PENDING} bytes without an end")

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        if (
            line
            and current_cmd is None
            and not line.startswith((b"*", b"+"))
            and not aioimaplib.tagged_status_response_re.match(line)
        ):
            raise ValueError(f"not an IMAP response line: {line[:60]!r}")
        return super()._handle_line(line, current_cmd)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.greeting.done():
            self.greeting.set_result(self.buffer.closed())
        if not self.closed.done():
            self.closed.set_result(None)


class _Client(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib's client on a socket we already connected (``_net``).

    ``create_client`` is overridden so the connection is our socket, with TLS (if any)
    started without SNI: ``server_hostname=""`` makes asyncio pass no name to OpenSSL,
    as node-imap 0.8.19 does when Rocket.Chat's ``tlsOptions`` carry no ``servername``
    (spec §3.2).
    """

    def __init__(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        self._sock = sock
        super().__init__(ssl_context=ssl_context)

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Callable[[Exception | None], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        running = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _ImapProtocol(running)
        self._client_task = running.create_task(
            _open_transport(
                self._sock, lambda: self.protocol, ssl_context, "" if ssl_context else None
            )
        )

    async def connected(self) -> None:
        """Wait until the connection (and TLS handshake) is up; raise its error if not."""
        await self._client_task


async def _dial(family: int, sockaddr: Any) -> socket.socket:
    """A new TCP connection to an address ``_net`` already reached (diagnostics)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def _open_transport(
    sock: socket.socket,
    factory: Callable[[], asyncio.Protocol],
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """``create_connection`` on a connected socket; the socket is closed if it fails."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_connection(
            factory, sock=sock, ssl=ssl_context, server_hostname=server_hostname
        )
    except BaseException:
        await _settle(sock)
        raise


async def _settle(sock: socket.socket) -> None:
    """Let asyncio close a socket whose transport failed, then make sure it is closed.

    A failed handshake closes the socket one loop iteration later
    (``_call_connection_lost``); closing it here too is harmless and keeps
    ``ResourceWarning`` away when the loop ends right after.
    """
    for _ in range(3):
        if sock.fileno() == -1:
            return
        await asyncio.sleep(0)
    sock.close()


async def _shutdown(transport: asyncio.Transport, closed: asyncio.Future[None]) -> None:
    """Close a transport and wait (briefly) until it is gone; abort if the peer stalls.

    A TLS close waits for the peer's close_notify; a peer that never sends it would hold
    us for asyncio's 30 s shutdown timeout, so after :data:`CLOSE_GRACE` we abort.
    """
    if closed.done():
        return
    transport.close()
    if await _wait_closed(closed):
        return
    transport.abort()
    await _wait_closed(closed)


async def _wait_closed(closed: asyncio.Future[None]) -> bool:
    """Wait up to :data:`CLOSE_GRACE` for ``connection_lost``; ``True`` if it came."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_GRACE):
            await asyncio.shield(closed)
    return closed.done()


async def _read_greeting(family: int, sockaddr: Any, *, secure: bool) -> _Greeting:
    """Open a credential-free connection in one TLS mode and read only the greeting."""
    loop = asyncio.get_running_loop()
    sock = await _dial(family, sockaddr)
    ctx = tls.imap_context() if secure else None
    transport, proto = await _open_transport(
        sock, lambda: _GreetingProtocol(loop), ctx, "" if ctx else None
    )
    assert isinstance(proto, _GreetingProtocol)
    try:
        return await proto.greeting
    finally:
        await _shutdown(transport, proto.closed)


# --------------------------------------------------------------------------- the run


class _ImapRun:
    """One probe of one inbox's IMAP settings; each method is one step."""

    def __init__(self, rec: Recorder, imap: ImapSettings, options: ProbeOptions) -> None:
        self.rec = rec
        self.imap = imap
        self.options = options
        self.facts = rec.result.facts
        self.loop = asyncio.get_running_loop()
        self.client: _Client | None = None
        self.sock: socket.socket | None = None
        self.peer: tuple[int, Any] | None = None
        self.cert_task: asyncio.Task[_CertCheck] | None = None
        self.early_confirm: asyncio.Task[_Greeting | None] | None = None
        self.auth_clock = 0.0

    # ---- flow

    async def run(self) -> None:
        imap = self.imap
        self.facts["plan"] = PLAN_TLS if imap.secure else PLAN_PLAINTEXT
        if not imap.secure:
            self.rec.result.warn(_plaintext_finding(imap))
        else:  # for the certificate check; reading the CA store takes ~15 ms
            tls.warm_probe_context(self.options.ca_file)
        addresses = await _net.resolve(self.rec, imap.server, imap.port, prefix="imap")
        started = self.loop.time()
        self.sock = await _net.connect(
            self.rec, addresses, host=imap.server, port=imap.port, prefix="imap"
        )
        try:
            self.peer = (self.sock.family, self.sock.getpeername())
        except OSError as exc:  # reset between accept and now
            self.sock.close()
            raise ProbeFailed(
                Failure(
                    FailureClass.RESET,
                    f"the connection was reset right after it was accepted ({exc.strerror})",
                    f"check imap.server and imap.port ({imap.port})",
                    "imap.port",
                )
            ) from None
        self.facts["address"] = _net.format_address(self.peer[1])
        try:
            await self._open()
            self._check_time("connect", self.loop.time() - started, RC_CONNECT_TIMEOUT)
            self.auth_clock = self.loop.time()
            greeting = await self._greeting()
            capabilities = await self._capabilities(greeting)
            if greeting.preauth:
                self.rec.skip(Step.AUTH, "PREAUTH: already authenticated, LOGIN not sent")
            else:
                await self._login(capabilities)
            await self._mailbox()
            await self._quit()
        finally:
            if self.early_confirm is not None and not self.early_confirm.done():
                self.early_confirm.cancel()
                await asyncio.wait({self.early_confirm})
            await self._close()
            await self._certificate_finding()

    async def _open(self) -> None:
        """Start aioimaplib on our socket; the ``tls`` step when ``secure``."""
        assert self.sock is not None
        ctx = tls.imap_context() if self.imap.secure else None
        self.client = _Client(self.sock, ctx)
        if ctx is None:
            await self.client.connected()
            return
        try:
            async with self.rec.step(Step.TLS) as info:
                await self.client.connected()
                facts = tls.session_facts(self._transport().get_extra_info("ssl_object"))
                info.detail = (
                    f"{facts.get('version')} {facts.get('cipher')}, "
                    "certificate not verified, no SNI"
                )
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ProbeFailed(await self._tls_failure(exc)) from None
        self.facts["tls"] = facts
        self.cert_task = asyncio.create_task(self._check_certificate())

    async def _greeting(self) -> _Greeting:
        proto = self._proto()
        try:
            async with self.rec.step(Step.GREETING) as info:
                if self.imap.secure:
                    greeting = await proto.greeting
                else:
                    greeting = await self._greeting_or_implicit_tls(proto.greeting)
                info.detail = _show_greeting(greeting, self.imap.password)
                if not greeting.ok:
                    raise _BadGreeting(greeting)
        except _BadGreeting as bad:
            raise ProbeFailed(await self._greeting_failure(bad.greeting)) from None
        except StepTimeout as exc:
            raise ProbeFailed(await self._greeting_timeout(exc, bytes(proto.buffer.data))) from None
        self.facts["greeting"] = _show_greeting(greeting, self.imap.password)
        if greeting.preauth:
            self.facts["preauth"] = True
        return greeting

    async def _greeting_or_implicit_tls(self, greeting: asyncio.Future[_Greeting]) -> _Greeting:
        """Wait for the greeting; after a silence, ask the same port in TLS meanwhile.

        A plaintext client on an implicit-TLS port waits forever (the server waits
        for a ClientHello). Whichever answers first decides; if the step cap ends
        the wait, the timeout's follow-up uses the check's answer.
        """
        done, _ = await asyncio.wait(
            {greeting}, timeout=early_mode_check_after(self.options.step_timeout)
        )
        if done:
            return greeting.result()
        check = self.early_confirm = asyncio.create_task(self._confirm(secure=True))
        pending: set[asyncio.Future[Any]] = {greeting, check}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if greeting.done():
            return greeting.result()
        confirm = check.result()
        if confirm is not None and confirm.kind == "line":
            raise ProbeFailed(
                self._mismatch(
                    FailureClass.PLAINTEXT_ON_TLS_PORT,
                    "no greeting in plaintext, while a TLS client was greeted",
                    confirm,
                    in_tls=True,
                )
            )
        return await greeting

    async def _capabilities(self, greeting: _Greeting) -> list[str]:
        """CAPABILITY, unless the greeting carried it (RFC 3501 §7.1 response code)."""
        caps = _capability_code(_text(greeting.data))
        try:
            async with self.rec.step(Step.CAPABILITIES) as info:
                if caps is None:
                    caps = await self._capability_command()
                    info.detail = "CAPABILITY"
                else:
                    info.detail = "from the greeting"
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None
        self.facts["capabilities"] = caps
        self.facts["idle"] = "IDLE" in caps
        return caps

    async def _login(self, capabilities: list[str]) -> None:
        """LOGIN with quoted user and password, as node-imap (never AUTHENTICATE)."""
        imap = self.imap
        if "LOGINDISABLED" in capabilities:
            # RFC 3501 §6.2.3: a client MUST NOT send LOGIN while LOGINDISABLED is
            # advertised; node-imap stops with "Logging in is disabled on this server".
            self.rec.skip(Step.AUTH, "LOGINDISABLED advertised: LOGIN not sent")
            raise ProbeFailed(_login_disabled(imap))
        if _UNSENDABLE.search(imap.username) or _UNSENDABLE.search(imap.password.reveal()):
            self.rec.skip(Step.AUTH, "credentials contain CR, LF or NUL: LOGIN not sent")
            raise ProbeFailed(_unsendable_credentials())
        command = aioimaplib.Command(
            "LOGIN",
            self._proto().new_tag(),
            aioimaplib.quoted(imap.username),
            aioimaplib.quoted(imap.password.reveal()),
            loop=self.loop,
        )
        try:
            async with self.rec.step(Step.AUTH) as info:
                response = await self._command(command, Step.AUTH, masked=imap.password)
                info.detail = f"{response.result} {self._reply(response)}"
                if response.result != "OK":
                    raise ProbeFailed(_login_failure(response.result, response.lines, imap))
                self._proto().state = aioimaplib.AUTH
                self._check_time("auth", self.loop.time() - self.auth_clock, RC_AUTH_TIMEOUT)
                await self._after_login(response.lines)
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None

    async def _after_login(self, lines: Sequence[bytes]) -> None:
        """Post-login capabilities, as node-imap fetches them when LOGIN's reply lacks them."""
        caps = _capabilities_in(lines)
        if caps is None:
            caps = await self._capability_command()
        self.facts["capabilities_after_login"] = caps
        self.facts["idle"] = "IDLE" in caps

    async def _mailbox(self) -> None:
        """``SELECT "INBOX"`` read-write, then ``SEARCH UNSEEN SINCE <today>`` (spec §3.2)."""
        since = _imap_date(dt.date.today())
        try:
            async with self.rec.step(Step.MAILBOX) as info:
                select = await self._command(
                    self._new("SELECT", aioimaplib.quoted("INBOX")), Step.MAILBOX
                )
                if select.result != "OK":
                    raise ProbeFailed(_select_failure(select.result, select.lines, self.imap))
                if _response_code(_text(select.lines[-1])) == "READ-ONLY":
                    raise ProbeFailed(_read_only(self._reply(select)))
                self._proto().state = aioimaplib.SELECTED
                exists = _exists(select.lines)
                if exists is not None:
                    self.facts["exists"] = exists
                # node-imap's search: no CHARSET for ASCII criteria, day not zero-padded.
                search = await self._command(
                    self._new("SEARCH", "UNSEEN", "SINCE", since), Step.MAILBOX
                )
                if search.result != "OK":
                    raise ProbeFailed(_search_failure(search.result, self._reply(search), since))
                unseen = _search_hits(search.lines)
                self.facts["unseen"] = unseen
                info.detail = (
                    f"INBOX read-write, {exists if exists is not None else '?'} messages, "
                    f"{unseen} unseen since {since}"
                )
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None

    async def _quit(self) -> None:
        """LOGOUT, then wait for the server to close (RFC 3501 §6.1.3).

        A server that does not answer here does not fail the stage: Rocket.Chat never
        logs out, and everything it needs has been checked.
        """
        try:
            async with self.rec.step(Step.QUIT) as info:
                try:
                    response = await self._command(self._new("LOGOUT"), Step.QUIT)
                    info.detail = f"LOGOUT {response.result}"
                except ProbeFailed:
                    info.detail = "closed by the server before LOGOUT was confirmed"
                if not await _wait_closed(self._proto().closed):
                    info.detail = f"{info.detail}; the server kept the connection open"
        except StepTimeout:
            pass

    async def _close(self) -> None:
        """Close the connection and wait until it is gone (no ResourceWarning)."""
        if self.client is None:
            if self.sock is not None:
                self.sock.close()
            return
        if self._proto().transport is not None:
            await _shutdown(self._transport(), self._proto().closed)
        elif self.sock is not None:
            await _settle(self.sock)

    # ---- commands

    def _proto(self) -> _ImapProtocol:
        assert self.client is not None
        proto: _ImapProtocol = self.client.protocol
        return proto

    def _transport(self) -> asyncio.Transport:
        transport: asyncio.Transport = self._proto().transport
        return transport

    def _new(self, name: str, *args: str) -> Any:
        return aioimaplib.Command(name, self._proto().new_tag(), *args, loop=self.loop)

    def _reply(self, response: Any) -> str:
        lines: list[bytes] = list(response.lines)
        return scrub(_text(lines[-1]) if lines else "", self.imap.password)

    async def _command(self, command: Any, step: Step, *, masked: Secret | None = None) -> Any:
        """Send one command and wait for its tagged reply, or for the connection to end.

        Raises:
            ProbeFailed: the connection closed or the reply could not be parsed.
        """
        proto = self._proto()
        if proto.closed.done():
            raise ProbeFailed(_closed_failure(step, self.imap, lines=[], error=proto.error))
        # aioimaplib masks ``scrub`` in its "Sending" debug line: give it the escaped
        # form that is actually on the wire.
        mask = aioimaplib.quoted(masked.reveal())[1:-1] if masked else None
        task = asyncio.ensure_future(proto.execute(command, scrub=mask))
        try:
            await asyncio.wait({task, proto.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            lines = [bytes(line) for line in command.response.lines]
            raise ProbeFailed(_closed_failure(step, self.imap, lines=lines, error=proto.error))
        return task.result()

    async def _capability_command(self) -> list[str]:
        response = await self._command(self._new("CAPABILITY"), Step.CAPABILITIES)
        if response.result != "OK":
            raise ProbeFailed(
                Failure(
                    FailureClass.PROTOCOL_ERROR,
                    f"CAPABILITY refused: {response.result} {self._reply(response)}",
                    "the server does not behave like an IMAP server; check imap.port",
                    "imap.port",
                )
            )
        return _capabilities_in(response.lines, untagged_bare=True) or []

    # ---- diagnostics on second connections

    async def _confirm(self, *, secure: bool) -> _Greeting | None:
        """Read the greeting in the other TLS mode, without credentials; ``None`` if none."""
        cap = min(self.options.step_timeout, self.rec.remaining())
        if self.peer is None or cap <= 0:
            return None
        try:
            async with asyncio.timeout(cap):
                return await _read_greeting(*self.peer, secure=secure)
        except (TimeoutError, OSError):
            return None

    async def _check_certificate(self) -> _CertCheck:
        """A second handshake with verification on and SNI = ``imap.server``."""
        assert self.peer is not None
        cap = min(self.options.step_timeout, self.rec.remaining())
        try:
            async with asyncio.timeout(max(cap, 0.0)):
                ctx = await tls.probe_context(self.options.ca_file)
                sock = await _dial(*self.peer)
                transport, proto = await _open_transport(
                    sock, lambda: _GreetingProtocol(self.loop), ctx, self.imap.server
                )
                assert isinstance(proto, _GreetingProtocol)
                await _shutdown(transport, proto.closed)
        except TimeoutError:
            return _CertCheck(False, f"the verifying handshake got no answer within {cap:.1f} s")
        except OSError as exc:
            failure = classify_tls_error(exc, server=self.imap.server)
            reason = failure.message if failure else f"the verifying handshake failed ({exc})"
            return _CertCheck(False, reason)
        trust = "the system store" + (" and --ca-file" if self.options.ca_file else "")
        return _CertCheck(True, f"verified against {trust}")

    async def _certificate_finding(self) -> None:
        task, self.cert_task = self.cert_task, None
        if task is None:
            return
        current = asyncio.current_task()
        if current is not None and current.cancelling() and not task.done():
            task.cancel()  # the whole probe is being abandoned: do not wait for the check
            await asyncio.wait({task})
            return
        check = await task
        self.facts["certificate_verified"] = check.verified
        self.facts["certificate_check"] = check.reason
        if not check.verified:
            self.rec.result.warn(
                _cert_finding(self.imap, check.reason, self.facts.get("tls", {}), self.options)
            )

    # ---- classification that needs the network (mismatch confirmation)

    async def _tls_failure(self, exc: OSError) -> Failure:
        imap = self.imap
        failure = classify_tls_error(exc, server=imap.server)
        if failure is None:
            return Failure(
                FailureClass.RESET,
                "the connection failed during the TLS handshake "
                f"({exc.strerror or str(exc) or type(exc).__name__})",
                f"check imap.server and imap.port ({imap.port}); port 993 speaks TLS",
                "imap.port",
            )
        if failure.cls is not FailureClass.TLS_ON_PLAINTEXT_PORT:
            return Failure(failure.cls, failure.message, _tls_hint(failure.cls), "imap.port")
        confirm = await self._confirm(secure=False)
        return self._mismatch(
            FailureClass.TLS_ON_PLAINTEXT_PORT, failure.message, confirm, in_tls=False
        )

    async def _greeting_failure(self, greeting: _Greeting) -> Failure:
        imap = self.imap
        if greeting.kind == "tls-record" and not imap.secure:
            confirm = await self._confirm(secure=True)
            text = "the server answered with a TLS record instead of an IMAP greeting"
            return self._mismatch(FailureClass.PLAINTEXT_ON_TLS_PORT, text, confirm, in_tls=True)
        if greeting.kind == "closed" and not greeting.data and not imap.secure:
            confirm = await self._confirm(secure=True)
            if confirm is not None and confirm.kind == "line":
                text = "the server closed the connection without a greeting"
                return self._mismatch(
                    FailureClass.PLAINTEXT_ON_TLS_PORT, text, confirm, in_tls=True
                )
        return _classify_greeting(greeting, imap)

    async def _greeting_timeout(self, exc: StepTimeout, partial: bytes) -> Failure:
        imap = self.imap
        if exc.deadline:
            return self._timeout(exc)
        if partial:
            shown = scrub(partial.decode("utf-8", "replace"), imap.password, limit=80)
            return Failure(
                FailureClass.PROTOCOL_ERROR,
                f"the greeting never ended: {len(partial)} bytes without a line end within "
                f"{exc.cap:.1f} s ('{shown}')",
                f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
                "imap.port",
            )
        if not imap.secure:
            # Plaintext to an implicit-TLS port hangs: the server waits for a ClientHello
            # (probe-anchors.md §3 row 9). Confirm with TLS before saying so.
            if self.early_confirm is not None:
                confirm = await self.early_confirm
            else:
                confirm = await self._confirm(secure=True)
            if confirm is not None and confirm.kind == "line":
                text = f"no greeting within {exc.cap:.1f} s in plaintext"
                return self._mismatch(
                    FailureClass.PLAINTEXT_ON_TLS_PORT, text, confirm, in_tls=True
                )
        return Failure(
            FailureClass.SLOW_GREETING,
            f"the server accepted the connection but sent no greeting within {exc.cap:.1f} s"
            + ("" if imap.secure else " (and none over TLS either)"),
            "the server is overloaded or this port is not IMAP; Rocket.Chat gives up 5 s "
            f"after connecting: check imap.server and imap.port ({imap.port})",
            "imap.port",
        )

    def _mismatch(
        self, failure: FailureClass, text: str, confirm: _Greeting | None, *, in_tls: bool
    ) -> Failure:
        """A TLS-mode mismatch, confirmed (or not) by a greeting in the other mode."""
        imap = self.imap
        mode = "implicit-tls" if in_tls else "plaintext"
        if confirm is not None and confirm.ok:
            self.facts["confirmed_mode"] = mode
            shown = _show_greeting(confirm, imap.password)
            if in_tls:
                hint = f"port {imap.port} speaks TLS from the first byte: set imap.secure: true"
            else:
                hint = (
                    f"port {imap.port} speaks plaintext: set imap.secure: false "
                    "(or better use 993 with secure: true)"
                )
            how = "over TLS" if in_tls else "in plaintext"
            return Failure(failure, f"{text}; {how} it greets with '{shown}'", hint, "imap.secure")
        if confirm is not None and confirm.kind == "line":
            service = _service_of(confirm.data)
            if service is not None:
                self.facts["confirmed_mode"] = mode
                return _wrong_service(service, confirm, imap, how="over TLS" if in_tls else "")
        self.facts["confirmed_mode"] = None
        other = "TLS" if in_tls else "plaintext"
        if in_tls:
            hint = (
                f"port {imap.port} seems to expect TLS (a {other} retry was not answered); "
                "use imap.secure: true with port 993"
            )
        else:
            hint = (
                f"port {imap.port} does not speak TLS (a {other} retry was not answered); "
                "use port 993 with imap.secure: true"
            )
        return Failure(failure, text, hint, "imap.secure")

    # ---- classification helpers bound to this run

    def _timeout(self, exc: StepTimeout) -> Failure:
        return _timeout_failure(exc, self.imap)

    def _check_time(self, what: str, elapsed: float, limit: float) -> None:
        if elapsed > limit:
            self.rec.result.warn(_slow_finding(what, elapsed, limit))


class _BadGreeting(Exception):
    """The first line is not an IMAP greeting; classified after the step is recorded."""

    def __init__(self, greeting: _Greeting) -> None:
        super().__init__(greeting.kind)
        self.greeting = greeting


# --------------------------------------------------------------------------- classification
#
# Every failure class this probe reports is decided below, from types, tagged results
# (OK/NO/BAD) and bracketed response codes (RFC 3501 §7.1, RFC 5530), never from
# library exception text. Provider wording (Gmail, Microsoft 365) is _providers' job.


def _text(line: bytes | bytearray) -> str:
    return bytes(line).decode("utf-8", "replace")


def _response_code(text: str) -> str | None:
    """The bracketed response code at the start of a reply text, upper-cased."""
    match = _CODE.match(text)
    return match.group(1).upper() if match else None


def _capability_code(text: str) -> list[str] | None:
    """The list in a ``[CAPABILITY ...]`` response code (RFC 3501 §7.1), upper-cased."""
    match = _CAPABILITY_CODE.search(text)
    return match.group(1).upper().split() if match else None


def _capabilities_in(lines: Sequence[bytes], *, untagged_bare: bool = False) -> list[str] | None:
    """Capabilities from a command's reply lines: ``* CAPABILITY`` or ``[CAPABILITY ...]``.

    aioimaplib routes the untagged ``* CAPABILITY`` of a CAPABILITY command without its
    keyword (``untagged_bare``) and those of other commands with it.
    """
    texts = [_text(line) for line in lines]
    if untagged_bare and len(texts) > 1:
        return " ".join(texts[:-1]).upper().split()
    for text in texts:
        if text.upper().startswith("CAPABILITY "):
            return text.upper().split()[1:]
        found = _capability_code(text)
        if found is not None:
            return found
    return None


def _exists(lines: Sequence[bytes]) -> int | None:
    for line in lines:
        match = _EXISTS.match(bytes(line))
        if match:
            return int(match.group(1))
    return None


def _search_hits(lines: Sequence[bytes]) -> int:
    hits = 0
    for line in lines[:-1]:
        words = bytes(line).split()
        hits += sum(1 for word in words if word.isdigit())
    return hits


def _imap_date(day: dt.date) -> str:
    """RFC 3501 ``date`` as node-imap writes it: ``getDate()-Mon-getFullYear()``."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def _show_greeting(greeting: _Greeting, password: Secret) -> str:
    if greeting.kind == "tls-record":
        return f"<TLS record {greeting.data[:5].hex(' ')}>"
    if greeting.kind == "closed" and not greeting.data:
        return "<closed without a byte>"
    return scrub(_text(greeting.data), password)


def _service_of(line: bytes) -> str | None:
    """Name the protocol of a foreign greeting (probe-anchors.md §3 row 12)."""
    text = _text(line)
    if re.match(r"^(220|421|554)[ -]", text):
        return "an FTP server" if "FTP" in text.upper() else "an SMTP server"
    if text.startswith(("+OK", "-ERR")):
        return "a POP3 server"
    if text.startswith("HTTP/"):
        return "an HTTP server"
    if text.startswith("SSH-"):
        return "an SSH server"
    return None


def _wrong_service(service: str, greeting: _Greeting, imap: ImapSettings, *, how: str) -> Failure:
    shown = _show_greeting(greeting, imap.password)
    where = f"port {imap.port}" + (f" {how}" if how else "")
    return Failure(
        FailureClass.WRONG_SERVICE,
        f"{service} answers on {where}, not IMAP: '{shown}'",
        f"imap.port points at {service}; IMAP is usually 993 (TLS, imap.secure: true)",
        "imap.port",
    )


def _classify_greeting(greeting: _Greeting, imap: ImapSettings) -> Failure:
    """A first line (or its absence) that is not ``* OK``/``* PREAUTH``."""
    shown = _show_greeting(greeting, imap.password)
    if greeting.kind == "line" and _status(greeting.data) == "BYE":
        return _bye_at_greeting(shown, imap)
    if greeting.kind == "line":
        service = _service_of(greeting.data)
        if service is not None:
            return _wrong_service(service, greeting, imap, how="over TLS" if imap.secure else "")
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the server's first line is not an IMAP greeting: '{shown}'",
            f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
            "imap.port",
        )
    if greeting.kind == "too-long":
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the greeting exceeded {MAX_GREETING} bytes without a line end ('{shown}')",
            f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
            "imap.port",
        )
    if greeting.kind == "tls-record":
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            "the server sent another TLS record inside the TLS session",
            f"check imap.port ({imap.port})",
            "imap.port",
        )
    if greeting.data:
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the server closed the connection in the middle of its greeting ('{shown}')",
            f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
            "imap.port",
        )
    after = "right after the TLS handshake" if imap.secure else "at once"
    return Failure(
        FailureClass.RESET,
        f"the server closed the connection {after}, without a greeting",
        "the server refuses this client (access rules, connection limits) or this is not "
        f"an IMAP port; check imap.server and imap.port ({imap.port})",
        "imap.port",
    )


def _bye_at_greeting(shown: str, imap: ImapSettings) -> Failure:
    """``* BYE`` instead of a greeting (probe-anchors.md §3 row 11)."""
    text = shown.split(None, 2)[2] if len(shown.split(None, 2)) > 2 else ""
    code = _response_code(text)
    message = f"the server refused the connection at the greeting: '{shown}'"
    if code == "LIMIT" or _THROTTLE_TEXT.search(text):
        return Failure(
            FailureClass.THROTTLED,
            message,
            "too many connections from this address or account; retry later with back-off",
            "imap.server",
        )
    if code in _THROTTLE_CODES or re.search(r"try again|later|temporar", text, re.IGNORECASE):
        return Failure(
            FailureClass.TRANSIENT,
            message,
            "the server is temporarily unavailable; retry later",
            "imap.server",
        )
    return Failure(
        FailureClass.REJECTED_AT_GREETING,
        message,
        "the server does not accept connections from this runner (access rules or "
        f"maintenance); check imap.server ({imap.server}) with its administrator",
        "imap.server",
    )


def _login_disabled(imap: ImapSettings) -> Failure:
    if not imap.secure:
        return Failure(
            FailureClass.TLS_REQUIRED,
            "the server advertises LOGINDISABLED on this plaintext connection, so LOGIN "
            'was not sent (node-imap: "Logging in is disabled on this server")',
            "Rocket.Chat cannot use IMAP STARTTLS: use port 993 with imap.secure: true",
            "imap.secure",
        )
    return Failure(
        FailureClass.NO_COMMON_MECHANISM,
        "the server advertises LOGINDISABLED even over TLS, and Rocket.Chat only uses LOGIN",
        "enable password (LOGIN) authentication for IMAP on the server; Rocket.Chat has no "
        "OAuth2 or other SASL mechanism",
        "imap.server",
    )


def _unsendable_credentials() -> Failure:
    return Failure(
        FailureClass.NON_ASCII_CREDENTIALS,
        "the user name or password contains a line break or NUL, which an IMAP quoted "
        "string cannot carry (RFC 3501 §9); LOGIN was not sent",
        "remove the control character from imap.username / imap.password",
        "imap.password",
    )


def _login_failure(result: str, lines: Sequence[bytes], imap: ImapSettings) -> Failure:
    """A ``NO``/``BAD`` answer to LOGIN (probe-anchors.md §3 rows 22, 24-26, 28)."""
    texts = [scrub(_text(line), imap.password) for line in lines]
    tagged = texts[-1] if texts else ""
    reply = " / ".join(t for t in texts if t)
    message = f"LOGIN refused: {result} {reply}".rstrip()
    provider = provider_failure(protocol="imap", host=imap.server, reply=reply, message=message)
    if provider is not None:
        return provider
    code = _response_code(tagged)
    if code == "PRIVACYREQUIRED" or (result == "BAD" and "invalid state" in reply.lower()):
        # Exchange answers LOGIN-in-clear with "BAD Command received in Invalid state".
        return Failure(
            FailureClass.TLS_REQUIRED,
            message,
            "the server only accepts passwords over TLS, and Rocket.Chat never uses IMAP "
            "STARTTLS: use port 993 with imap.secure: true",
            "imap.secure",
        )
    if code in _THROTTLE_CODES or _THROTTLE_TEXT.search(reply):
        return Failure(
            FailureClass.THROTTLED,
            message,
            "the server is limiting logins for this account or address (not necessarily a "
            "wrong password); wait, then retry once",
            "imap.username",
        )
    non_ascii = not (imap.username.isascii() and imap.password.reveal().isascii())
    if result == "BAD" and not non_ascii:
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            message,
            "the server rejected the LOGIN command as malformed; check imap.username",
            "imap.username",
        )
    hint = (
        "check imap.username (full address or local part: servers differ) and "
        "imap.password; not retried, to avoid a lock-out"
    )
    if non_ascii:
        hint += (
            "; the credentials contain non-ASCII characters, sent as UTF-8 in a quoted "
            "string as node-imap does, which this server may not accept"
        )
    return Failure(FailureClass.AUTH_FAILED, message, hint, "imap.password")


def _select_failure(result: str, lines: Sequence[bytes], imap: ImapSettings) -> Failure:
    """``SELECT "INBOX"`` refused (probe-anchors.md §3 row 29)."""
    texts = [scrub(_text(line), imap.password) for line in lines]
    reply = " / ".join(t for t in texts if t)
    message = f"SELECT INBOX refused: {result} {reply}".rstrip()
    provider = provider_failure(protocol="imap", host=imap.server, reply=reply, message=message)
    if provider is not None and provider.cls is FailureClass.MAILBOX:
        return provider
    code = _response_code(texts[-1] if texts else "")
    if "not connected" in reply.lower():
        hint = (
            "the login works but the mailbox cannot be opened: IMAP is probably disabled "
            "for this user (Microsoft 365: 'User is authenticated but not connected')"
        )
    elif code == "NONEXISTENT":
        hint = "the account has no INBOX: create the mailbox or check imap.username"
    elif code == "NOPERM":
        hint = "the account may not open INBOX: grant it read-write access"
    else:
        hint = "the login works but INBOX cannot be opened for this account; check imap.username"
    return Failure(FailureClass.MAILBOX, message, hint, "imap.username")


def _read_only(reply: str) -> Failure:
    return Failure(
        FailureClass.MAILBOX_READ_ONLY,
        f"INBOX opened read-only: {reply}",
        "Rocket.Chat must set \\Seen on fetched mail, or it imports the same messages "
        "again; give imap.username read-write access to INBOX",
        "imap.username",
    )


def _search_failure(result: str, reply: str, since: str) -> Failure:
    return Failure(
        FailureClass.MAILBOX,
        f"SEARCH UNSEEN SINCE {since} refused: {result} {reply}".rstrip(),
        "Rocket.Chat finds new mail with exactly this search; the server must support "
        "SEARCH UNSEEN SINCE on INBOX",
        "imap.server",
    )


def _timeout_failure(exc: StepTimeout, imap: ImapSettings) -> Failure:
    """A step without an answer (probe-anchors.md §3 row 34): name the step and the cause."""
    step = exc.step.value
    if exc.deadline:
        return Failure(
            FailureClass.DEADLINE,
            f"the overall deadline ran out during the {step} step "
            f"({exc.cap:.1f} s were left for it)",
            "raise --timeout, or probe fewer inboxes at once",
            _STEP_FIELDS.get(exc.step),
        )
    if exc.step is Step.AUTH:
        message = (
            f"no answer to LOGIN within {exc.cap:.1f} s; Rocket.Chat would give up after "
            f'{RC_AUTH_TIMEOUT:g} s ("Timed out while authenticating with server")'
        )
        provider = provider_failure(
            protocol="imap", host=imap.server, reply="", message=message, timed_out=True
        )
        if provider is not None:
            return provider
        return Failure(
            FailureClass.TIMEOUT,
            message,
            "some servers stay silent instead of refusing credentials: check imap.username "
            "and imap.password, then the server's load",
            "imap.password",
        )
    what = {
        Step.TLS: "the TLS handshake",
        Step.CAPABILITIES: "CAPABILITY",
        Step.MAILBOX: "SELECT/SEARCH",
        Step.QUIT: "LOGOUT",
    }.get(exc.step, f"the {step} step")
    hint = (
        f"the port accepts connections but does not answer TLS; check imap.port ({imap.port}) "
        "and imap.secure"
        if exc.step is Step.TLS
        else "the server stopped answering; check its load and retry"
    )
    return Failure(
        FailureClass.TIMEOUT,
        f"no answer to {what} within {exc.cap:.1f} s",
        hint,
        _STEP_FIELDS.get(exc.step),
    )


_STEP_FIELDS: dict[Step, str] = {
    Step.TLS: "imap.port",
    Step.GREETING: "imap.port",
    Step.CAPABILITIES: "imap.server",
    Step.AUTH: "imap.password",
    Step.MAILBOX: "imap.server",
    Step.QUIT: "imap.server",
}


def _closed_failure(
    step: Step, imap: ImapSettings, *, lines: Sequence[bytes], error: BaseException | None
) -> Failure:
    """The server closed the connection (or sent what we cannot parse) mid-command.

    Args:
        step: the step whose command was pending.
        imap: the settings (for the password to scrub and the provider).
        lines: untagged lines received for the command before the close (a ``BYE``).
        error: the parser error that made us close, if that is what happened.
    """
    if error is not None:
        detail = scrub(f"{type(error).__name__}: {error}", imap.password)
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the server's reply to {_COMMAND_OF[step]} could not be parsed ({detail})",
            f"this does not look like an IMAP server; check imap.port ({imap.port})",
            "imap.port",
        )
    texts = [scrub(_text(line), imap.password) for line in lines]
    bye = " / ".join(t for t in texts if t)
    said = f": {bye}" if bye else " without a word"
    message = f"the server closed the connection in answer to {_COMMAND_OF[step]}{said}"
    if step is Step.AUTH:
        if _THROTTLE_TEXT.search(bye) or _response_code(bye.removeprefix("BYE ")) == "LIMIT":
            return Failure(
                FailureClass.THROTTLED,
                message,
                "too many connections for this account or address; Rocket.Chat opens one per "
                "instance and inbox: close other clients or raise the server's limit",
                "imap.username",
            )
        provider = provider_failure(
            protocol="imap", host=imap.server, reply=bye, message=message, timed_out=True
        )
        if provider is not None:
            return provider
        return Failure(
            FailureClass.RESET,
            message,
            "servers hang up like this on refused credentials or when IMAP is disabled for "
            "the account: check imap.username and imap.password, and the server's log",
            "imap.password",
        )
    field = "imap.username" if step is Step.MAILBOX else "imap.server"
    return Failure(
        FailureClass.RESET,
        message,
        "the server ended the session; check its log for this account",
        field,
    )


_COMMAND_OF: dict[Step, str] = {
    Step.CAPABILITIES: "CAPABILITY",
    Step.AUTH: "LOGIN",
    Step.MAILBOX: "SELECT/SEARCH",
    Step.QUIT: "LOGOUT",
}


def _tls_hint(failure: FailureClass) -> str:
    if failure is FailureClass.TLS_PROTOCOL:
        return (
            "the server offers only old TLS versions or ciphers (Rocket.Chat's Node.js needs "
            "TLS 1.2 or later); upgrade the server's TLS configuration"
        )
    if failure is FailureClass.RESET:
        return (
            "the server closed the connection during the TLS handshake: it may not speak "
            "TLS on this port, or it refuses this client; check imap.port and imap.secure"
        )
    return "check the server's TLS configuration and imap.port"


# --------------------------------------------------------------------------- warnings


def _plaintext_finding(imap: ImapSettings) -> Finding:
    return Finding(
        code="plaintext-credentials",
        message=(
            f"imap.secure is false: Rocket.Chat sends the password for {imap.username} in "
            "clear text with LOGIN (node-imap never uses STARTTLS)"
        ),
        hint="use port 993 with imap.secure: true",
        field="imap.secure",
        strict_exit=ExitCode.TLS,
    )


def _slow_finding(what: str, elapsed: float, limit: float) -> Finding:
    if what == "connect":
        said = "Timed out while connecting to server"
        span = "connecting"
    else:
        said = "Timed out while authenticating with server"
        span = "from connecting to a successful LOGIN"
    return Finding(
        code="slower-than-rocketchat",
        message=(
            f"{span} took {elapsed:.1f} s; Rocket.Chat (node-imap) allows {limit:g} s and "
            f'would time out ("{said}")'
        ),
        hint="Rocket.Chat's IMAP time limits are fixed: make the server or the path to it faster",
        field="imap.server",
        strict_exit=ExitCode.TRANSIENT,
    )


def _cert_finding(
    imap: ImapSettings, reason: str, tls_facts: dict[str, Any], options: ProbeOptions
) -> Finding:
    cert = tls_facts.get("certificate") or {}
    summary = ", ".join(
        part
        for part in (
            f"subject {cert['subject']}" if cert.get("subject") else "",
            f"issuer {cert['issuer']}" if cert.get("issuer") else "",
            f"names {', '.join(cert['names'])}" if cert.get("names") else "",
            f"expires {cert['not_after'][:10]}" if cert.get("not_after") else "",
            f"sha256 {cert['sha256'][:16]}…" if cert.get("sha256") else "",
        )
        if part
    )
    extra = "" if options.ca_file is None else f" (with --ca-file {options.ca_file})"
    return Finding(
        code="imap-cert-unverified",
        message=f"{reason}{extra}" + (f"; certificate: {summary}" if summary else ""),
        hint=(
            "Rocket.Chat does not verify IMAP certificates, so this works but is insecure "
            "(anyone on the path could read the password): fix the certificate of "
            f"{imap.server}, or pass --ca-file if it comes from a private CA"
        ),
        field="imap.server",
        strict_exit=ExitCode.TLS,
    )
