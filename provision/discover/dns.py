"""DNS for discovery: RFC 6186 SRV records, MX records and host addresses (dnspython).

Every query is bounded by the step cap and by what is left of the deadline. A query's
outcome is data (:class:`Answer`): found, no such name, no such record, or an error;
:func:`offline` tells "nothing answered at all" apart, so that a machine without
network gets one message instead of one timeout per lookup.

Host addresses come from the system (``getaddrinfo``, as Rocket.Chat's Node.js and
``provision check`` resolve them) unless a name server is given with ``--nameserver``:
then every lookup goes to that server, addresses included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import dns.asyncresolver

__all__ = [
    "SRV_SERVICES",
    "Answer",
    "AnswerStatus",
    "MxRecord",
    "Nameserver",
    "Resolver",
    "SrvRecord",
    "offline",
    "parse_nameserver",
]

#: RFC 6186 §3.1 (IMAP) and RFC 8314 §5.1 (submissions) service labels, in the order
#: discovery prefers them: implicit TLS first (RFC 8314 §3).
SRV_SERVICES = ("_submissions._tcp", "_submission._tcp", "_imaps._tcp", "_imap._tcp")


class AnswerStatus(StrEnum):
    """How one DNS query ended."""

    FOUND = "found"
    NXDOMAIN = "nxdomain"  #: the name does not exist
    NO_DATA = "no-data"  #: the name exists, without records of this type
    TIMEOUT = "timeout"  #: no answer within the cap
    UNREACHABLE = "unreachable"  #: no name server could be asked (refused, no route)
    ERROR = "error"  #: a name server answered with an error (SERVFAIL, REFUSED...)


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV record (RFC 2782); ``target`` without the trailing dot."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record; ``exchange`` without the trailing dot."""

    preference: int
    exchange: str


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer(Generic[_T]):
    """The outcome of one query: the records found, or why there are none."""

    name: str
    rdtype: str
    status: AnswerStatus
    records: tuple[_T, ...] = ()
    message: str = ""

    @property
    def found(self) -> bool:
        """Records came back."""
        return self.status is AnswerStatus.FOUND


def _answer(name: str, rdtype: str, raw: _RawAnswer, records: tuple[_T, ...]) -> Answer[_T]:
    """The typed answer of a raw one: its status and message, these records."""
    return Answer(name=name, rdtype=rdtype, status=raw.status, records=records, message=raw.message)


@dataclass(frozen=True, slots=True)
class Nameserver:
    """A name server given with ``--nameserver IP[:PORT]``."""

    address: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def parse_nameserver(text: str) -> Nameserver:
    """Parse ``IP``, ``IP:PORT``, ``IPv6`` or ``[IPv6]:PORT``.

    Raises:
        ValueError: not an IP address, or a port outside 1-65535 (the message says which).
    """
    address, port_text = text.strip(), ""
    if address.startswith("["):
        address, _, rest = address[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    elif address.count(":") == 1:
        address, _, port_text = address.partition(":")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address (a name server is given by address)"
        ) from None
    port = 53
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return Nameserver(str(ip), port)


class Resolver:
    """Queries bounded by a per-query cap and an overall deadline (``time.monotonic``).

    Args:
        step_timeout: cap in seconds on one query (retries over UDP and the TCP
            fallback for truncated answers included).
        deadline: ``time.monotonic()`` value after which nothing is asked.
        nameserver: ask this server only; ``None`` uses the system's configuration.
    """

    def __init__(
        self, *, step_timeout: float, deadline: float, nameserver: Nameserver | None = None
    ) -> None:
        self.step_timeout = step_timeout
        self.deadline = deadline
        self.nameserver = nameserver
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._config_error: str | None = None

    def _get(self) -> dns.asyncresolver.Resolver | None:
        if self._resolver is None and self._config_error is None:
            import dns.asyncresolver
            import dns.resolver

            try:
                if self.nameserver is None:
                    self._resolver = dns.asyncresolver.Resolver()
                else:
                    self._resolver = dns.asyncresolver.Resolver(configure=False)
                    self._resolver.nameservers = [self.nameserver.address]
                    self._resolver.port = self.nameserver.port
            except dns.resolver.NoResolverConfiguration:
                self._config_error = "this machine has no DNS resolver configured"
        return self._resolver

    def _cap(self) -> float:
        return max(0.0, min(self.step_timeout, self.deadline - time.monotonic()))

    async def srv(self, name: str) -> Answer[SrvRecord]:
        """SRV records of ``name``, in RFC 2782 order (priority, then higher weight).

        A single record with target ``.`` means "service not offered" (RFC 2782): it
        is returned as no data.
        """
        answer = await self._query(name, "SRV")
        records = tuple(
            sorted(
                (
                    SrvRecord(r.priority, r.weight, r.port, r.target.to_text().rstrip("."))
                    for r in answer.records
                ),
                key=lambda s: (s.priority, -s.weight),
            )
        )
        if answer.found and all(not r.target for r in records):
            return Answer(
                name=name,
                rdtype="SRV",
                status=AnswerStatus.NO_DATA,
                message="the service is explicitly not offered (target '.')",
            )
        return _answer(name, "SRV", answer, tuple(r for r in records if r.target))

    async def mx(self, domain: str) -> Answer[MxRecord]:
        """MX records of ``domain``, lowest preference first."""
        answer = await self._query(domain, "MX")
        records = tuple(
            sorted(
                (MxRecord(r.preference, r.exchange.to_text().rstrip(".")) for r in answer.records),
                key=lambda m: m.preference,
            )
        )
        return _answer(domain, "MX", answer, tuple(r for r in records if r.exchange))

    async def addresses(self, host: str) -> Answer[str]:
        """IPv4 and IPv6 addresses of ``host`` (an IP literal is its own answer)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return Answer(name=host, rdtype="A", status=AnswerStatus.FOUND, records=(host,))
        if self.nameserver is None:
            return await self._system_addresses(host)
        v4, v6 = await asyncio.gather(self._query(host, "A"), self._query(host, "AAAA"))
        found = tuple(r.to_text() for r in v4.records + v6.records)
        if found:
            return Answer(name=host, rdtype="A", status=AnswerStatus.FOUND, records=found)
        # NXDOMAIN wins (the name is not there); otherwise the more telling failure.
        worst = min((v4, v6), key=lambda a: _SEVERITY.index(a.status))
        return Answer(name=host, rdtype="A", status=worst.status, message=worst.message)

    async def _system_addresses(self, host: str) -> Answer[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._cap()):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except TimeoutError:
            return Answer(
                name=host,
                rdtype="A",
                status=AnswerStatus.TIMEOUT,
                message=f"resolving {host} did not finish in time",
            )
        except socket.gaierror as exc:
            status = {
                socket.EAI_NONAME: AnswerStatus.NXDOMAIN,
                socket.EAI_AGAIN: AnswerStatus.TIMEOUT,
            }.get(exc.errno or 0, AnswerStatus.ERROR)
            return Answer(name=host, rdtype="A", status=status, message=str(exc.strerror))
        found: list[str] = []
        for *_, sockaddr in infos:
            if str(sockaddr[0]) not in found:
                found.append(str(sockaddr[0]))
        return Answer(name=host, rdtype="A", status=AnswerStatus.FOUND, records=tuple(found))

    async def _query(self, name: str, rdtype: str) -> _RawAnswer:
        resolver = self._get()
        if resolver is None:
            return _RawAnswer(AnswerStatus.UNREACHABLE, (), self._config_error or "")
        import dns.exception
        import dns.resolver

        cap = self._cap()
        if cap <= 0:
            return _RawAnswer(AnswerStatus.TIMEOUT, (), "the overall deadline ran out")
        try:
            # dnspython bounds each try by ``timeout`` and the whole query (retries,
            # TCP fallback on a truncated answer) by ``lifetime``; asyncio.timeout
            # is the backstop for a library that would not.
            async with asyncio.timeout(cap + 0.5):
                answer = await resolver.resolve(
                    name, rdtype, lifetime=cap, search=False, raise_on_no_answer=True
                )
        except dns.resolver.NXDOMAIN:
            return _RawAnswer(AnswerStatus.NXDOMAIN, (), f"{name} does not exist")
        except dns.resolver.NoAnswer:
            return _RawAnswer(AnswerStatus.NO_DATA, (), f"{name} has no {rdtype} record")
        except (dns.resolver.LifetimeTimeout, TimeoutError):
            return _RawAnswer(AnswerStatus.TIMEOUT, (), f"no answer within {cap:.1f} s")
        except dns.resolver.NoNameservers as exc:
            return _no_nameservers(exc, self.nameserver)
        except (dns.exception.DNSException, OSError) as exc:
            return _RawAnswer(AnswerStatus.ERROR, (), f"{type(exc).__name__}: {exc}")
        return _RawAnswer(AnswerStatus.FOUND, tuple(answer), "")


# Order in which an address failure is reported, most telling first.
_SEVERITY = (
    AnswerStatus.NXDOMAIN,
    AnswerStatus.UNREACHABLE,
    AnswerStatus.TIMEOUT,
    AnswerStatus.ERROR,
    AnswerStatus.NO_DATA,
    AnswerStatus.FOUND,
)


@dataclass(frozen=True, slots=True)
class _RawAnswer:
    status: AnswerStatus
    records: tuple[Any, ...]  # dnspython rdata (SRV, MX, A, AAAA)
    message: str

    @property
    def found(self) -> bool:
        return self.status is AnswerStatus.FOUND


def _no_nameservers(exc: Exception, nameserver: Nameserver | None) -> _RawAnswer:
    """dnspython's "every server failed": unreachable if no server answered at all."""
    errors = exc.kwargs.get("errors", []) if hasattr(exc, "kwargs") else []
    # Each entry is (server, tcp, port, exception, answer); an answer means the server
    # replied (SERVFAIL, REFUSED...), an OSError means it could not be asked.
    answered = [e for e in errors if len(e) > 4 and e[4] is not None]
    where = f" at {nameserver}" if nameserver else ""
    if answered or not errors:
        return _RawAnswer(AnswerStatus.ERROR, (), f"the name server{where} answered with an error")
    return _RawAnswer(AnswerStatus.UNREACHABLE, (), f"no name server{where} could be reached")


def offline(answers: Sequence[Answer[Any]]) -> bool:
    """Whether no query got any answer: no network, or the resolver is down."""
    return bool(answers) and all(
        a.status in (AnswerStatus.TIMEOUT, AnswerStatus.UNREACHABLE) for a in answers
    )
