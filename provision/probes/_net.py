"""Resolve and connect, shared by the SMTP and IMAP probes.

The name is resolved explicitly so that every address is known and reported, and
each address is tried in turn (Python 3.11's ``create_connection`` would flatten
several failures into one ``OSError``); see probe-anchors.md §3 rows 1-6.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket

from provision.probes._early import (
    IN_PROGRESS,
    AddrInfo,
    Dial,
    GetAddrInfo,
    address_family,
    unique,
)
from provision.probes._shared import shared
from provision.probes._steps import Recorder, StepTimeout
from provision.probes.failure import ProbeFailed
from provision.results import Failure, FailureClass, Step

__all__ = ["AddrInfo", "connect", "format_address", "resolve"]


_ROUTE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EACCES, errno.EPERM}
)


def format_address(sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(
    rec: Recorder, host: str, port: int, *, prefix: str, dial: Dial | None = None
) -> list[AddrInfo]:
    """Resolve ``host`` to every address, recorded as the ``resolve`` step (begun at the
    ``dial``'s start when the command line began it before the event loop).

    Raises:
        ProbeFailed: the name does not resolve (class by ``gaierror`` code).
    """
    try:
        async with rec.step(Step.RESOLVE, since=dial.started if dial else None) as info:
            try:
                seen = await _addresses(host, port, dial)
            finally:
                if dial is not None:  # the lookup's own time, not the loop's start-up
                    info.ended = dial.lookup_ended
            info.detail = ", ".join(str(a[1][0]) for a in seen)
    except socket.gaierror as exc:
        raise ProbeFailed(_dns_failure(exc, host, prefix)) from None
    except StepTimeout as exc:
        if exc.deadline:
            failure = Failure(
                FailureClass.DEADLINE,
                f"the overall deadline ran out while resolving {host}",
                "raise the overall --timeout, or probe fewer inboxes at once",
                f"{prefix}.server",
            )
        else:
            failure = Failure(
                FailureClass.DNS_TEMPORARY,
                f"resolving {host} did not finish within {exc.cap:.1f} s",
                "the runner's DNS resolver is slow or unreachable; retry, or check its DNS setup",
                f"{prefix}.server",
            )
        raise ProbeFailed(failure) from None
    return seen


async def _addresses(host: str, port: int, dial: Dial | None) -> list[AddrInfo]:
    """Every address of ``host``, once each, in the resolver's order.

    An address needs no resolver and no thread; a name is looked up once per run (its
    dial's lookup, when the command line began one, is that lookup).
    """
    if dial is not None and dial.literal is not None:
        return [dial.literal]
    family = address_family(host)
    if family is not None:
        # A literal needs no resolver and no thread; not even getaddrinfo, whose IDNA
        # encoding of the host costs a cold run 4 ms of codec import before its connect.
        await asyncio.sleep(0)  # one turn of the loop: a step begun past the deadline ends
        text = socket.inet_ntop(family, socket.inet_pton(family, host))  # canonical form
        literal: tuple[str, int] | tuple[str, int, int, int] = (
            (text, port) if family == socket.AF_INET else (text, port, 0, 0)
        )
        return [(family, literal)]
    if dial is not None:
        infos = await shared(("resolve", host, port), lambda: _answer(dial))
    else:
        loop = asyncio.get_running_loop()
        infos = await shared(
            ("resolve", host, port), lambda: loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        )
    return unique(infos)


async def _answer(dial: Dial) -> GetAddrInfo:
    """The dial's lookup, begun in its thread before the loop: waited for here."""
    loop = asyncio.get_running_loop()
    answered = loop.create_future()

    def settle() -> None:
        if not answered.done():
            answered.set_result(None)

    def wake() -> None:  # in the resolving thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle)

    if dial.on_answer(wake):
        await answered
    return dial.answer()


def _dns_failure(exc: socket.gaierror, host: str, prefix: str) -> Failure:
    code = exc.errno
    field = f"{prefix}.server"
    if code == socket.EAI_AGAIN:
        return Failure(
            FailureClass.DNS_TEMPORARY,
            f"temporary failure resolving {host} ({exc.strerror})",
            "the resolver did not answer; retry, or check the runner's DNS",
            field,
        )
    no_data = {getattr(socket, n) for n in ("EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)}
    if code in no_data:
        return Failure(
            FailureClass.DNS_NO_ADDRESS,
            f"{host} exists but has no address record ({exc.strerror})",
            f"give the mail server's host name in {field}, not the mail domain "
            "(which may only have MX records)",
            field,
        )
    return Failure(
        FailureClass.DNS_NOT_FOUND,
        f"{host} does not resolve ({exc.strerror})",
        f"check the spelling of {field}; internal names need the runner's internal DNS",
        field,
    )


async def connect(
    rec: Recorder,
    addresses: list[AddrInfo],
    *,
    host: str,
    port: int,
    prefix: str,
    dial: Dial | None = None,
    started: list[float] | None = None,
) -> socket.socket:
    """Connect to the first address that accepts, trying each in turn.

    Every attempt is one ``connect`` step with its address; the first one continues the
    ``dial``'s connect, when the command line began it before the event loop. The
    event-loop time the first attempt began is appended to ``started`` (node-imap's
    connect timer counts from it). The returned socket is non-blocking with
    ``TCP_NODELAY`` (our writes are whole commands; Nagle plus the peer's delayed ACK
    would stall small writes).

    Raises:
        ProbeFailed: no address accepted; classified by the most telling error.
    """
    loop = asyncio.get_running_loop()
    errors: list[tuple[str, BaseException]] = []
    for index, (family, sockaddr) in enumerate(addresses):
        # The first attempt continues the dial's connect, if the dial is to this address.
        dialled = dial.connecting_to((family, sockaddr)) if dial and not index else None
        taken = dial if dialled is not None else None
        sock = dialled if dialled is not None else socket.socket(family, socket.SOCK_STREAM)
        if started is not None and not index:
            started.append(taken.connect_started_mono if taken else loop.time())
        sock.setblocking(False)
        addr = format_address(sockaddr)
        since = taken.connect_started if taken else None
        try:
            async with rec.step(Step.CONNECT, address=addr, since=since) as info:
                try:
                    if taken is None:
                        await loop.sock_connect(sock, sockaddr)
                    else:
                        # The dial's thread saw the handshake end, if it ended before the loop
                        # ran: that is the step's end, not the loop's first look.
                        info.ended = taken.connected_at
                        await _dialled(loop, sock, taken.connect_errno)
                except OSError as exc:
                    info.detail = exc.strerror or str(exc)
                    raise
        except (OSError, StepTimeout) as exc:
            sock.close()
            errors.append((addr, exc))
            continue
        except BaseException:  # cancelled (a stop, a probe ended from outside): no leak
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise ProbeFailed(_connect_failure(errors, host=host, port=port, prefix=prefix))


async def _dialled(loop: asyncio.AbstractEventLoop, sock: socket.socket, said: int) -> None:
    """The end of a connect begun before the loop: ``said`` is what ``connect_ex``
    returned then (0 or ``EINPROGRESS``: under way; anything else: that error)."""
    if said not in IN_PROGRESS:
        raise OSError(said, os.strerror(said))
    writable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not writable.done():
            writable.set_result(None)

    fd = sock.fileno()
    loop.add_writer(fd, ready)
    try:
        await writable
    finally:
        loop.remove_writer(fd)
    said = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if said:
        raise OSError(said, os.strerror(said))


def _connect_failure(
    errors: list[tuple[str, BaseException]], *, host: str, port: int, prefix: str
) -> Failure:
    tried = ", ".join(addr for addr, _ in errors)
    refused = [a for a, e in errors if isinstance(e, ConnectionRefusedError)]
    timeouts = [a for a, e in errors if isinstance(e, StepTimeout)]
    if refused:
        return Failure(
            FailureClass.PORT_CLOSED,
            f"connection refused by {', '.join(refused)} (tried {tried})",
            f"nothing listens on {host}:{port}; check {prefix}.port "
            f"(usual: {'465 or 587' if prefix == 'smtp' else '993'})",
            f"{prefix}.port",
        )
    if timeouts:
        deadline = any(isinstance(e, StepTimeout) and e.deadline for _, e in errors)
        return Failure(
            FailureClass.DEADLINE if deadline else FailureClass.CONNECT_TIMEOUT,
            f"no answer to the connection attempt to {tried}",
            f"packets to {host}:{port} are dropped: a firewall or the provider's egress "
            "policy blocks this port (many clouds block outbound 25); "
            f"check {prefix}.server and {prefix}.port",
            f"{prefix}.port",
        )
    route = [a for a, e in errors if isinstance(e, OSError) and e.errno in _ROUTE_ERRNOS]
    detail = "; ".join(f"{a}: {getattr(e, 'strerror', None) or e}" for a, e in errors)
    if route:
        v6_only = all(a.startswith("[") for a in route) and len(route) < len(errors)
        hint = (
            "only the IPv6 addresses failed: the runner has no IPv6 route"
            if v6_only
            else f"no network route from this runner to {host}"
        )
        return Failure(
            FailureClass.ROUTE, f"cannot reach {host} ({detail})", hint, f"{prefix}.server"
        )
    return Failure(
        FailureClass.RESET,
        f"connecting to {host}:{port} failed ({detail})",
        f"check {prefix}.server and {prefix}.port",
        f"{prefix}.server",
    )
