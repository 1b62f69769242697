"""The whole search for one address: DNS, autoconfig, providers, guesses, assessment.

:func:`search` returns a :class:`Discovery` and never prints; the CLI renders it.
DNS is asked once for the MX records first: if that gets no answer at all the
network (or the resolver) is down, and the search stops with one message instead
of one timeout per lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.discover.assess import Assessment, Verdict, assess_all
from provision.discover.autoconfig import Attempt, fetch_autoconfig
from provision.discover.candidates import (
    GUESS_PORTS,
    Candidate,
    Origin,
    Protocol,
    Transport,
    guessed,
    merge,
)
from provision.discover.dns import (
    SRV_SERVICES,
    Answer,
    Nameserver,
    Resolver,
    SrvRecord,
    offline,
)
from provision.discover.providers import provider_candidates

__all__ = ["Discovery", "SearchOptions", "search"]

_SRV_MEANING = {
    "_submissions._tcp": (Protocol.SMTP, Transport.TLS),
    "_submission._tcp": (Protocol.SMTP, Transport.STARTTLS),
    "_imaps._tcp": (Protocol.IMAP, Transport.TLS),
    "_imap._tcp": (Protocol.IMAP, Transport.STARTTLS),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchOptions:
    """How the search runs.

    Attributes:
        step_timeout: cap in seconds on any one lookup, request or protocol step.
        timeout: deadline in seconds for the whole search.
        nameserver: send every DNS query to this server (``--nameserver``).
        ca_file: extra CAs for the mail servers and the autoconfig HTTPS fetch.
        ehlo_name: name sent in SMTP EHLO (default: this machine's host name).
        https_port: port of the autoconfig web servers (443; tests serve elsewhere).
        guess_ports: ports tried on the usual names (see ``candidates.GUESS_PORTS``).
    """

    step_timeout: float = 10.0
    timeout: float = 60.0
    nameserver: Nameserver | None = None
    ca_file: Path | None = None
    ehlo_name: str | None = None
    https_port: int = 443
    guess_ports: Mapping[Protocol, Sequence[tuple[int, Transport]]] = field(
        default_factory=lambda: dict(GUESS_PORTS)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovery:
    """What the search found for one address.

    Attributes:
        address: the inbox address.
        domain: its domain.
        offline: no DNS query got an answer; nothing else was tried.
        message: the one-line summary when offline.
        lookups: every DNS query with its outcome (name, type, status, message).
        autoconfig: every autoconfig URL asked and its outcome.
        assessments: one per candidate, in candidate order.
    """

    address: str
    domain: str
    offline: bool = False
    message: str = ""
    lookups: list[dict[str, str]] = field(default_factory=list)
    autoconfig: list[Attempt] = field(default_factory=list)
    assessments: list[Assessment] = field(default_factory=list)

    def usable(self, protocol: Protocol) -> list[Assessment]:
        """The usable candidates of ``protocol``, best first: secure ones before insecure
        ones, each group in search order."""
        usable = [a for a in self.assessments if a.candidate.protocol is protocol and a.usable]
        return [a for a in usable if a.verdict is Verdict.USABLE] + [
            a for a in usable if a.verdict is not Verdict.USABLE
        ]

    def best(self, protocol: Protocol) -> Assessment | None:
        """The first usable candidate of ``protocol``, a secure one before an insecure one."""
        usable = self.usable(protocol)
        return usable[0] if usable else None

    @property
    def complete(self) -> bool:
        """A usable SMTP and a usable IMAP server were found."""
        return self.best(Protocol.SMTP) is not None and self.best(Protocol.IMAP) is not None

    def to_json(self) -> dict[str, Any]:
        """The whole search as JSON-ready data."""
        best = {p: self.best(p) for p in Protocol}
        return {
            "address": self.address,
            "domain": self.domain,
            "offline": self.offline,
            "message": self.message,
            "complete": self.complete,
            "lookups": self.lookups,
            "autoconfig": [{"url": a.url, "outcome": a.outcome} for a in self.autoconfig],
            "candidates": [
                {
                    "protocol": str(a.candidate.protocol),
                    "server": a.candidate.host,
                    "port": a.candidate.port,
                    "origin": str(a.candidate.origin),
                    "detail": a.candidate.detail,
                    "also": list(a.candidate.also),
                    "verdict": str(a.verdict),
                    "secure": a.secure,
                    "best": a is best[a.candidate.protocol],
                    "reason": a.reason,
                    "notes": [*a.candidate.notes, *a.notes],
                    "speaks": str(a.speaks) if a.speaks else None,
                    "addresses": list(a.addresses),
                    "greeting": a.greeting,
                    "capabilities": list(a.capabilities),
                    "mechanisms": list(a.mechanisms),
                    "login_disabled": a.login_disabled,
                    "tls": a.tls,
                    "elapsed_ms": a.elapsed_ms,
                }
                for a in self.assessments
            ],
        }


def _lookup(answer: Answer[Any]) -> dict[str, str]:
    return {
        "name": answer.name,
        "type": answer.rdtype,
        "status": str(answer.status),
        "message": answer.message,
    }


def _srv_candidates(service: str, domain: str, answer: Answer[SrvRecord]) -> list[Candidate]:
    protocol, transport = _SRV_MEANING[service]
    return [
        Candidate(
            protocol=protocol,
            host=record.target.lower(),
            port=record.port,
            transport=transport,
            origin=Origin.SRV,
            detail=f"{service}.{domain} SRV {record.priority} {record.weight} "
            f"{record.port} {record.target}.",
        )
        for record in answer.records
    ]


async def search(address: str, options: SearchOptions | None = None) -> Discovery:
    """Find and assess the mail servers of ``address``.

    Args:
        address: the inbox address (``local@domain``).
        options: caps, deadline, resolver and CA settings.

    Returns:
        The search; ``offline`` is set, and nothing else tried, when DNS is unreachable.

    Raises:
        ValueError: ``address`` is not ``local@domain``.
    """
    options = options or SearchOptions()
    local, at, domain = address.strip().rpartition("@")
    domain = domain.lower().rstrip(".")
    if not at or not local or "." not in domain:
        raise ValueError(f"{address!r} is not an email address (local@domain)")
    resolver = Resolver(
        step_timeout=options.step_timeout,
        deadline=time.monotonic() + options.timeout,
        nameserver=options.nameserver,
    )
    mx = await resolver.mx(domain)
    if offline([mx]):
        where = f"the name server {options.nameserver}" if options.nameserver else "DNS"
        return Discovery(
            address=address,
            domain=domain,
            offline=True,
            message=f"no answer from {where} ({mx.message}): this machine has no network, "
            "or the resolver is down; nothing else was tried",
            lookups=[_lookup(mx)],
        )
    srv_answers, config = await asyncio.gather(
        asyncio.gather(*(resolver.srv(f"{s}.{domain}") for s in SRV_SERVICES)),
        fetch_autoconfig(
            address, resolver=resolver, ca_file=options.ca_file, port=options.https_port
        ),
    )
    srv = [
        c
        for service, answer in zip(SRV_SERVICES, srv_answers, strict=True)
        for c in _srv_candidates(service, domain, answer)
    ]
    candidates = merge(
        [
            srv,
            config.candidates,
            provider_candidates([m.exchange for m in mx.records]),
            guessed(domain, options.guess_ports),
        ]
    )
    assessments = await assess_all(
        candidates, resolver=resolver, ca_file=options.ca_file, ehlo_name=options.ehlo_name
    )
    lookups = [_lookup(mx), *(_lookup(a) for a in srv_answers)]
    return Discovery(
        address=address,
        domain=domain,
        lookups=lookups,
        autoconfig=config.attempts,
        assessments=assessments,
    )
