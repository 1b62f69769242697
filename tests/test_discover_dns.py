"""provision.discover.dns against a real authoritative server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest

from provision.discover.dns import AnswerStatus, Nameserver, Resolver, offline, parse_nameserver
from tests.servers.dns import Zone, running_dns


def _resolver(nameserver: str, *, step: float = 2.0, deadline: float = 10.0) -> Resolver:
    return Resolver(
        step_timeout=step,
        deadline=time.monotonic() + deadline,
        nameserver=parse_nameserver(nameserver),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", Nameserver("127.0.0.1", 53)),
        ("127.0.0.1:5353", Nameserver("127.0.0.1", 5353)),
        ("::1", Nameserver("::1", 53)),
        ("[::1]:5353", Nameserver("::1", 5353)),
    ],
    ids=["ipv4", "ipv4-port", "ipv6", "ipv6-port"],
)
def test_parse_nameserver_accepts_addresses_with_optional_port(
    text: str, expected: Nameserver
) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1]5353"])
def test_parse_nameserver_refuses_names_and_bad_ports(text: str) -> None:
    with pytest.raises(ValueError, match=r"IP address|port|expected"):
        parse_nameserver(text)


async def test_srv_records_come_back_in_priority_then_weight_order() -> None:
    zone = (
        Zone()
        .add("_imaps._tcp.example.test", "SRV", "10 5 993 backup.example.test.")
        .add("_imaps._tcp.example.test", "SRV", "0 1 993 low-weight.example.test.")
        .add("_imaps._tcp.example.test", "SRV", "0 9 993 imap.example.test.")
    )
    async with running_dns(zone) as server:
        answer = await _resolver(server.nameserver).srv("_imaps._tcp.example.test")
    assert answer.status is AnswerStatus.FOUND
    assert [r.target for r in answer.records] == [
        "imap.example.test",
        "low-weight.example.test",
        "backup.example.test",
    ]
    assert server.questions[0].transport == "udp"


async def test_srv_target_dot_means_not_offered() -> None:
    zone = Zone().add("_imap._tcp.example.test", "SRV", "0 0 0 .")
    async with running_dns(zone) as server:
        answer = await _resolver(server.nameserver).srv("_imap._tcp.example.test")
    assert answer.status is AnswerStatus.NO_DATA
    assert "not offered" in answer.message


async def test_truncated_udp_answer_is_asked_again_over_tcp() -> None:
    zone = Zone().add("example.test", "MX", "10 mx.example.test.")
    zone.truncate_udp.add("example.test")
    async with running_dns(zone) as server:
        answer = await _resolver(server.nameserver).mx("example.test")
    assert [m.exchange for m in answer.records] == ["mx.example.test"]
    assert [q.transport for q in server.questions] == ["udp", "tcp"]


async def test_mx_addresses_nxdomain_and_no_data_are_told_apart() -> None:
    zone = (
        Zone()
        .add("example.test", "MX", "20 mx2.example.test.")
        .add("example.test", "MX", "10 mx1.example.test.")
        .add("mail.example.test", "A", "127.0.0.1")
        .add("mail.example.test", "AAAA", "::1")
    )
    zone.servfail.add("broken.example.test")
    async with running_dns(zone) as server:
        resolver = _resolver(server.nameserver)
        mx = await resolver.mx("example.test")
        addresses = await resolver.addresses("mail.example.test")
        missing = await resolver.addresses("nowhere.example.test")
        no_mx = await resolver.mx("mail.example.test")
        broken = await resolver.mx("broken.example.test")
        literal = await resolver.addresses("127.0.0.2")
    assert [m.exchange for m in mx.records] == ["mx1.example.test", "mx2.example.test"]
    assert addresses.records == ("127.0.0.1", "::1")
    assert missing.status is AnswerStatus.NXDOMAIN
    assert no_mx.status is AnswerStatus.NO_DATA
    assert broken.status is AnswerStatus.ERROR
    assert literal.records == ("127.0.0.2",)
    assert ("127.0.0.2", "A") not in [(q.name, q.rdtype) for q in server.questions]


async def test_a_name_server_that_does_not_listen_is_offline_within_the_cap() -> None:
    # A UDP port nobody listens on (dnspython's asyncio UDP does not surface the
    # kernel's ICMP "port unreachable", so this is a timeout bounded by the cap).
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    started = time.monotonic()
    resolver = _resolver(f"127.0.0.1:{port}", step=0.3)
    answers = [await resolver.srv("_imaps._tcp.example.test"), await resolver.mx("example.test")]
    assert time.monotonic() - started < 2.0
    assert {a.status for a in answers} <= {AnswerStatus.TIMEOUT, AnswerStatus.UNREACHABLE}
    assert offline(answers)


async def test_every_query_stops_at_the_deadline() -> None:
    zone = Zone().add("example.test", "MX", "10 mx.example.test.")
    async with running_dns(zone) as server:
        resolver = Resolver(
            step_timeout=5.0,
            deadline=time.monotonic() - 1.0,
            nameserver=parse_nameserver(server.nameserver),
        )
        answer = await resolver.mx("example.test")
    assert answer.status is AnswerStatus.TIMEOUT
    assert server.questions == []
