"""Serving the double with uvicorn in the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from provision.sandbox.rocketchat.app import RocketChatDouble

__all__ = ["RunningRocketChat", "start_rocketchat"]


@dataclass(slots=True)
class RunningRocketChat:
    """A double served by uvicorn in this event loop.

    Attributes:
        url: base URL (``http://127.0.0.1:PORT``, or ``https://`` with TLS).
        app: the double: its state, settings and request log.
    """

    url: str
    app: RocketChatDouble
    _server: Any
    _task: asyncio.Task[None]
    _socket: socket.socket

    async def close(self, grace: float = 5.0) -> None:
        """Stop serving; after ``grace`` seconds, stop waiting for open requests."""
        self.app.shutdown()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._socket.close()

    async def __aenter__(self) -> RunningRocketChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_rocketchat(
    app: RocketChatDouble | None = None,
    *,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
) -> RunningRocketChat:
    """Serve a double on ``host`` with a port chosen by the OS.

    The socket is bound and listening before uvicorn starts, so the returned URL
    accepts connections at once (no readiness polling).

    Args:
        app: the double to serve (a fresh one when ``None``).
        host: address to bind (``127.0.0.1``, ``127.0.0.2``, ``::1``).
        ssl_context: serve HTTPS with this server context.

    Returns:
        The running server; call ``close()`` (or use ``async with``).
    """
    import uvicorn  # the sandbox extra; keep it off the import path of the client

    app = app if app is not None else RocketChatDouble()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Accepted sockets inherit this: without it uvicorn's separate header and body
        # writes meet the client's delayed ACK and every response takes ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, 0))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        log_config=None,  # leave the process's logging configuration alone
        ws="none",
        ssl_context_factory=(lambda _config, _default: ssl_context) if ssl_context else None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"rocketchat-double:{port}")
    scheme = "https" if ssl_context else "http"
    netloc = f"[{host}]" if ":" in host else host
    return RunningRocketChat(f"{scheme}://{netloc}:{port}", app, server, task, sock)
