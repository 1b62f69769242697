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
import threading
from dataclasses import dataclass, field

from provision.probes import _early, _net
from provision.probes._steps import Recorder
from provision.results import Stage

__all__ = ["Opening", "connected", "load_protocols", "open_ahead"]

#: What each stage's probe imports, in the order the worker thread loads them: SMTP's
#: first (aiosmtplib with the ``email`` package), its path being the longer one (7 round
#: trips against IMAP's 5), so that it does not wait for IMAP's (aioimaplib); then the
#: IDNA codec, which ``ssl`` loads (4 ms) at the first TLS session with a host name (SMTP's
#: STARTTLS, a few round trips later), off the event loop.
PROTOCOL_MODULES: tuple[tuple[Stage | None, str], ...] = (
    (Stage.SMTP, "provision.probes.smtp"),
    (Stage.IMAP, "provision.probes.imap"),
    (None, "encodings.idna"),
)

_loaded: dict[str, concurrent.futures.Future[None]] = {}
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


async def load_protocols(stage: Stage) -> None:
    """Import ``stage``'s modules (:data:`PROTOCOL_MODULES`): all of them are loaded in
    one worker thread, once per process, in that order; this waits for the stage's own.

    Their bytecode runs under the GIL, but the event loop mostly waits for the network
    meanwhile, so the two overlap. An import error is raised to every caller.
    """
    name = next(module for owner, module in PROTOCOL_MODULES if owner is stage)
    with _loaded_lock:
        future = _loaded.get(name)
        if future is None or (future.done() and future.exception() is not None):
            futures: dict[str, concurrent.futures.Future[None]] = {
                module: concurrent.futures.Future() for _owner, module in PROTOCOL_MODULES
            }
            for each in futures.values():
                each.set_running_or_notify_cancel()
            _loaded.update(futures)
            threading.Thread(
                target=_import_into, args=(futures,), name="provision-imports", daemon=True
            ).start()
            future = futures[name]
    if not future.done():
        await asyncio.wrap_future(future)
    future.result()  # raises the import's error


def _import_into(futures: dict[str, concurrent.futures.Future[None]]) -> None:
    failed: BaseException | None = None
    for name, future in futures.items():
        if failed is None:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # handed to every waiting probe
                failed = exc
        if failed is None:
            future.set_result(None)
        else:
            future.set_exception(failed)
