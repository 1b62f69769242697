"""Candidate mail servers for one address, in the order discovery prefers them.

Order (issue 12): RFC 6186 SRV records, then the domain's autoconfig file, then the
MX records' known provider, then the usual host names on the usual ports. Each
candidate keeps where it came from; one host and port found twice keeps its first
place and notes the other sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "GUESS_PORTS",
    "Candidate",
    "Origin",
    "Protocol",
    "Transport",
    "guessed",
    "merge",
]


class Protocol(StrEnum):
    """Which half of an inbox a candidate serves."""

    SMTP = "smtp"
    IMAP = "imap"


class Transport(StrEnum):
    """How a source says the port speaks (assessment finds out what it really does)."""

    TLS = "tls"  #: TLS from the first byte (465, 993)
    STARTTLS = "starttls"  #: plaintext, upgraded with STARTTLS (587, 143)
    PLAIN = "plain"  #: plaintext only


class Origin(StrEnum):
    """Where a candidate came from, in the order of preference."""

    SRV = "srv"
    AUTOCONFIG = "autoconfig"
    PROVIDER = "provider"
    GUESS = "guess"


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One server to try.

    Attributes:
        protocol: SMTP or IMAP.
        host: host name (no trailing dot) or IP literal.
        port: TCP port.
        transport: what the source claims the port speaks.
        origin: the source.
        detail: what exactly the source said (the SRV record, the URL, the MX host).
        username: the user name the source suggests (autoconfig, provider), if any.
        notes: facts the source adds (a provider's login policy, autoconfig's
            authentication methods).
        also: other sources that named the same host and port.
    """

    protocol: Protocol
    host: str
    port: int
    transport: Transport
    origin: Origin
    detail: str
    username: str | None = None
    notes: tuple[str, ...] = ()
    also: tuple[str, ...] = field(default=())

    @property
    def key(self) -> tuple[Protocol, str, int]:
        """Identity: the same protocol, host and port are the same candidate."""
        return (self.protocol, self.host.lower(), self.port)


#: Ports tried on the usual host names, best first (RFC 8314: implicit TLS first).
#: Port 25 is left out: it is server-to-server relay, blocked outbound on most clouds.
GUESS_PORTS: Mapping[Protocol, Sequence[tuple[int, Transport]]] = {
    Protocol.SMTP: ((465, Transport.TLS), (587, Transport.STARTTLS)),
    Protocol.IMAP: ((993, Transport.TLS), (143, Transport.STARTTLS)),
}

_GUESS_HOSTS: Mapping[Protocol, Sequence[str]] = {
    Protocol.SMTP: ("smtp", "mail"),
    Protocol.IMAP: ("imap", "mail"),
}


def guessed(
    domain: str, ports: Mapping[Protocol, Sequence[tuple[int, Transport]]] = GUESS_PORTS
) -> list[Candidate]:
    """The usual names (``smtp.``, ``mail.``, ``imap.``) on the usual ports."""
    return [
        Candidate(
            protocol=protocol,
            host=f"{label}.{domain}",
            port=port,
            transport=transport,
            origin=Origin.GUESS,
            detail=f"usual name {label}.{domain} on port {port}",
        )
        for protocol in Protocol
        for label in _GUESS_HOSTS[protocol]
        for port, transport in ports[protocol]
    ]


def merge(groups: Iterable[Iterable[Candidate]]) -> list[Candidate]:
    """Concatenate the groups in order, folding repeats into their first occurrence."""
    merged: dict[tuple[Protocol, str, int], Candidate] = {}
    for group in groups:
        for candidate in group:
            first = merged.get(candidate.key)
            if first is None:
                merged[candidate.key] = candidate
            elif candidate.detail not in first.also and candidate.detail != first.detail:
                merged[candidate.key] = replace(
                    first,
                    also=(*first.also, f"{candidate.origin}: {candidate.detail}"),
                    username=first.username or candidate.username,
                    notes=(*first.notes, *(n for n in candidate.notes if n not in first.notes)),
                )
    return list(merged.values())
