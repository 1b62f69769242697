"""What the inboxes of one run share: the IMAP certificate check, once per server (same
address, name, trust and certificate), every inbox still reporting its outcome; and the
lookup of a host name."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from provision.commands.check import check
from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.imap import probe_imap
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.imapd import start_imap_server

USER = "support@example.com"
PASSWORD = "canary-Pw-shared-1"


def _inbox(name: str, port: int, server: str) -> Inbox:
    smtp = SmtpSettings(  # nothing listens on port 9: the SMTP stage fails at once
        server="127.0.0.1", port=9, username=USER, password=Secret(PASSWORD), secure=True
    )
    imap = ImapSettings(
        server=server, port=port, username=USER, password=Secret(PASSWORD), secure=True
    )
    return Inbox(name=name, email=USER, smtp=smtp, imap=imap)


def _sni_names(ctx: ssl.SSLContext) -> list[str | None]:
    names: list[str | None] = []

    def callback(_sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = callback
    return names


async def test_one_certificate_check_per_server_and_name(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    ctx = sandbox_ca.server_context(CertKind.VALID)
    handshakes = _sni_names(ctx)  # the probe's own sessions send no SNI, the check does
    server = await start_imap_server(
        implicit_tls=True, tls_context=ctx, user=USER, password=PASSWORD
    )
    inboxes = [_inbox(f"local {i}", server.port, "localhost") for i in range(4)]
    inboxes.append(_inbox("by address", server.port, "127.0.0.1"))
    try:
        report = await check(inboxes, ProbeOptions(ca_file=ca_file, concurrency=5))
    finally:
        await server.close()

    # Five logins on their own connections, two checks: one per name (an IP address
    # is never sent as SNI, so that check shows as None too).
    assert len(handshakes) == 7
    assert handshakes.count("localhost") == 1
    imap = [r.stages[1] for r in report.inboxes]
    for stage in imap:
        assert stage.facts["certificate_verified"] is True, stage.to_json()
        assert stage.facts["certificate_check"] == (
            "verified against the system store and --ca-file"
        )
        assert stage.facts["tls"]["certificate"]["names"] == ["localhost", "127.0.0.1", "::1"]


async def test_an_unverified_certificate_is_reported_by_every_inbox(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    ctx = sandbox_ca.server_context(CertKind.SELF_SIGNED)
    handshakes = _sni_names(ctx)
    server = await start_imap_server(
        implicit_tls=True, tls_context=ctx, user=USER, password=PASSWORD
    )
    inboxes = [_inbox(f"local {i}", server.port, "localhost") for i in range(3)]
    try:
        report = await check(inboxes, ProbeOptions(ca_file=ca_file, concurrency=3))
    finally:
        await server.close()

    assert handshakes.count("localhost") == 1
    for result in report.inboxes:
        imap = result.stages[1]
        assert imap.facts["certificate_verified"] is False
        assert [w.code for w in imap.warnings] == ["imap-cert-unverified"]
        assert len(imap.facts["tls"]["certificate"]["sha256"]) == 64


async def test_a_probe_outside_a_run_makes_its_own_check(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    ctx = sandbox_ca.server_context(CertKind.VALID)
    handshakes = _sni_names(ctx)
    server = await start_imap_server(
        implicit_tls=True, tls_context=ctx, user=USER, password=PASSWORD
    )
    inbox = _inbox("alone", server.port, "localhost")
    options = ProbeOptions(ca_file=ca_file)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        for _ in range(2):
            stage = await probe_imap(inbox, options, deadline=deadline)
            assert stage.facts["certificate_verified"] is True
    finally:
        await server.close()

    assert handshakes == [None, "localhost", None, "localhost"]


async def test_a_name_is_resolved_once_per_run_and_an_address_never(
    monkeypatch: pytest.MonkeyPatch, sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    """The resolver is the one thing replaced (as in test_net): it counts the lookups."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    lookups: list[tuple[str, int]] = []

    async def getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        lookups.append((host, port))
        if host != "mail.test":
            return await real(host, port, **kw)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    server = await start_imap_server(
        implicit_tls=True, tls_context=sandbox_ca.server_context(), user=USER, password=PASSWORD
    )
    inboxes = [_inbox(f"named {i}", server.port, "mail.test") for i in range(3)]
    try:
        report = await check(inboxes, ProbeOptions(ca_file=ca_file, concurrency=3))
    finally:
        await server.close()

    # SMTP's 127.0.0.1 needs no lookup; IMAP's mail.test one for the three inboxes.
    assert lookups == [("mail.test", server.port)]
    for result in report.inboxes:
        assert result.stages[1].steps[0].detail == "127.0.0.1"
        assert result.stages[1].facts["address"] == f"127.0.0.1:{server.port}"
