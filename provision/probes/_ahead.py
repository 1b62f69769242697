"""A stage's connection opened before the protocol modules have loaded.

A cold run imports aiosmtplib (with the ``email`` package), aioimaplib and the probes'
own modules, some 20 ms, before it could send a first packet. Resolving and connecting
need none of them, so :func:`open_ahead` starts both stages' resolve and connect steps
first, and :func:`load_protocols` imports those modules in a worker thread meanwhile:
the TCP handshake and the SMTP greeting travel while the modules load. On a network
with 40 ms round trips that takes the imports off the run's critical path; on loopback
it changes little.

The steps are recorded as ever, on the stage's own :class:`~.Recorder`: the session
takes it over with the socket (``Opening.rec``). A step's time is when the event loop
saw it end, at most a thread switch (5 ms) after the kernel did. When the command line
dialled the stage before the loop existed (``_early``), the opening takes that dial
over: its resolve and connect steps are timed from the dial, and end when the dial's
own thread saw them end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import socket
import sys
import threading
from dataclasses import dataclass, field

from provision.probes import _early, _net
from provision.probes._steps import Recorder
from provision.results import Stage

__all__ = ["Opening", "connected", "load_protocols", "open_ahead"]

#: What a probe of one inbox imports: the two stages, with aiosmtplib and aioimaplib, and
#: the IDNA codec, which ``ssl`` loads (4 ms) at the first TLS session with a host name.
PROTOCOL_MODULES = ("provision.probes.smtp", "provision.probes.imap", "encodings.idna")

_loaded: concurrent.futures.Future[None] | None = None
_loaded_lock = threading.Lock()


@dataclass(slots=True, eq=False)
class Opening:
    """One stage's resolve and connect, under way; the session takes the socket."""

    rec: Recorder
    task: asyncio.Task[socket.socket]
    #: Event-loop time the first connect attempt began (node-imap's connect timeout).
    connect_started: list[float] = field(default_factory=list)
    _taken: bool = False

    async def take(self) -> socket.socket:
        """The connected socket, now the caller's to close; raises what the steps raised
        (``ProbeFailed`` with the classified failure)."""
        self._taken = True
        return await self.task

    def discard(self) -> None:
        """End an opening nobody took (the probe was cancelled or never began): cancel it,
        and close its socket whenever it ends, without waiting here (a ``finally`` that
        awaits could itself be cancelled, and the socket leak)."""
        if self._taken:
            return
        self._taken = True
        self.task.cancel()  # a finished task ignores it
        self.task.add_done_callback(_close_unused)


def _close_unused(task: asyncio.Task[socket.socket]) -> None:
    if task.cancelled():
        return
    if task.exception() is None:  # retrieved either way: no "never retrieved" warning
        task.result().close()


def open_ahead(
    stage: Stage, host: str, port: int, *, step_timeout: float, deadline: float
) -> Opening:
    """Start ``stage``'s resolve and connect steps; they run while the modules load."""
    rec = Recorder(stage=stage, deadline=deadline, step_timeout=step_timeout)
    started: list[float] = []
    task = asyncio.ensure_future(_resolve_and_connect(rec, host, port, stage.value, started))
    return Opening(rec, task, started)


async def connected(
    opening: Opening | None, rec: Recorder, host: str, port: int, *, prefix: str
) -> tuple[socket.socket, float]:
    """A session's socket: its opening's, or resolved and connected now on ``rec``; and
    the event-loop time its connect began (node-imap's connect timeout counts from it)."""
    if opening is not None:
        return await opening.take(), opening.connect_started[0]
    started: list[float] = []
    return await _resolve_and_connect(rec, host, port, prefix, started), started[0]


async def _resolve_and_connect(
    rec: Recorder, host: str, port: int, prefix: str, started: list[float]
) -> socket.socket:
    dial = _early.take(host, port)  # begun by the command line before the loop, if at all
    try:
        addresses = await _net.resolve(rec, host, port, prefix=prefix, dial=dial)
        return await _net.connect(
            rec, addresses, host=host, port=port, prefix=prefix, dial=dial, started=started
        )
    finally:
        if dial is not None:
            dial.close()  # a dial the connect did not take (an error, another address)


async def load_protocols() -> None:
    """Import :data:`PROTOCOL_MODULES` in a worker thread, once per process.

    Their bytecode runs under the GIL, but the event loop mostly waits for the network
    meanwhile, so the two overlap. An import error is raised to every caller.
    """
    global _loaded
    if all(name in sys.modules for name in PROTOCOL_MODULES):
        return
    with _loaded_lock:
        if _loaded is None or (_loaded.done() and _loaded.exception() is not None):
            _loaded = concurrent.futures.Future()
            _loaded.set_running_or_notify_cancel()
            threading.Thread(
                target=_import_into, args=(_loaded,), name="provision-imports", daemon=True
            ).start()
        loaded = _loaded
    await asyncio.wrap_future(loaded)


def _import_into(future: concurrent.futures.Future[None]) -> None:
    try:
        for name in PROTOCOL_MODULES:
            importlib.import_module(name)
    except BaseException as exc:  # handed to every waiting probe
        future.set_exception(exc)
    else:
        future.set_result(None)
