"""A stage's connection opened ahead of its probe (``provision.probes._ahead``).

``probe_inbox`` opens both connections before the protocol modules load; whatever
happens next, an opened socket is either taken by its session or closed.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import warnings

import pytest

from provision.probes._ahead import load_protocols, open_ahead
from provision.probes.failure import ProbeFailed
from provision.results import FailureClass, Stage, Status, Step
from tests.child import run_python
from tests.servers.listener import Listener


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_opening_nobody_took_is_closed() -> None:
    deadline = asyncio.get_running_loop().time() + 10
    async with Listener() as server:
        opening = open_ahead(
            Stage.SMTP, "127.0.0.1", server.port, step_timeout=5, deadline=deadline
        )
        peer, _writer = await asyncio.wait_for(server.accepted.get(), 5)
        opening.discard()
        assert await asyncio.wait_for(peer.read(), 5) == b""  # our side closed it
    assert [s.step for s in opening.rec.result.steps] == [Step.RESOLVE, Step.CONNECT]


async def test_a_taken_socket_stays_open_and_the_steps_are_the_stages() -> None:
    deadline = asyncio.get_running_loop().time() + 10
    async with Listener() as server:
        opening = open_ahead(
            Stage.IMAP, "127.0.0.1", server.port, step_timeout=5, deadline=deadline
        )
        sock = await opening.take()
        opening.discard()  # the finally of probe_inbox: the session owns it now
        peer, _writer = await asyncio.wait_for(server.accepted.get(), 5)
        sock.send(b"still open\r\n")
        assert await asyncio.wait_for(peer.readline(), 5) == b"still open\r\n"
        sock.close()
    assert opening.rec.stage is Stage.IMAP
    assert opening.connect_started, "the connect attempt's start is kept for node-imap's cap"


async def test_a_refused_connect_is_the_stages_failure_and_discarding_it_is_quiet() -> None:
    deadline = asyncio.get_running_loop().time() + 10
    port = _closed_port()
    opening = open_ahead(Stage.SMTP, "127.0.0.1", port, step_timeout=5, deadline=deadline)
    with pytest.raises(ProbeFailed) as failed:
        await opening.take()
    assert failed.value.failure.cls is FailureClass.PORT_CLOSED
    assert opening.rec.result.steps[-1].status is Status.FAILED
    refused = open_ahead(Stage.SMTP, "127.0.0.1", port, step_timeout=5, deadline=deadline)
    refused.discard()  # nobody took it: its error is not raised to the discarder
    (outcome,) = await asyncio.gather(refused.task, return_exceptions=True)
    assert isinstance(outcome, (ProbeFailed, asyncio.CancelledError))


async def test_an_opening_discarded_before_it_ran_is_cancelled() -> None:
    deadline = asyncio.get_running_loop().time() + 10
    async with Listener() as server:
        opening = open_ahead(
            Stage.IMAP, "127.0.0.1", server.port, step_timeout=5, deadline=deadline
        )
        opening.discard()  # before its task had a turn of the loop
        await asyncio.gather(opening.task, return_exceptions=True)
        assert opening.task.cancelled()
    assert server.accepted.empty()


async def test_the_protocol_modules_load_once_for_every_caller() -> None:
    await asyncio.gather(load_protocols(Stage.SMTP), load_protocols(Stage.IMAP))
    assert {"provision.probes.smtp", "provision.probes.imap", "aiosmtplib", "aioimaplib"} <= set(
        sys.modules
    )


async def test_an_opening_cancelled_in_the_middle_of_its_connect_leaves_no_socket() -> None:
    """A listener whose accept queue is full drops the SYN: the connect stays pending
    until the opening is cancelled (a stop, an exporter's shutdown); its socket is
    closed then, not left to the garbage collector (``ResourceWarning``)."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        # Linux's queue for listen(0) holds one connection: the next SYN is dropped.
        queued = socket.create_connection(("127.0.0.1", port), timeout=2)
        try:
            deadline = asyncio.get_running_loop().time() + 10
            opening = open_ahead(Stage.SMTP, "127.0.0.1", port, step_timeout=5, deadline=deadline)
            for _ in range(20):  # loop turns (not time) until the connect is under way
                if opening.connect_started:
                    break
                await asyncio.sleep(0)
            assert opening.connect_started
            opening.discard()
            await asyncio.gather(opening.task, return_exceptions=True)
            assert opening.task.cancelled()
            with warnings.catch_warnings():
                warnings.simplefilter("error", ResourceWarning)
                gc.collect()  # a leaked socket would warn here
        finally:
            queued.close()


_SMTP_FIRST = """
import asyncio, sys, threading
gate = threading.Event()
class HoldImap:  # aioimaplib's import waits until the gate opens
    def find_spec(self, name, path=None, target=None):
        if name == "aioimaplib":
            gate.wait(30)
        return None
sys.meta_path.insert(0, HoldImap())
from provision.probes._ahead import load_protocols
from provision.results import Stage
async def main():
    await asyncio.wait_for(load_protocols(Stage.SMTP), 10)
    smtp_alone = "provision.probes.smtp" in sys.modules and "aioimaplib" not in sys.modules
    gate.set()
    await asyncio.wait_for(load_protocols(Stage.IMAP), 10)
    print(smtp_alone, "provision.probes.imap" in sys.modules)
asyncio.run(main())
"""


def test_the_smtp_stage_does_not_wait_for_the_imap_modules() -> None:
    """SMTP's path is the longer one: its modules load first, and it starts on them
    while aioimaplib still loads (held here until SMTP's are in)."""
    done = run_python(_SMTP_FIRST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
