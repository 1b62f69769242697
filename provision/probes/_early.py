"""Connections dialled before the event loop exists.

A cold ``provision check`` spends some 20-40 ms importing asyncio, setting up its event
loop and its signal handling before a probe could call ``connect()``; through a 40 ms
round trip that is most of a round trip added to every run. Resolving a name and
starting a TCP handshake need none of it, so the command line, once the inbox file is
read and valid, dials the first inbox's two servers here (:func:`dial_inbox`) and the
handshakes travel while the rest starts up. The probes then take the dials over
(:func:`take`, in ``_ahead``), and record the steps with the times they really began.

This module imports neither asyncio nor any probe module: that is its point. A name is
resolved in a thread (``getaddrinfo`` blocks), as the event loop's resolver would;
an address literal needs no resolver. Only the first address is dialled; the probe tries
the others, if it must, as ever (``_net.connect``).

The event loop looks at a dialled socket only once it runs, tens of ms after the
handshake may have ended; so each dial's thread waits for the socket to become writable
(``select``) and notes when (:attr:`Dial.connected_at`): the connect step shows the
handshake's time, not the program's start-up.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provision.models import Inbox

__all__ = [
    "AddrInfo",
    "Dial",
    "address_family",
    "began",
    "close_all",
    "dial_inbox",
    "dialled",
    "take",
    "unique",
]

AddrInfo = tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]
GetAddrInfo = list[tuple[Any, Any, Any, Any, Any]]

_dials: dict[tuple[str, int], Dial] = {}
_lock = threading.Lock()
_began: list[float] = []  # perf_counter of this run's first dial, if any
_inboxes: list[object] = []  # the inboxes dialled (by identity)


class Dial:
    """One server's resolve and first connect, begun before the event loop.

    :meth:`answer` is ``getaddrinfo``'s answer (or its ``gaierror``) once :meth:`on_answer`
    says so; an address literal has none, its address is ``literal``. ``sock`` is the
    non-blocking socket whose connect to ``addresses[0]`` is in flight (``connect_errno``:
    what ``connect_ex`` said at once: 0, ``EINPROGRESS`` or the error).

    No ``concurrent.futures`` here: it imports ``logging``, which would then load before
    the dial instead of while the handshakes travel.
    """

    __slots__ = (
        "_answer",
        "_closed",
        "_error",
        "_thread",
        "_waiters",
        "_wake",
        "addresses",
        "answered",
        "connect_errno",
        "connect_started",
        "connect_started_mono",
        "connected_at",
        "host",
        "literal",
        "port",
        "sock",
        "started",
        "step_timeout",
    )

    def __init__(self, host: str, port: int, step_timeout: float) -> None:
        self.host = host
        self.port = port
        self.step_timeout = step_timeout  # how long the thread watches the connect
        self.started = time.perf_counter()  # the resolve step's start (StepResult times)
        self.answered = self.started  # perf_counter when the lookup answered (a literal: at once)
        self.literal: AddrInfo | None = None
        self._answer: GetAddrInfo | None = None
        self._error: BaseException | None = None
        self._waiters: list[Callable[[], None]] | None = []  # None once answered
        self.addresses: list[AddrInfo] = []
        self.sock: socket.socket | None = None
        self.connect_errno = 0
        self.connect_started = 0.0  # perf_counter: the connect step's start
        self.connect_started_mono = 0.0  # monotonic (event-loop time): node-imap's timer
        #: perf_counter when the socket was seen writable (connected, or failed), if it was.
        self.connected_at: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = os.pipe()  # a byte here ends the watch

    def on_answer(self, wake: Callable[[], None]) -> bool:
        """``False`` if the lookup has answered; else ``wake`` is called (from the
        resolving thread) when it does, and ``True`` is returned."""
        with _lock:
            if self._waiters is None:
                return False
            self._waiters.append(wake)
            return True

    @property
    def lookup_ended(self) -> float | None:
        """When the lookup answered (``perf_counter``); ``None`` while it has not."""
        with _lock:
            return self.answered if self._waiters is None else None

    def answer(self) -> GetAddrInfo:
        """The lookup's answer, once :meth:`on_answer` says it came; raises its error."""
        if self._error is not None:
            raise self._error
        assert self._answer is not None
        return self._answer

    def connecting_to(self, address: AddrInfo) -> socket.socket | None:
        """The dialled socket if it is connecting to ``address``; the caller owns it now
        (the thread has stopped watching it: :attr:`connected_at` is final)."""
        self._end_watch()
        with _lock:
            sock, self.sock = self.sock, None
        if sock is not None and self.addresses[:1] == [address]:
            return sock
        if sock is not None:
            sock.close()
        return None

    def close(self) -> None:
        with _lock:
            self._closed = True
        self._end_watch()
        with _lock:
            sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def _start(self) -> None:
        family = address_family(self.host)
        if family is not None:
            text = socket.inet_ntop(family, socket.inet_pton(family, self.host))  # canonical
            sockaddr = (text, self.port) if family == socket.AF_INET else (text, self.port, 0, 0)
            self.literal = (family, sockaddr)
            self._waiters = None  # answered: the address is the answer
            self._connect([self.literal])  # here: the SYN leaves before any thread runs
        self._thread = threading.Thread(target=self._run, name="provision-dial", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self.literal is None:
                self._resolve()
            self._watch()
        finally:
            with _lock:  # under the lock: _end_watch never writes to a closed pipe
                fds, self._wake = self._wake, None
            for fd in fds or ():
                os.close(fd)

    def _resolve(self) -> None:
        try:
            self._answer = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # the probe's resolve step classifies it
            self._error = exc
            self.answered = time.perf_counter()
        else:
            self.answered = time.perf_counter()
            self._connect(unique(self._answer))
        with _lock:
            waiters, self._waiters = self._waiters or [], None
        for wake in waiters:
            wake()

    def _watch(self) -> None:
        """Note when the connect in flight ends, until told to stop or the step cap."""
        with _lock:
            sock, wake = self.sock, self._wake
        if sock is None or wake is None or self.connect_errno not in IN_PROGRESS:
            return
        poller = select.poll()  # not select(): no limit on the descriptor's number
        poller.register(wake[0], select.POLLIN)
        poller.register(sock, select.POLLOUT)
        for fd, _events in poller.poll(self.step_timeout * 1000):
            if fd == sock.fileno():
                self.connected_at = time.perf_counter()

    def _end_watch(self) -> None:
        """Stop the thread's watch and wait for it: at once, unless it still resolves (a
        lookup cannot be cut short; a closed dial's thread then connects nothing)."""
        with _lock:
            thread, self._thread = self._thread, None
            if self._wake is not None:
                os.write(self._wake[1], b"x")
        if thread is not None and self._waiters is None:  # answered: watching, or done
            thread.join()

    def _connect(self, addresses: list[AddrInfo]) -> None:
        if not addresses:
            return
        family, sockaddr = addresses[0]
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            return  # the probe tries again and reports what its own attempt meets
        sock.setblocking(False)
        self.connect_started_mono = time.monotonic()
        self.connect_started = time.perf_counter()
        self.connect_errno = sock.connect_ex(sockaddr)
        with _lock:
            self.addresses = addresses
            if not self._closed:
                self.sock = sock
                return
        sock.close()  # the run ended while this thread resolved (close_all)


def address_family(host: str) -> socket.AddressFamily | None:
    """``AF_INET``/``AF_INET6`` for an address literal (``inet_pton``: no resolver, unlike
    ``getaddrinfo``); ``None`` for a name (a scoped IPv6 address included)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):  # ValueError: a NUL in the name
            continue
        return family
    return None


def unique(infos: GetAddrInfo) -> list[AddrInfo]:
    """Every address of a ``getaddrinfo`` answer, once each, in the resolver's order."""
    seen: list[AddrInfo] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        item: AddrInfo = (family, sockaddr)
        if item not in seen:
            seen.append(item)
    return seen


def dial_inbox(inbox: Inbox, *, step_timeout: float) -> None:
    """Dial ``inbox``'s SMTP and IMAP servers now (the command line, before its loop);
    ``step_timeout``: the probe's step cap, how long a connect is watched."""
    if not _began:
        _began.append(time.perf_counter())
    _inboxes.append(inbox)
    for server in (inbox.smtp, inbox.imap):
        key = (server.server, server.port)
        with _lock:
            if key in _dials:
                continue
            dial = _dials[key] = Dial(*key, step_timeout)
        dial._start()


def take(host: str, port: int) -> Dial | None:
    """The dial of ``host``/``port``, once; ``None`` if there is none."""
    with _lock:
        return _dials.pop((host, port), None)


def dialled(inbox: object) -> bool:
    """This inbox's servers were dialled: its probe had begun, whatever stopped it."""
    return any(item is inbox for item in _inboxes)


def began() -> float | None:
    """When this run's probing began: its first dial (``perf_counter``), if it had one."""
    return _began[0] if _began else None


def close_all() -> None:
    """End the run's dials: close those no probe took (the run ended or stopped before
    it probed)."""
    with _lock:
        left = list(_dials.values())
        _dials.clear()
        _began.clear()
        _inboxes.clear()
    for dial in left:
        dial.close()


#: What ``connect_ex`` says of a connect that is under way (or done at once): no error.
IN_PROGRESS = frozenset({0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
