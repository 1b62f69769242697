"""A small authoritative DNS server on 127.0.0.1 (dnslib), UDP and TCP on one port.

It answers from a zone built in the test (``zone.add("_imaps._tcp.example.test", "SRV",
"0 1 993 imap.example.test.")``): the records asked for, NOERROR without records
for a name that exists with other types, NXDOMAIN otherwise. It runs in the test's
own event loop and records every question with its transport, so tests can assert
what was asked and that a truncated UDP answer was asked again over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord


@dataclass(frozen=True, slots=True)
class Question:
    """One question the server received."""

    name: str
    rdtype: str
    transport: str  # "udp" or "tcp"


@dataclass
class Zone:
    """Records by (lower-case name without the trailing dot, type).

    Attributes:
        truncate_udp: names whose UDP answers are sent truncated (TC bit, no records),
            so that the client must ask again over TCP.
        servfail: names answered with SERVFAIL.
    """

    records: dict[tuple[str, str], list[RR]] = field(default_factory=dict)
    truncate_udp: set[str] = field(default_factory=set)
    servfail: set[str] = field(default_factory=set)

    def add(self, name: str, rdtype: str, rdata: str, ttl: int = 60) -> Zone:
        """Add one record in zone-file syntax (``rdata`` as it follows the type)."""
        key = (name.rstrip(".").lower(), rdtype.upper())
        self.records.setdefault(key, []).extend(
            RR.fromZone(f"{name.rstrip('.')}. {ttl} IN {rdtype.upper()} {rdata}")
        )
        return self

    def answer(self, query: DNSRecord, transport: str) -> DNSRecord:
        """The reply to ``query``."""
        reply = query.reply()
        name = str(query.q.qname).rstrip(".").lower()
        rdtype = QTYPE.get(query.q.qtype)
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        found = self.records.get((name, str(rdtype)), [])
        if found and transport == "udp" and name in self.truncate_udp:
            reply.header.tc = 1
            return reply
        if found:
            for rr in found:
                reply.add_answer(rr)
        elif not any(key[0] == name for key in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@dataclass(eq=False)
class RunningDns:
    """A listening server: its port, zone, and the questions it received."""

    host: str
    port: int
    zone: Zone
    questions: list[Question] = field(default_factory=list)

    @property
    def nameserver(self) -> str:
        """The ``--nameserver`` value that points at this server."""
        return f"{self.host}:{self.port}"

    def asked(self, rdtype: str | None = None) -> list[str]:
        """Names asked (of one type, if given), in order."""
        return [q.name for q in self.questions if rdtype in (None, q.rdtype)]

    def _handle(self, data: bytes, transport: str) -> bytes:
        query = DNSRecord.parse(data)
        self.questions.append(
            Question(
                str(query.q.qname).rstrip(".").lower(), str(QTYPE.get(query.q.qtype)), transport
            )
        )
        return bytes(self.zone.answer(query, transport).pack())


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: RunningDns) -> None:
        self.server = server
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.server._handle(data, "udp"), addr)


@contextlib.asynccontextmanager
async def running_dns(zone: Zone, host: str = "127.0.0.1") -> AsyncIterator[RunningDns]:
    """Serve ``zone`` on UDP and TCP at one OS-chosen port of ``host``."""
    loop = asyncio.get_running_loop()
    server = RunningDns(host=host, port=0, zone=zone)

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = server._handle(await reader.readexactly(length), "tcp")
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    # The TCP port must be the UDP one: retry if another socket holds it for TCP.
    for _ in range(20):
        udp, _protocol = await loop.create_datagram_endpoint(
            lambda: _Udp(server), local_addr=(host, 0)
        )
        port = udp.get_extra_info("sockname")[1]
        try:
            listener = await asyncio.start_server(tcp, host, port)
        except OSError:
            udp.close()
            continue
        break
    else:
        raise RuntimeError("no port free for both UDP and TCP")
    server.port = port
    try:
        yield server
    finally:
        udp.close()
        listener.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), 2.0)
