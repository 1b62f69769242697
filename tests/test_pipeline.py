"""The batch pipeline: SMTP and IMAP of an inbox at once, a bound over a batch, one deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.commands.check import check
from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings, Source
from provision.results import ExitCode, FailureClass, Finding, Stage, Status
from provision.sandbox.ca import SandboxCA
from provision.sandbox.imapd import start_imap_server
from provision.sandbox.smtpd import start_smtp_server

USER = "agent@example.com"
PASSWORD = "pipeline-secret-7d1"


@dataclass
class Proxy:
    """A TCP relay in front of a real server that can hold connections back.

    ``gate`` is awaited before a new connection is relayed, so a test can make a
    server wait for something that only happens if the client works concurrently;
    ``open``/``peak`` count connections held at once.
    """

    target: int
    gate: Callable[[], asyncio.Future[None] | None] = lambda: None
    port: int = 0
    open: int = 0
    peak: int = 0
    total: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.total += 1
        self.peak = max(self.peak, self.open)
        self.connected.set()
        try:
            waiter = self.gate()
            if waiter is not None:
                await waiter
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.open -= 1
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.wait_for(self._server.wait_closed(), 2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _inbox(index: int, smtp_port: int, imap_port: int) -> Inbox:
    return Inbox(
        name=f"inbox {index}",
        email=f"inbox{index}@example.com",
        smtp=SmtpSettings(
            server="localhost",
            port=smtp_port,
            username=USER,
            password=Secret(PASSWORD),
            secure=False,
        ),
        imap=ImapSettings(
            server="localhost",
            port=imap_port,
            username=USER,
            password=Secret(PASSWORD),
            secure=False,
        ),
        source=Source(file="batch.yaml", index=index, line=1 + index * 10),
    )


@contextlib.asynccontextmanager
async def _servers(sandbox_ca: SandboxCA) -> AsyncIterator[tuple[int, int]]:
    smtp = await start_smtp_server(
        mode="starttls", tls_context=sandbox_ca.server_context(), users={USER: PASSWORD}
    )
    imap = await start_imap_server(
        implicit_tls=False, tls_context=None, user=USER, password=PASSWORD
    )
    try:
        yield smtp.port, imap.port
    finally:
        await smtp.close()
        await imap.close()


async def test_smtp_and_imap_of_one_inbox_run_concurrently(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    """Each server is held back until the other has a client: sequential probes would stall."""
    async with _servers(sandbox_ca) as (smtp_port, imap_port):
        smtp_proxy = Proxy(smtp_port)
        imap_proxy = Proxy(imap_port)
        smtp_proxy.gate = lambda: asyncio.ensure_future(imap_proxy.connected.wait())
        imap_proxy.gate = lambda: asyncio.ensure_future(smtp_proxy.connected.wait())
        await smtp_proxy.start()
        await imap_proxy.start()
        try:
            report = await check(
                [_inbox(0, smtp_proxy.port, imap_proxy.port)],
                ProbeOptions(ca_file=ca_file, step_timeout=2, timeout=10),
            )
        finally:
            await smtp_proxy.close()
            await imap_proxy.close()
    (inbox,) = report.inboxes
    assert [s.stage for s in inbox.stages] == [Stage.SMTP, Stage.IMAP]
    assert [s.failure for s in inbox.stages] == [None, None]
    assert report.exit_code is ExitCode.OK


async def test_a_batch_runs_concurrently(sandbox_ca: SandboxCA, ca_file: Path) -> None:
    """Six SMTP connections must be open at once before any is let through."""
    count = 6
    async with _servers(sandbox_ca) as (smtp_port, imap_port):
        everyone = asyncio.Event()
        proxy = Proxy(smtp_port)

        def gate() -> asyncio.Future[None]:
            if proxy.open >= count:
                everyone.set()
            return asyncio.ensure_future(everyone.wait())

        proxy.gate = gate
        await proxy.start()
        try:
            report = await check(
                [_inbox(i, proxy.port, imap_port) for i in range(count)],
                ProbeOptions(ca_file=ca_file, concurrency=count, step_timeout=3, timeout=15),
            )
        finally:
            await proxy.close()
    assert proxy.peak == count
    assert report.exit_code is ExitCode.OK, [i.stages for i in report.inboxes]


async def test_concurrency_bound_is_respected(sandbox_ca: SandboxCA, ca_file: Path) -> None:
    async with _servers(sandbox_ca) as (smtp_port, imap_port):
        proxy = await Proxy(smtp_port).start()
        try:
            report = await check(
                [_inbox(i, proxy.port, imap_port) for i in range(6)],
                ProbeOptions(ca_file=ca_file, concurrency=2, step_timeout=3, timeout=15),
            )
        finally:
            await proxy.close()
    assert proxy.total == 6
    assert proxy.peak <= 2
    assert report.ok


async def test_deadline_bounds_the_whole_run_and_every_inbox_gets_a_result() -> None:
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    inboxes = [_inbox(i, port, port) for i in range(20)]
    started = time.monotonic()
    try:
        report = await check(inboxes, ProbeOptions(step_timeout=30, timeout=0.5, concurrency=4))
    finally:
        hold.set()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 2)
    elapsed = time.monotonic() - started
    # The deadline is 0.5 s; the bound here only has to catch "waited for the step cap".
    assert elapsed < 5
    assert [i.name for i in report.inboxes] == [i.name for i in inboxes]
    for result in report.inboxes:
        assert [s.status for s in result.stages] == [Status.FAILED, Status.FAILED]
        assert {s.failure for s in result.stages} <= {FailureClass.DEADLINE}
    assert report.exit_code is ExitCode.TRANSIENT


async def test_first_failing_inbox_decides_the_exit_code(
    sandbox_ca: SandboxCA, ca_file: Path, unused_port: int
) -> None:
    async with _servers(sandbox_ca) as (smtp_port, imap_port):
        good = _inbox(0, smtp_port, imap_port)
        bad_imap_password = Inbox(
            name="wrong imap password",
            email="wrong@example.com",
            smtp=good.smtp,
            imap=ImapSettings(
                server="localhost",
                port=imap_port,
                username=USER,
                password=Secret("nope"),
                secure=False,
            ),
        )
        closed_smtp = _inbox(2, unused_port, imap_port)
        report = await check(
            [good, bad_imap_password, closed_smtp],
            ProbeOptions(ca_file=ca_file, step_timeout=3, timeout=15),
        )
    assert [i.status() for i in report.inboxes] == [
        Status.WARNING,  # plaintext IMAP: the password travels in clear
        Status.FAILED,
        Status.FAILED,
    ]
    assert report.inboxes[1].stages[1].failure is FailureClass.AUTH_FAILED
    assert report.inboxes[2].stages[0].failure is FailureClass.PORT_CLOSED
    assert report.exit_code is ExitCode.AUTH


async def test_input_warnings_are_attached_and_strict_fails_them(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    finding = Finding(code="low-max-retries", message="m", strict_exit=ExitCode.USAGE)
    async with _servers(sandbox_ca) as (smtp_port, imap_port):
        inbox = _inbox(0, smtp_port, imap_port)
        report = await check(
            [inbox], ProbeOptions(ca_file=ca_file, strict=True), input_warnings={0: [finding]}
        )
    assert report.inboxes[0].warnings == [finding]
    assert report.exit_code is ExitCode.USAGE


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
