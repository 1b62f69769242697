"""A latency-injecting TCP proxy on loopback that counts each connection's round trips.

Every chunk is forwarded ``delay`` seconds after it arrived, in both directions, so
a request and its answer cost one round trip of ``2 * delay``. The TCP handshake,
which the kernel completes at once on loopback, is modelled too: the upstream
connection is opened ``3 * delay`` after the accept, so the server's first bytes
reach the client two round trips after its ``connect()``, as on a real path.

A *round trip* here is a turn of the conversation: server bytes that follow client
bytes (or open the connection, like a greeting). A TLS 1.3 handshake is one turn,
a command and its reply another; bytes a side sends without waiting for the other
(the client's Finished and its EHLO, the server's session tickets and its reply)
fall in the same turn. Server bytes that arrive after the client has closed its side
(a reply to a QUIT or LOGOUT the client did not wait for) are no turn either: the
client paid nothing for them (``after_close`` counts them). The TCP handshake is not
a turn; :attr:`Connection.round_trips` adds it.

Shared by the tests that guard the probe's round trips and by ``bench/run.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Connection", "LatencyProxy", "ProxyThread"]

_T = TypeVar("_T")
_CHUNK = 65536


@dataclass(slots=True)
class Connection:
    """What one proxied connection carried."""

    turns: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    #: Server bytes that arrived after the client closed its side (never a turn).
    after_close: int = 0
    opened: float = 0.0
    closed: float | None = None
    client_closed: bool = False
    _last: str = ""

    @property
    def round_trips(self) -> int:
        """The turns plus the TCP handshake: what the client waited for."""
        return self.turns + 1

    def up(self, size: int) -> None:
        if not size:
            self.client_closed = True
            return
        self.bytes_up += size
        self._last = "up"

    def down(self, size: int) -> None:
        if not size:
            return
        if self.client_closed:
            self.after_close += size
            return
        self.bytes_down += size
        if self._last != "down":
            self.turns += 1
        self._last = "down"


@dataclass(eq=False)
class LatencyProxy:
    """One listener on 127.0.0.1 forwarding to ``upstream`` with ``delay`` each way."""

    upstream: tuple[str, int]
    delay: float
    port: int = 0
    connections: list[Connection] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _open: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(self._open, timeout=2)

    async def idle(self, timeout: float = 5.0) -> bool:
        """Wait until every connection has closed; ``False`` if some are still open."""
        if self._open:
            await asyncio.wait(set(self._open), timeout=timeout)
        return not self._open

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        loop = asyncio.get_running_loop()
        conn = Connection(opened=loop.time())
        self.connections.append(conn)
        # Upstream opens after the modelled TCP handshake; client bytes wait for it.
        ready = loop.time() + 3 * self.delay
        up_queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        down_queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        tasks: list[asyncio.Task[None]] = []
        u_writer: asyncio.StreamWriter | None = None
        try:
            tasks.append(asyncio.ensure_future(self._pump(c_reader, up_queue, conn.up, ready)))
            await asyncio.sleep(max(0.0, ready - loop.time()))
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
            tasks.append(asyncio.ensure_future(self._pump(u_reader, down_queue, conn.down, 0.0)))
            tasks.append(asyncio.ensure_future(self._deliver(up_queue, u_writer)))
            tasks.append(asyncio.ensure_future(self._deliver(down_queue, c_writer)))
            await asyncio.gather(*tasks[2:])
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (c_writer, u_writer):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(writer.wait_closed(), 1)
            conn.closed = loop.time()
            self._open.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        count: Any,
        not_before: float,
    ) -> None:
        """Read chunks and queue them with the time they are due on the other side."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await reader.read(_CHUNK)
            except OSError:
                data = b""
            due = max(loop.time() + self.delay, not_before)
            count(len(data))  # 0: this side closed
            if not data:
                await queue.put((due, None))
                return
            await queue.put((due, data))

    @staticmethod
    async def _deliver(
        queue: asyncio.Queue[tuple[float, bytes | None]], writer: asyncio.StreamWriter
    ) -> None:
        """Write each chunk when it is due; half-close (``write_eof``) at the end."""
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except OSError:
                return


class ProxyThread:
    """An event loop in a daemon thread that hosts the proxies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def proxy(self, upstream: tuple[str, int], delay: float) -> LatencyProxy:
        proxy = LatencyProxy(upstream, delay)
        self.run(proxy.start())
        return proxy

    def stop(self, *proxies: LatencyProxy) -> None:
        for proxy in proxies:
            self.run(proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
