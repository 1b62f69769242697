"""Every address a name resolves to is tried in turn, and each try is reported.

The resolver is the one thing replaced here: a name with several addresses cannot
be made on this machine without editing /etc/hosts, so the loop's ``getaddrinfo``
answers for ``multi.test``; connections themselves are real.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.smtp import probe_smtp
from provision.results import FailureClass, Status, Step
from provision.sandbox.smtpd import start_smtp_server

USER, PASSWORD = "agent@example.com", "net-secret-1"


def _resolve_to(monkeypatch: pytest.MonkeyPatch, *ips: str) -> None:
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        if host != "multi.test":
            return await real(host, port, **kw)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


def _inbox(port: int) -> Inbox:
    server = ImapSettings(
        server="multi.test", port=1, username=USER, password=Secret(PASSWORD), secure=True
    )
    return Inbox(
        name="multi",
        email="multi@example.com",
        smtp=SmtpSettings(
            server="multi.test",
            port=port,
            username=USER,
            password=Secret(PASSWORD),
            secure=False,
        ),
        imap=server,
    )


async def test_refused_address_is_reported_and_the_next_one_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_smtp_server(mode="plain", tls_context=None, users={USER: PASSWORD})
    try:
        _resolve_to(monkeypatch, "127.0.0.2", "127.0.0.1")
        loop = asyncio.get_running_loop()
        result = await probe_smtp(
            _inbox(server.port), ProbeOptions(step_timeout=2), deadline=loop.time() + 10
        )
    finally:
        await server.close()
    connects = [s for s in result.steps if s.step is Step.CONNECT]
    assert [(s.address, s.status) for s in connects] == [
        (f"127.0.0.2:{server.port}", Status.FAILED),
        (f"127.0.0.1:{server.port}", Status.PASSED),
    ]
    resolve = next(s for s in result.steps if s.step is Step.RESOLVE)
    assert resolve.detail == "127.0.0.2, 127.0.0.1"
    assert result.failure is None


async def test_all_addresses_refused_names_each(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _resolve_to(monkeypatch, "127.0.0.2", "127.0.0.1")
    loop = asyncio.get_running_loop()
    result = await probe_smtp(_inbox(port), ProbeOptions(step_timeout=2), deadline=loop.time() + 10)
    assert result.failure is FailureClass.PORT_CLOSED
    assert result.field == "smtp.port"
    assert f"127.0.0.2:{port}" in (result.message or "")
    assert f"127.0.0.1:{port}" in (result.message or "")
    assert len([s for s in result.steps if s.step is Step.CONNECT]) == 2


@pytest.mark.parametrize(
    ("literal", "family", "shown"),
    [
        ("127.0.0.1", socket.AF_INET, "127.0.0.1"),
        ("::1", socket.AF_INET6, "::1"),
        ("0:0:0:0:0:0:0:1", socket.AF_INET6, "::1"),  # shown in its canonical form
    ],
)
async def test_an_address_literal_is_used_as_is_without_the_resolver(
    monkeypatch: pytest.MonkeyPatch, literal: str, family: socket.AddressFamily, shown: str
) -> None:
    """No getaddrinfo for a literal (its IDNA encoding alone costs a cold run 4 ms)."""
    from provision.probes._net import resolve
    from provision.probes._steps import Recorder
    from provision.results import Stage

    def no_resolver(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("getaddrinfo called for an address literal")

    monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", no_resolver)
    rec = Recorder(stage=Stage.SMTP, deadline=loop.time() + 5, step_timeout=2)
    addresses = await resolve(rec, literal, 587, prefix="smtp")
    expected = (shown, 587) if family == socket.AF_INET else (shown, 587, 0, 0)
    assert addresses == [(family, expected)]
    assert rec.result.steps[0].detail == shown
