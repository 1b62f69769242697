"""A small HTTPS server on 127.0.0.1 that serves autoconfig files by path.

Real TLS (the test's trustme certificate) and real HTTP/1.1 over asyncio streams, one
request per connection. It records each request's path and Host header.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field


@dataclass(eq=False)
class RunningHttps:
    """A listening server: its port and the (path, host) of each request."""

    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_https(
    documents: Mapping[str, bytes], context: ssl.SSLContext
) -> AsyncIterator[RunningHttps]:
    """Serve ``documents`` (path -> body); any other path is 404."""
    running = RunningHttps(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            first, *headers = request.decode("latin-1").split("\r\n")
            path = first.split(" ")[1]
            host = next(
                (h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("host:")),
                "",
            )
            running.requests.append((path, host))
            body = documents.get(path)
            status = "200 OK" if body is not None else "404 Not Found"
            body = body if body is not None else b"not here"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    running.port = server.sockets[0].getsockname()[1]
    try:
        yield running
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)
