"""TLS over a TCP transport of our own, and closing both after a last command at once.

Shared by the SMTP and IMAP sessions. ``create_connection(ssl=...)`` hides the TCP
transport under the TLS one, and the TLS transport's ``close()`` waits for the
peer's close_notify (up to its shutdown timeout). Opening TCP first and TLS on it
(``start_tls``, as STARTTLS does) keeps the TCP transport in hand, so that after
QUIT or LOGOUT :func:`write_and_close` can end the connection without that wait.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

__all__ = ["open_tls", "write_and_close"]


class _Paused(asyncio.Protocol):
    """Holds a new TCP transport unread until ``start_tls`` takes it over.

    A plaintext server's first bytes must reach the TLS layer (whose handshake then
    fails on them, as it would with ``create_connection(ssl=...)``), not be read here.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()


async def open_tls(
    sock: socket.socket,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None,
    handshake_timeout: float | None = None,
    shutdown_timeout: float | None = None,
) -> tuple[asyncio.Transport, asyncio.Transport]:
    """TCP on the connected ``sock``, then a TLS handshake on it: ``(tcp, tls)``.

    ``protocol`` gets ``connection_made(tls)`` once the handshake is done, as with
    ``create_connection(ssl=...)``. If the handshake fails, ``start_tls`` closes the
    TCP transport (and so the socket) and the error propagates.
    """
    loop = asyncio.get_running_loop()
    tcp, _ = await loop.create_connection(_Paused, sock=sock)
    tls = await loop.start_tls(
        tcp,
        protocol,
        context,
        server_hostname=server_hostname,
        ssl_handshake_timeout=handshake_timeout,
        ssl_shutdown_timeout=shutdown_timeout,
    )
    assert tls is not None  # None only for a transport already closing
    protocol.connection_made(tls)
    return tcp, tls


def write_and_close(tcp: asyncio.Transport, top: asyncio.Transport, data: bytes) -> None:
    """Write a last command and close at once, without waiting for any answer.

    ``top`` is ``tcp`` or the TLS transport on it. TLS writes ``data`` and its
    close_notify to TCP at once; TCP then flushes what it holds and sends its FIN
    after it, so the server reads the command before the end of the connection. The
    peer's close_notify is not awaited (RFC 8446 §6.1 does not require it). If the
    TLS layer still holds bytes (TCP applying back-pressure), its own graceful close
    goes on instead; the caller bounds the wait for the socket to close.
    """
    top.write(data)
    top.close()
    if tcp is not top and top.get_write_buffer_size() == 0:
        tcp.close()
