"""One SMTP connection driven step by step, and nodemailer's three AUTH exchanges.

aiosmtplib's ``SMTP.connect`` folds the TLS handshake and the greeting into one call;
here the transport is made by hand so that each gets its own recorded step.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiosmtplib import SMTP, SMTPAuthenticationError, SMTPResponse, SMTPStatus
from aiosmtplib.protocol import SMTPProtocol

from provision.probes._transport import open_tls, write_and_close

__all__ = ["AUTHENTICATORS", "NODEMAILER_MECHANISMS", "Connection"]

#: SASL mechanisms nodemailer can use with a user name and password, in its order of
#: preference (``_actionEHLO`` fills ``_supportedAuth`` in this order, ``login()``
#: takes the first).
NODEMAILER_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

_HEAD_BYTES = 512  # first bytes kept to tell TLS, POP3, IMAP or HTTP from SMTP
_CLOSE_WAIT = 1.0  # seconds to wait for a connection to close before aborting it


class _TrackedSocket(socket.socket):
    """A socket that tells when it has been closed, by us or by its transport.

    Waiting for this rather than for the protocol's ``connection_lost`` also covers a
    failed STARTTLS handshake, after which asyncio closes the connection without
    telling the application protocol. Waiting at all is what keeps "unclosed
    transport" ResourceWarnings away: a TLS transport closes only after the peer's
    close_notify, possibly after ``asyncio.run`` has already returned.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.setblocking(False)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def close(self) -> None:
        super().close()
        if not self.closed.done():
            self.closed.set_result(None)


class _ProbeProtocol(SMTPProtocol):
    """aiosmtplib's protocol, also keeping the first bytes received for diagnosis."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.head = bytearray()

    def data_received(self, data: bytes) -> None:
        if len(self.head) < _HEAD_BYTES:
            self.head += data[: _HEAD_BYTES - len(self.head)]
        super().data_received(data)


class Connection:
    """One SMTP connection on a socket from :func:`_net.connect`, driven step by step.

    The transport is made by hand, then the ``SMTP`` client is attached for EHLO,
    STARTTLS, AUTH and QUIT. aiosmtplib's own
    timeouts are off (``None``): the :class:`Recorder` caps every step with the smaller
    of the step cap and the time left before the deadline. Only the TLS handshake
    timeouts are set, a second above the step cap, so that the step's cap decides.
    """

    def __init__(
        self, sock: socket.socket, *, server: str, ehlo_name: str, handshake_timeout: float
    ) -> None:
        self.sock = _TrackedSocket(sock)
        self.protocol = _ProbeProtocol(asyncio.get_running_loop())
        self.smtp = SMTP(hostname=server, local_hostname=ehlo_name, timeout=None, start_tls=False)
        self._server = server
        self._handshake_timeout = handshake_timeout
        self._transports: list[asyncio.Transport] = []

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The live TLS session, if the connection is encrypted."""
        transport = self.smtp.transport
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        return obj if isinstance(obj, ssl.SSLObject) else None

    async def wrap(self, context: ssl.SSLContext | None) -> None:
        """Make the transport: plaintext, or TLS from the first byte with ``context``.

        ``server_hostname`` is ``smtp.server`` as Node does; Python sends no SNI for an
        IP literal and then checks the IP address against the certificate.
        """
        loop = asyncio.get_running_loop()
        if context is None:
            transport, _ = await loop.create_connection(lambda: self.protocol, sock=self.sock)
            self._transports.append(transport)
        else:
            tcp, transport = await open_tls(
                self.sock,
                self.protocol,
                context,
                server_hostname=self._server,
                # Above the step cap, so that the step's own timeout decides.
                handshake_timeout=self._handshake_timeout,
                shutdown_timeout=self._handshake_timeout,
            )
            self._transports += [tcp, transport]
        self.smtp.protocol = self.protocol
        self.smtp.transport = transport
        self.smtp.loop = loop

    async def read_greeting(self) -> SMTPResponse:
        """Wait for the server's first reply (the step's cap bounds the wait)."""
        return await self.protocol.read_response(timeout=None)

    async def starttls(self, context: ssl.SSLContext) -> SMTPResponse:
        """Send STARTTLS and upgrade (RFC 3207); aiosmtplib then forgets the EHLO state."""
        reply = await self.smtp.starttls(
            server_hostname=self._server, tls_context=context, timeout=self._handshake_timeout
        )
        if isinstance(self.smtp.transport, asyncio.Transport):
            self._transports.append(self.smtp.transport)
        return reply

    async def quit_and_close(self, wait: float = _CLOSE_WAIT) -> bool:
        """Send QUIT and close at once, without reading the 221; ``True`` if QUIT was sent.

        The server reads QUIT before the end of the connection; neither its 221 nor
        its close_notify is awaited (:func:`write_and_close`).
        """
        top = self._transports[-1] if self._transports else None
        if top is None or top.is_closing() or self.sock.closed.done():
            await self.abort(wait)
            return False
        write_and_close(self._transports[0], top, b"QUIT\r\n")
        await self._closed_or_aborted(wait)
        return True

    async def abort(self, wait: float = _CLOSE_WAIT) -> None:
        """Abort the connection and wait until its socket is really closed."""
        if self.sock.closed.done():
            return
        if not self._transports:
            self.sock.close()
            return
        self._transports[-1].abort()
        await self._closed_or_aborted(wait)

    async def _closed_or_aborted(self, wait: float) -> None:
        """Wait for the socket to close; abort every layer if it takes longer."""
        if not await self._closed_within(wait):
            for transport in reversed(self._transports):
                transport.abort()
            await self._closed_within(wait)

    async def _closed_within(self, seconds: float) -> bool:
        done, _ = await asyncio.wait([self.sock.closed], timeout=seconds)
        return bool(done)


async def _auth_plain(smtp: SMTP, username: str, password: str) -> SMTPResponse:
    """``AUTH PLAIN base64("\\0user\\0pass")``, as nodemailer sends it."""
    return await smtp.auth_plain(username, password, timeout=None)


async def _auth_login(smtp: SMTP, username: str, password: str) -> SMTPResponse:
    """nodemailer's LOGIN: ``AUTH LOGIN`` alone, then user and password, each after a 334.

    aiosmtplib's ``auth_login`` puts the user name on the AUTH line (initial response);
    nodemailer does not, and a few servers treat the two forms differently.
    """
    reply = await smtp.execute_command(b"AUTH", b"LOGIN", timeout=None)
    for answer in (username, password):
        if reply.code != SMTPStatus.auth_continue:
            raise SMTPAuthenticationError(reply.code, reply.message)
        reply = await smtp.execute_command(base64.b64encode(answer.encode()), timeout=None)
    if reply.code != SMTPStatus.auth_successful:
        raise SMTPAuthenticationError(reply.code, reply.message)
    return reply


async def _auth_crammd5(smtp: SMTP, username: str, password: str) -> SMTPResponse:
    """``AUTH CRAM-MD5``: the HMAC-MD5 of the server's challenge, keyed by the password."""
    return await smtp.auth_crammd5(username, password, timeout=None)


AUTHENTICATORS: dict[str, Callable[[SMTP, str, str], Awaitable[SMTPResponse]]] = {
    "PLAIN": _auth_plain,
    "LOGIN": _auth_login,
    "CRAM-MD5": _auth_crammd5,
}
