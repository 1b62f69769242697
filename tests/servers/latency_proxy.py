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
import collections
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Connection", "LatencyProxy", "ProxyThread"]

_T = TypeVar("_T")


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


class _Delayed:
    """Bytes (and an end, ``None``) written to ``target`` when each is due, in order.

    One timer per direction at a time, not a task and a queue per chunk: the proxy's
    own CPU competes with the client and the servers on the bench's 2 cores.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, done: Any) -> None:
        self._loop = loop
        self._items: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._done = done  # called once the end is delivered
        self.target: asyncio.Transport | None = None
        self.ended = False

    def push(self, due: float, data: bytes | None) -> None:
        self._items.append((due, data))
        self._arm()

    def attach(self, target: asyncio.Transport) -> None:
        self.target = target
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and self._items and self.target is not None:
            self._timer = self._loop.call_at(self._items[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self._loop.time()
        target = self.target
        assert target is not None
        while self._items and self._items[0][0] <= now:
            _due, data = self._items.popleft()
            if data is None:
                if not target.is_closing() and target.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        target.write_eof()
                self._items.clear()
                self.ended = True
                self._done()
                return
            if not target.is_closing():
                target.write(data)
        self._arm()


class _Link:
    """One proxied connection: the client's side, the upstream side, two delayed pipes."""

    def __init__(self, proxy: LatencyProxy, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.conn = Connection(opened=self.loop.time())
        self.client = client
        self.upstream: asyncio.Transport | None = None
        # Upstream opens after the modelled TCP handshake; client bytes wait for it.
        self.ready = self.conn.opened + 3 * proxy.delay
        self.to_upstream = _Delayed(self.loop, self._ended)
        self.to_client = _Delayed(self.loop, self._ended)
        self.to_client.attach(client)
        self.closed = self.loop.create_future()
        self._opening = self.loop.call_at(self.ready, self._open_upstream)

    def _open_upstream(self) -> None:
        self.proxy._tasks.add(task := self.loop.create_task(self._connect()))
        task.add_done_callback(self.proxy._tasks.discard)

    async def _connect(self) -> None:
        try:
            transport, _ = await self.loop.create_connection(
                lambda: _UpstreamSide(self), *self.proxy.upstream
            )
        except OSError:
            self.close()
            return
        self.upstream = transport
        self.to_upstream.attach(transport)

    def from_client(self, data: bytes | None) -> None:
        if self.to_upstream.ended:
            return
        self.conn.up(len(data) if data else 0)  # 0: the client closed its side
        due = max(self.loop.time() + self.proxy.delay, self.ready)
        self.to_upstream.push(due, data)

    def from_upstream(self, data: bytes | None) -> None:
        if self.to_client.ended:
            return
        self.conn.down(len(data) if data else 0)
        self.to_client.push(self.loop.time() + self.proxy.delay, data)

    def _ended(self) -> None:
        if self.to_upstream.ended and self.to_client.ended:
            self.close()

    def close(self) -> None:
        if self.closed.done():
            return
        self._opening.cancel()
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.close()
        self.conn.closed = self.loop.time()
        self.closed.set_result(None)


class _ClientSide(asyncio.Protocol):
    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self.link: _Link | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link = self.proxy._accepted(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        assert self.link is not None
        self.link.from_client(data)

    def eof_received(self) -> bool:
        assert self.link is not None
        self.link.from_client(None)
        return True  # half-closed: the server's answer may still come

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link is not None and not self.link.to_upstream.ended:
            self.link.from_client(None)  # a reset, or closed without a half-close


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, link: _Link) -> None:
        self.link = link

    def data_received(self, data: bytes) -> None:
        self.link.from_upstream(data)

    def eof_received(self) -> bool:
        self.link.from_upstream(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.link.to_client.ended:
            self.link.from_upstream(None)


@dataclass(eq=False)
class LatencyProxy:
    """One listener on 127.0.0.1 forwarding to ``upstream`` with ``delay`` each way."""

    upstream: tuple[str, int]
    delay: float
    port: int = 0
    connections: list[Connection] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _links: set[_Link] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ClientSide(self), "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)

    async def idle(self, timeout: float = 5.0) -> bool:
        """Wait until every connection has closed; ``False`` if some are still open."""
        if self._links:
            await asyncio.wait({link.closed for link in self._links}, timeout=timeout)
        return not self._links

    def _accepted(self, client: asyncio.Transport) -> _Link:
        link = _Link(self, client)
        self.connections.append(link.conn)
        self._links.add(link)
        link.closed.add_done_callback(lambda _f: self._links.discard(link))
        return link


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
