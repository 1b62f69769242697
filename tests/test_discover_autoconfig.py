"""provision.discover.autoconfig: parsing is safe and picks only what Rocket.Chat can use."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from provision.discover.autoconfig import MAX_BYTES, fetch_autoconfig, parse_config
from provision.discover.candidates import Protocol, Transport
from provision.discover.dns import Resolver, parse_nameserver
from provision.sandbox.ca import SandboxCA
from tests.servers.autoconfig import running_https
from tests.servers.dns import Zone, running_dns

URL = "https://autoconfig.example.test/mail/config-v1.1.xml"


def test_placeholders_socket_types_and_unusable_servers() -> None:
    body = b"""<clientConfig version="1.1"><emailProvider id="example.test">
      <incomingServer type="imap"><hostname>IMAP.example.test</hostname><port>143</port>
        <socketType>plain</socketType><username>%EMAILLOCALPART%</username>
        <authentication>OAuth2</authentication></incomingServer>
      <incomingServer type="pop3"><hostname>pop.example.test</hostname><port>995</port>
        <socketType>SSL</socketType></incomingServer>
      <outgoingServer type="smtp"><hostname>bad host</hostname><port>25</port>
        <socketType>SSL</socketType></outgoingServer>
      <outgoingServer type="smtp"><hostname>smtp.example.test</hostname><port>99999</port>
        <socketType>SSL</socketType></outgoingServer>
    </emailProvider></clientConfig>"""
    (imap,) = parse_config(body, address="support@example.test", url=URL)
    assert (imap.protocol, imap.host, imap.port) == (Protocol.IMAP, "imap.example.test", 143)
    assert imap.transport is Transport.PLAIN
    assert imap.username == "support"
    assert "OAuth2" in imap.notes[0]


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><clientConfig/>',
        b"<clientConfig><emailProvider>",
        b"<html><body>not here</body></html>",
    ],
    ids=["dtd", "broken", "not-autoconfig"],
)
def test_unsafe_or_foreign_documents_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"DTD|not XML|emailProvider"):
        parse_config(body, address="support@example.test", url=URL)


async def test_an_oversized_reply_is_not_read_to_the_end(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    zone = Zone().add("autoconfig.example.test", "A", "127.0.0.1")
    context = sandbox_ca.server_context()
    sandbox_ca.ca.issue_cert("autoconfig.example.test").configure_cert(context)
    documents = {"/mail/config-v1.1.xml": b"<clientConfig>" + b" " * (MAX_BYTES + 1)}
    async with running_dns(zone) as dns, running_https(documents, context) as web:
        resolver = Resolver(
            step_timeout=3.0,
            deadline=time.monotonic() + 10,
            nameserver=parse_nameserver(dns.nameserver),
        )
        result = await fetch_autoconfig(
            "support@example.test", resolver=resolver, ca_file=ca_file, port=web.port
        )
    assert result.candidates == []
    assert "larger than" in result.attempts[0].outcome
    assert web.requests[0] == ("/mail/config-v1.1.xml", "autoconfig.example.test")


async def test_an_untrusted_autoconfig_certificate_is_refused(sandbox_ca: SandboxCA) -> None:
    zone = Zone().add("autoconfig.example.test", "A", "127.0.0.1")
    context = sandbox_ca.server_context()
    sandbox_ca.ca.issue_cert("autoconfig.example.test").configure_cert(context)
    async with running_dns(zone) as dns, running_https({}, context) as web:
        resolver = Resolver(
            step_timeout=3.0,
            deadline=time.monotonic() + 10,
            nameserver=parse_nameserver(dns.nameserver),
        )
        result = await fetch_autoconfig("support@example.test", resolver=resolver, port=web.port)
    assert "certificate rejected" in result.attempts[0].outcome
    assert web.requests == []
