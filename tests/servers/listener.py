"""A loopback TCP server that accepts and hands each connection over, saying nothing."""

from __future__ import annotations

import asyncio

__all__ = ["Listener"]

Accepted = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Listener:
    """``async with Listener() as server``: ``server.accepted`` yields each accepted
    connection's reader and writer; every one is closed at the end of the block."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Accepted] = asyncio.Queue()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
            await writer.wait_closed()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self.accepted.put((reader, writer))
