"""The IMAP wire: our own socket under aioimaplib, the greeting read by us, and closing.

aioimaplib speaks the command protocol (tags, untagged routing, response collection);
the connection is our own socket from ``_net`` and the greeting is read here, so a
silent port, a TLS record and a foreign banner can be told apart (probe-anchors.md §3
rows 8-12).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aioimaplib

from provision import tls
from provision.probes._transport import open_tls, write_and_close

__all__ = [
    "CLOSE_GRACE",
    "MAX_GREETING",
    "Client",
    "Greeting",
    "GreetingProtocol",
    "ImapProtocol",
    "dial",
    "greeting_status",
    "open_layers",
    "open_transport",
    "read_greeting",
    "settle",
    "shutdown",
    "wait_closed",
]

# A greeting longer than this is not IMAP (RFC 3501 sets no limit; real ones are < 1 KiB).
MAX_GREETING = 8192
# Caps that keep a misbehaving server from filling memory or the CPU (the probe's whole
# conversation is a few KiB in some 30 lines; SEARCH UNSEEN (without ESEARCH) is its only reply
# that grows, ~8 bytes a hit): a reply line that never ends, everything received on one
# connection, and lines received on one connection.
MAX_PENDING = 1024 * 1024
MAX_RECEIVED = 2 * 1024 * 1024
MAX_LINES = 1_000
# How long to wait for a connection to close after our close or LOGOUT before aborting.
CLOSE_GRACE = 1.0
# First bytes of a TLS record (handshake 0x16 or alert 0x15, version major 3): a TLS
# server that got our silence or plaintext (probe-anchors.md §3 row 9).
_TLS_RECORD = (b"\x15\x03", b"\x16\x03")


@dataclass(frozen=True, slots=True)
class Greeting:
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
        return self.kind == "line" and greeting_status(self.data) in ("OK", "PREAUTH")

    @property
    def preauth(self) -> bool:
        return self.kind == "line" and greeting_status(self.data) == "PREAUTH"


def greeting_status(line: bytes) -> str:
    """``OK``/``PREAUTH``/``BYE``... of an untagged status line, else ``""``."""
    parts = line.split(None, 2)
    if len(parts) >= 2 and parts[0] == b"*":
        return parts[1].decode("ascii", "replace").upper()
    return ""


class GreetingBuffer:
    """Collects the first bytes of a connection until a greeting can be judged."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, chunk: bytes) -> tuple[Greeting | None, bytes]:
        """Add bytes; return the greeting once known, and the bytes after it."""
        self.data += chunk
        if bytes(self.data[:2]) in _TLS_RECORD:
            return Greeting("tls-record", bytes(self.data[:16])), b""
        end = self.data.find(b"\r\n")
        if end >= 0:
            return Greeting("line", bytes(self.data[:end])), bytes(self.data[end + 2 :])
        if len(self.data) > MAX_GREETING:
            return Greeting("too-long", bytes(self.data[:120])), b""
        return None, b""

    def closed(self) -> Greeting:
        return Greeting("closed", bytes(self.data))


class GreetingProtocol(asyncio.Protocol):
    """Reads a greeting and nothing else: the diagnostic connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.greeting: asyncio.Future[Greeting] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._buffer = GreetingBuffer()

    def data_received(self, data: bytes) -> None:
        if self.greeting.cancelled():
            return  # whoever waited for it was cancelled (a stop): nobody reads on
        if not self.greeting.done():
            greeting, _ = self._buffer.feed(data)
            if greeting is not None:
                self.greeting.set_result(greeting)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.greeting.done():
            self.greeting.set_result(self._buffer.closed())
        if not self.closed.done():
            self.closed.set_result(None)


class ImapProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, with the greeting read by us and its failures contained.

    aioimaplib treats any first line containing ``OK`` as a greeting (so ``+OK`` POP3
    passes), raises from ``data_received`` on input it cannot parse (asyncio then logs
    the error with the pending command, password included, in its repr), never fails
    pending commands when the connection drops, silently drops lines that are not IMAP
    responses (the command then waits for its cap, as if the server were silent), and
    copies its whole pending input once per line it parses, recursively (a chunk full of
    short lines costs memory quadratic in its size). Here the greeting is judged by
    :class:`GreetingBuffer`, aioimaplib is fed one complete line at a time within
    :data:`MAX_PENDING`, :data:`MAX_RECEIVED` and :data:`MAX_LINES`, a line that is
    neither tagged, untagged nor a continuation is a parse error, parser errors close
    the connection and are kept in ``error``, and ``closed`` lets callers stop waiting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, None)
        self.greeting: asyncio.Future[Greeting] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.buffer = GreetingBuffer()
        self._pending = bytearray()
        self._received = 0
        self._lines = 0

    def data_received(self, data: bytes) -> None:
        if self.greeting.cancelled():
            return  # whoever waited for it was cancelled (a stop): nobody reads on
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


class Client(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib's client on a socket we already connected (``_net``).

    ``create_client`` is overridden so the connection is our socket, with TLS (if any)
    started without SNI: ``server_hostname=""`` makes asyncio pass no name to OpenSSL,
    as node-imap 0.8.19 does when Rocket.Chat's ``tlsOptions`` carry no ``servername``
    (spec §3.2).
    """

    def __init__(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        self._sock = sock
        #: The TCP transport under ``protocol.transport`` (the same one in plaintext).
        self.tcp: asyncio.Transport | None = None
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
        self.protocol = ImapProtocol(running)
        self._client_task = running.create_task(
            open_layers(self._sock, self.protocol, ssl_context, "" if ssl_context else None)
        )

    async def connected(self) -> None:
        """Wait until the connection (and TLS handshake) is up; raise its error if not."""
        self.tcp, _ = await self._client_task

    def write_and_close(self, line: str) -> bool:
        """Send a last command line and close at once; ``False`` if the connection was gone.

        The answer (LOGOUT's BYE and OK) and the peer's close_notify are not awaited
        (:func:`~provision.probes._transport.write_and_close`).
        """
        top: asyncio.Transport | None = self.protocol.transport
        if self.tcp is None or top is None or top.is_closing() or self.protocol.closed.done():
            return False
        write_and_close(self.tcp, top, f"{line}\r\n".encode())
        return True


async def dial(family: int, sockaddr: Any) -> socket.socket:
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


async def open_transport(
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
        await settle(sock)
        raise


async def open_layers(
    sock: socket.socket,
    protocol: asyncio.Protocol,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.Transport, asyncio.Transport]:
    """The session's connection: ``(tcp, top)``, TLS on our own TCP transport if any.

    Like :func:`open_transport`, but the TCP transport stays in hand for
    :meth:`Client.write_and_close`; the socket is closed if it fails.
    """
    if ssl_context is None:
        tcp, _ = await open_transport(sock, lambda: protocol, None, None)
        return tcp, tcp
    try:
        return await open_tls(sock, protocol, ssl_context, server_hostname=server_hostname)
    except BaseException:
        await settle(sock)
        raise


async def settle(sock: socket.socket) -> None:
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


async def shutdown(transport: asyncio.Transport, closed: asyncio.Future[None]) -> None:
    """Close a transport and wait (briefly) until it is gone; abort if the peer stalls.

    A TLS close waits for the peer's close_notify; a peer that never sends it would hold
    us for asyncio's 30 s shutdown timeout, so after :data:`CLOSE_GRACE` we abort.
    """
    if closed.done():
        return
    transport.close()
    if await wait_closed(closed):
        return
    transport.abort()
    await wait_closed(closed)


async def wait_closed(closed: asyncio.Future[None]) -> bool:
    """Wait up to :data:`CLOSE_GRACE` for ``connection_lost``; ``True`` if it came."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_GRACE):
            await asyncio.shield(closed)
    return closed.done()


async def read_greeting(family: int, sockaddr: Any, *, secure: bool) -> Greeting:
    """Open a credential-free connection in one TLS mode and read only the greeting."""
    loop = asyncio.get_running_loop()
    sock = await dial(family, sockaddr)
    ctx = tls.imap_context() if secure else None
    transport, proto = await open_transport(
        sock, lambda: GreetingProtocol(loop), ctx, "" if ctx else None
    )
    assert isinstance(proto, GreetingProtocol)
    try:
        return await proto.greeting
    finally:
        await shutdown(transport, proto.closed)
