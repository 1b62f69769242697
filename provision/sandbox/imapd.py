"""An in-process IMAP server (pymap's in-memory backend) for tests and ``provision sandbox``.

One account, one listener on loopback, either implicit TLS (port 993 style) or plaintext
with optional STARTTLS. The recipe is STYLE.md §6 ("pymap fixture core"); pymap 0.36.7
is pinned because its API is alpha.

Two pymap behaviours shape this module:

* ``IMAPService.start()`` reads CLI arguments and cannot listen with ``ssl=``, so the
  listener is our own ``asyncio.start_server`` around ``IMAPServer``.
* pymap treats loopback peers as secure (``imap/state.py::do_greeting`` checks
  ``SocketInfo.from_localhost``) and then never advertises ``LOGINDISABLED``. With
  ``login_disabled=True`` each connection is described to pymap by a made-up, proxied
  :class:`~proxyprotocol.sock.SocketInfo` from a TEST-NET address (RFC 5737). It is
  metadata only: no packet goes anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ssl
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from proxyprotocol.reader import ProxyProtocolReader
from proxyprotocol.result import ProxyResultIPv4
from proxyprotocol.sock import SocketInfo
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import DictBackend
from pymap.concurrent import Subsystem
from pymap.config import IMAPConfig
from pymap.imap import IMAPServer
from pymap.imap.state import ConnectionState
from pymap.interfaces.login import LoginInterface
from pymap.parsing.command import Command
from pymap.parsing.response import CommandResponse
from pysasl import SASLAuth
from pysasl.hashing import BuiltinHash

__all__ = ["RunningServer", "start_imap_server"]

#: How long :meth:`RunningServer.close` waits for connections and the listener.
CLOSE_TIMEOUT = 2.0

# RFC 5737 documentation addresses: the "peer" pymap is told about for LOGINDISABLED.
_FAKE_PEER = (IPv4Address("192.0.2.10"), 49152)
_FAKE_LOCAL = (IPv4Address("192.0.2.1"), 143)


class _Args(argparse.Namespace):
    """pymap reads many optional CLI attributes; missing ones read as ``None``."""

    def __getattr__(self, name: str) -> Any:
        return None


@dataclass(eq=False)
class RunningServer:
    """A listening pymap server.

    Attributes:
        host: the address it listens on.
        port: the bound port (the one asked for, or the one the OS picked for 0).
        commands: IMAP command names received, in order, over all connections
            (``"LOGIN"``, ``"SELECT"``...); arguments are never recorded.
    """

    host: str
    port: int
    commands: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def close(self, *, grace: float = CLOSE_TIMEOUT) -> None:
        """Stop listening, end every connection and wait (time-limited) until all are gone.

        Args:
            grace: seconds to wait for connections, then again after cancelling the rest.
        """
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), grace)

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@functools.cache
def _sasl_mechanisms() -> SASLAuth:
    return SASLAuth.defaults()


class _Config(DictConfig):
    """pymap's in-memory backend config, with the SASL mechanisms looked up once.

    ``IMAPConfig.tls_auth`` builds ``SASLAuth.defaults()`` on every access, and that scans
    the entry points of every installed distribution (``importlib.metadata``): twice per
    connection, about 3 ms of CPU each, more than the TLS handshake. The mechanism
    objects hold no per-connection state, so one set serves every connection.
    """

    @property
    def tls_auth(self) -> SASLAuth:
        return _sasl_mechanisms()


class _RecordingState(ConnectionState):
    """pymap's connection state, noting each command's name (never its arguments)."""

    def __init__(self, login: LoginInterface, config: IMAPConfig, seen: list[str]) -> None:
        super().__init__(login, config)
        self._seen = seen

    async def do_command(self, cmd: Command) -> CommandResponse:
        self._seen.append(bytes(cmd.command).decode("ascii", "replace").upper())
        response: CommandResponse = await super().do_command(cmd)
        return response


class _RecordingServer(IMAPServer):
    """``IMAPServer`` whose connections use :class:`_RecordingState`."""

    __slots__ = ["_seen"]

    def __init__(self, login: LoginInterface, config: IMAPConfig, seen: list[str]) -> None:
        super().__init__(login, config)
        self._seen = seen

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: SocketInfo
    ) -> None:
        # Same body as IMAPServer.__call__ (pymap/imap/__init__.py), with our state class.
        from contextlib import AsyncExitStack, closing

        from pymap.context import connection_exit
        from pymap.imap import IMAPConnection

        conn = IMAPConnection(self.commands, self._config, reader, writer, sock_info)
        state = _RecordingState(self._login, self._config, self._seen)
        async with AsyncExitStack() as stack:
            connection_exit.set(stack)
            stack.enter_context(closing(conn))
            await conn.run(state)


async def start_imap_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    implicit_tls: bool,
    tls_context: ssl.SSLContext | None,
    user: str,
    password: str,
    starttls: bool = False,
    login_disabled: bool = False,
) -> RunningServer:
    """Start a pymap IMAP server with one account and an empty INBOX.

    Args:
        host: address to listen on.
        port: port to listen on; 0 lets the OS pick (read it from ``.port``).
        implicit_tls: TLS from the first byte (993 style); needs ``tls_context``.
        tls_context: server-side context with the certificate (also used for STARTTLS).
        user: the account's login name.
        password: the account's password.
        starttls: advertise and accept STARTTLS on a plaintext listener.
        login_disabled: advertise ``LOGINDISABLED`` and refuse LOGIN before STARTTLS
            (as Dovecot does by default on plaintext); implies ``starttls``, because a
            server that disables LOGIN offers STARTTLS (RFC 3501 §6.2.3).

    Returns:
        The running server; ``await server.close()`` when done.

    Raises:
        ValueError: implicit TLS without a context, or LOGINDISABLED on a TLS listener.
    """
    if implicit_tls and tls_context is None:
        raise ValueError("implicit_tls needs a tls_context")
    if implicit_tls and (starttls or login_disabled):
        raise ValueError("STARTTLS/LOGINDISABLED only make sense on a plaintext listener")
    # pymap's ``tls`` argument switches STARTTLS; it must not be passed again as an
    # override (``from_args`` already passes ``tls_enabled``: STYLE.md §6 gotchas).
    args = _Args(
        demo_data=False,
        demo_user=user,
        demo_password=password,
        tls=(starttls or login_disabled) and not implicit_tls,
    )
    backend, config = await DictBackend.init(
        args,
        ssl_context=tls_context,
        invalid_user_sleep=0.0,
        hash_context=BuiltinHash(hash_name="sha1", salt_len=0, rounds=1),
        # Hash in the event loop: pymap's default is a thread pool nobody shuts down.
        cpu_subsystem=Subsystem.for_asyncio(),
    )
    config.__class__ = _Config  # a subclass that only overrides ``tls_auth``
    running = RunningServer(host=host, port=port)
    imap_server = _RecordingServer(backend.login, config, running.commands)

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: SocketInfo
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        running._tasks.add(task)
        running._writers.add(writer)
        if login_disabled:
            sock_info = SocketInfo.get(
                writer, ProxyResultIPv4(_FAKE_PEER, _FAKE_LOCAL), unique_id=uuid.uuid4().bytes
            )
        try:
            # A client that already left (a credential-free check) has no socket, and
            # pymap's debug logging would fail on it.
            if writer.get_extra_info("socket") is not None:
                await imap_server(reader, writer, sock_info)
        except OSError:
            # The client left mid-session (ssl.SSLError is an OSError): nothing to report,
            # and a task ending in an error nobody reads is logged at garbage collection.
            pass
        finally:
            running._writers.discard(writer)
            running._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)

    callback = ProxyProtocolReader(config.proxy_protocol).get_callback(serve)
    server = await asyncio.start_server(
        callback, host, port, ssl=tls_context if implicit_tls else None
    )
    running._server = server
    running.port = server.sockets[0].getsockname()[1]
    return running
