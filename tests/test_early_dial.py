"""The first inbox's servers dialled before the event loop (``provision.probes._early``).

The command line dials once the file is valid and signals are handled; the probes take
the dials over. What is checked: the connect really comes before asyncio is imported
(in a child process, by the audit event of the first ``connect``), the probes use the
dialled sockets and report their steps from the dial's start, failures are classified
as without a dial, and a dial nobody took is closed.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.models import ImapSettings, Inbox, SmtpSettings
from provision.models import Secret as Password
from provision.probes import _early, _net
from provision.probes._ahead import open_ahead
from provision.probes.failure import ProbeFailed
from provision.results import FailureClass, Stage, Status, Step
from provision.sandbox.ca import SandboxCA
from tests.child import run_python_async
from tests.servers.listener import Listener
from tests.servers.mailhost import MailHost

#: Runs the CLI; stderr's last line says, as JSON, whether asyncio had been imported at
#: the run's first network step: the lookup of a name (``socket.getaddrinfo``) or the
#: connect to an address (``socket.connect``, raised by ``connect_ex`` too), and its port.
_CHILD = """
import json, os, runpy, sys
first = []
def hook(event, args):
    if not first and event == "socket.getaddrinfo":
        first.append({"event": "lookup", "asyncio": "asyncio" in sys.modules, "port": args[1]})
    if not first and event == "socket.connect":
        port = args[1][1]
        first.append({"event": "connect", "asyncio": "asyncio" in sys.modules, "port": port})
sys.addaudithook(hook)
def say():
    sys.stderr.write("\\n" + json.dumps(first) + "\\n")
    sys.stderr.flush()
end = os._exit
os._exit = lambda code: (say(), end(code))
sys.argv = ["provision", *sys.argv[1:]]
try:
    runpy.run_module("provision", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
say()
"""


#: ``python -c`` running the command line as its console script does.
_RUN_CLI = (
    "import runpy, sys; sys.argv[0] = 'provision'; "
    "runpy.run_module('provision', run_name='__main__')"
)


@pytest.fixture(autouse=True)
def _no_dials_left() -> Iterator[None]:
    yield
    _early.close_all()


def _inbox(host: str, smtp_port: int, imap_port: int) -> Inbox:
    login = {"username": "u@example.com", "password": Password("pw-early")}
    return Inbox(
        name="Early",
        email="u@example.com",
        smtp=SmtpSettings(server=host, port=smtp_port, secure=False, **login),
        imap=ImapSettings(server=host, port=imap_port, secure=True, **login),
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["address", "name"])
async def test_check_connects_before_asyncio_is_imported(
    tmp_path: Path, sandbox_ca: SandboxCA, ca_file: Path, host: str
) -> None:
    """An address is dialled at once; a name is looked up in a thread, begun as early
    (the connect follows the answer). Either way the report is the same as ever."""
    mail = await MailHost.start("early@example.com", "pw-e", sandbox_ca.server_context())
    login = {"server": host, "username": "early@example.com", "password": "pw-e"}
    inbox = {
        "name": "Early",
        "email": "early@example.com",
        "smtp": {**login, "port": mail.smtp.port, "secure": False},
        "imap": {**login, "port": mail.imap.port, "secure": True},
    }
    path = tmp_path / "inbox.json"
    path.write_text(json.dumps(inbox))
    try:
        args = ("check", "--json", "--ca-file", str(ca_file), str(path))
        code, out, err = await run_python_async(_CHILD, *args, cwd=tmp_path)
    finally:
        await mail.close()
    (first,) = json.loads(err.decode().strip().splitlines()[-1])
    assert first == {
        "event": "connect" if host == "127.0.0.1" else "lookup",
        "asyncio": False,
        "port": mail.smtp.port,  # the SMTP server, dialled first
    }
    report = json.loads(out)
    assert code == 0, report
    for stage in report["inboxes"][0]["stages"]:
        assert stage["status"] == "passed"
        steps = {s["step"]: s for s in stage["steps"]}
        assert steps["resolve"]["detail"].startswith(("127.0.0.1", "::1"))
        assert steps["connect"]["status"] == "passed"
        # The stage began with its dial: no step is longer than the stage.
        assert max(s["elapsed_ms"] for s in stage["steps"]) <= stage["elapsed_ms"]
    assert report["elapsed_ms"] >= max(s["elapsed_ms"] for s in report["inboxes"][0]["stages"])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["address", "name"])
async def test_the_probe_takes_the_dialled_socket_and_times_its_steps_from_the_dial(
    host: str,
) -> None:
    async with Listener() as server:
        port = server.port
        _early.dial_inbox(_inbox(host, port, _closed_port()), step_timeout=5)
        dial = _early._dials[(host, port)]  # what the probe is to take over
        loop = asyncio.get_running_loop()
        opening = open_ahead(Stage.SMTP, host, port, step_timeout=5, deadline=loop.time() + 10)
        sock = await opening.take()
        try:
            _reader, writer = await asyncio.wait_for(server.accepted.get(), 5)
            # One connection only: the dialled one, not a second connect of the probe.
            assert server.accepted.empty()
            assert sock.getsockname() == writer.get_extra_info("peername")[:2]
        finally:
            sock.close()
    steps = opening.rec.result.steps
    assert [(s.step, s.status) for s in steps] == [
        (Step.RESOLVE, Status.PASSED),
        (Step.CONNECT, Status.PASSED),
    ]
    # The resolve step is the lookup's own time (an address: none), the connect step the
    # handshake's as the dial's thread saw it end (on loopback, before the probe looked),
    # not the wait for the loop; node-imap's timer counts from the dial's connect.
    resolve, connect = steps
    assert dial.lookup_ended is not None
    assert resolve.elapsed_ms == pytest.approx((dial.lookup_ended - dial.started) * 1000)
    assert dial.connected_at is not None
    assert connect.elapsed_ms == pytest.approx((dial.connected_at - dial.connect_started) * 1000)
    assert opening.connect_started == [dial.connect_started_mono]
    assert _early.take(host, port) is None  # taken once


async def test_a_refused_dial_is_classified_as_without_one() -> None:
    port = _closed_port()
    _early.dial_inbox(_inbox("127.0.0.1", port, _closed_port()), step_timeout=5)
    loop = asyncio.get_running_loop()
    opening = open_ahead(Stage.SMTP, "127.0.0.1", port, step_timeout=5, deadline=loop.time() + 10)
    with pytest.raises(ProbeFailed) as failed:
        await opening.take()
    assert failed.value.failure.cls is FailureClass.PORT_CLOSED
    connect = opening.rec.result.steps[-1]
    assert (connect.step, connect.status, connect.address) == (
        Step.CONNECT,
        Status.FAILED,
        f"127.0.0.1:{port}",
    )


async def test_a_dial_nobody_took_is_closed_and_marks_its_inbox_begun() -> None:
    async with Listener() as smtp, Listener() as imap:
        inbox = _inbox("127.0.0.1", smtp.port, imap.port)
        _early.dial_inbox(inbox, step_timeout=5)
        assert _early.dialled(inbox)
        peers = [await asyncio.wait_for(s.accepted.get(), 5) for s in (smtp, imap)]
        _early.close_all()  # the command line's finally: the run ended before it probed
        for reader, _writer in peers:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # our side closed it
    assert not _early.dialled(inbox)
    assert _early.began() is None


async def test_an_unusable_ca_file_is_exit_2_and_the_dialled_servers_get_no_byte(
    tmp_path: Path,
) -> None:
    """The CA file is checked while the dial travels (its ``ssl`` import overlaps the
    handshake): a bad one ends the run as ever, before a byte is sent."""
    async with Listener() as smtp, Listener() as imap:
        login = {"server": "127.0.0.1", "username": "u", "password": "p"}
        inbox = {
            "name": "Early",
            "email": "early@example.com",
            "smtp": {**login, "port": smtp.port, "secure": False},
            "imap": {**login, "port": imap.port, "secure": True},
        }
        path = tmp_path / "inbox.json"
        path.write_text(json.dumps(inbox))
        not_pem = tmp_path / "ca.pem"
        not_pem.write_text("not a certificate\n")
        args = ("check", "--ca-file", str(not_pem), str(path))
        code, _out, err = await run_python_async(_RUN_CLI, *args, cwd=tmp_path)
        async with asyncio.timeout(60):
            for server in (smtp, imap):
                reader, _writer = await server.accepted.get()
                assert await reader.read() == b""  # closed without a byte
    assert code == 2
    assert f"error: {not_pem}: cannot use as a CA file" in err.decode()


async def test_an_error_connect_ex_returned_at_once_is_the_connect_steps_error() -> None:
    """``connect_ex`` can fail before any packet (no route: ``ENETUNREACH``, which
    loopback never gives); the dial keeps the number and the step raises it as
    ``sock_connect`` would have."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        with pytest.raises(OSError, match=os.strerror(errno.ENETUNREACH)) as failed:
            await _net._dialled(loop, sock, errno.ENETUNREACH)
    assert failed.value.errno == errno.ENETUNREACH
    assert failed.value.strerror == os.strerror(errno.ENETUNREACH)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["address", "name"])
async def test_dials_leave_no_descriptor_or_thread_behind(host: str) -> None:
    """Each dial has a thread (the lookup, then the watch of its connect) and a wake-up
    pipe; taken or closed, none of it outlives the dial."""
    fds = set(os.listdir("/proc/self/fd"))
    async with Listener() as smtp, Listener() as imap:
        _early.dial_inbox(_inbox(host, smtp.port, imap.port), step_timeout=5)
        loop = asyncio.get_running_loop()
        opening = open_ahead(Stage.SMTP, host, smtp.port, step_timeout=5, deadline=loop.time() + 10)
        (await opening.take()).close()
        _early.close_all()  # the IMAP dial, never taken
        for thread in threading.enumerate():
            if thread.name == "provision-dial":
                thread.join(5)
                assert not thread.is_alive()
    assert set(os.listdir("/proc/self/fd")) <= fds
