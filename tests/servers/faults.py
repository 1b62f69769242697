"""Faults a scripted server can commit at any step, shared by the SMTP and IMAP servers.

A scripted server (``smtp_misbehaving``, ``imap_misbehaving``) answers each step with a
*reply*: plain bytes, or one of the faults below. :func:`perform` carries a reply out
on a connection and says whether the conversation goes on.

* :data:`SILENT`: say nothing until the server is closed (the client's cap decides).
* :data:`DROP`: close the connection (FIN).
* :data:`RESET`: abort the connection with a TCP RST (``SO_LINGER`` 0).
* :class:`Trickle`: send bytes a few at a time, yielding to the loop in between, so a
  reply reaches the client split at odd byte boundaries.
* :class:`Flood`: a line of ``size`` bytes (10 MB, say) or one that never ends,
  written with back-pressure, until the client hangs up.
* :class:`Await`: wait for the client's first bytes (a TLS ClientHello), then do
  something else: reset, answer garbage, go silent.
* :class:`Seq`: several of these in a row (``220`` to STARTTLS, then a reset).
* :class:`PerCall`: a different reply for the 1st, 2nd, ... time a command comes on
  one connection (EHLO before and after STARTTLS); the last one repeats.
* :class:`StartTls`: answer, then upgrade the connection to TLS (a working STARTTLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


class Sentinel:
    """A named fault without parameters."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Say nothing and keep the connection open until the server is closed.
SILENT: Final = Sentinel("SILENT")
#: Close the connection without a word (FIN).
DROP: Final = Sentinel("DROP")
#: Abort the connection with a TCP reset.
RESET: Final = Sentinel("RESET")

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Trickle:
    """``data`` in pieces of ``size`` bytes, each written on its own loop turn."""

    data: bytes
    size: int = 1


@dataclass(frozen=True)
class Flood:
    """``head`` then ``size`` filler bytes (``None``: never ending), then ``end``."""

    head: bytes
    size: int | None
    end: bytes = b"\r\n"
    fill: bytes = b"x"


@dataclass(frozen=True)
class Await:
    """Read what the client sent first (a ClientHello, say), then carry out ``then``."""

    then: Reply


@dataclass(frozen=True)
class Seq:
    """Several replies in a row."""

    parts: tuple[Reply, ...]

    def __init__(self, *parts: Reply) -> None:
        object.__setattr__(self, "parts", parts)


@dataclass(frozen=True)
class PerCall:
    """The reply to the n-th occurrence of a command on a connection (last repeats)."""

    replies: tuple[Reply, ...]

    def __init__(self, *replies: Reply) -> None:
        object.__setattr__(self, "replies", replies)

    def nth(self, index: int) -> Reply:
        return self.replies[min(index, len(self.replies) - 1)]


@dataclass(frozen=True)
class StartTls:
    """Send ``reply`` (``220 ...``), then turn the connection into TLS with ``context``."""

    reply: bytes
    context: ssl.SSLContext


Reply = bytes | Sentinel | Trickle | Flood | Await | Seq | StartTls


@dataclass
class Connection:
    """What :func:`perform` works on; ``writer`` changes after a STARTTLS upgrade."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    release: asyncio.Event


async def perform(reply: Reply, conn: Connection, render: Callable[[bytes], bytes]) -> bool:
    """Carry out ``reply``; ``False`` when the conversation is over.

    Args:
        reply: what to do.
        conn: the connection.
        render: fills placeholders into plain bytes (``{tag}``, ``{args}``).
    """
    writer = conn.writer
    if isinstance(reply, bytes):
        writer.write(render(reply))
        await writer.drain()
        return True
    if reply is SILENT:
        await conn.release.wait()
        return False
    if reply is DROP:
        return False
    if reply is RESET:
        reset(writer)
        return False
    if isinstance(reply, Seq):
        for part in reply.parts:
            if not await perform(part, conn, render):
                return False
        return True
    if isinstance(reply, Await):
        if not await conn.reader.read(_CHUNK):
            return False
        return await perform(reply.then, conn, render)
    if isinstance(reply, Trickle):
        data = render(reply.data)
        for start in range(0, len(data), reply.size):
            writer.write(data[start : start + reply.size])
            await writer.drain()
            await asyncio.sleep(0)
        return True
    if isinstance(reply, Flood):
        return await _flood(reply, conn)
    if isinstance(reply, StartTls):
        writer.write(reply.reply)
        await writer.drain()
        await writer.start_tls(reply.context)
        return True
    raise TypeError(f"not a reply: {reply!r}")


async def _flood(flood: Flood, conn: Connection) -> bool:
    writer = conn.writer
    chunk = flood.fill * (_CHUNK // len(flood.fill))
    writer.write(flood.head)
    sent = 0
    while flood.size is None or sent < flood.size:
        if conn.release.is_set() or writer.is_closing():
            return False
        part = chunk if flood.size is None else chunk[: flood.size - sent]
        writer.write(part)
        sent += len(part)
        await writer.drain()  # back-pressure: blocks while the client does not read
        await asyncio.sleep(0)
    writer.write(flood.end)
    await writer.drain()
    return True


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection so that the peer sees a TCP RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ScriptedServer:
    """Connection bookkeeping shared by the scripted SMTP and IMAP servers.

    Subclasses are dataclasses with the fields ``port``, ``connections``,
    ``_release``, ``_server``, ``_tasks`` and ``_writers``, and implement
    :meth:`_converse` (one whole conversation on one connection).
    """

    port: int
    connections: int
    _release: asyncio.Event
    _server: asyncio.Server | None
    _tasks: set[asyncio.Task[None]]
    _writers: set[asyncio.StreamWriter]

    async def listen(self, tls_context: ssl.SSLContext | None) -> None:
        """Listen on 127.0.0.1 (TLS from the first byte when ``tls_context`` is given)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Release silent connections, close everything, wait (at most 2 s)."""
        self._release.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._converse(reader, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            self._tasks.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
