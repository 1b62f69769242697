"""TLS policy (README, Security): TLS >= 1.2, --ca-file adds to the system store,
verification loosened only explicitly, per protocol, and visibly."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.smtp import probe_smtp
from provision.results import FailureClass, Status
from provision.sandbox.ca import SandboxCA
from provision.sandbox.runner import running_sandbox
from provision.sandbox.smtpd import start_smtp_server
from provision.tls import imap_context, verifying_context

runner = CliRunner()


def test_both_protocols_refuse_tls_below_1_2(ca_file: Path) -> None:
    for ctx in (verifying_context(), verifying_context(ca_file), imap_context()):
        assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2


def test_ca_file_adds_to_the_system_store(ca_file: Path) -> None:
    system = verifying_context().cert_store_stats()["x509_ca"]
    assert system > 0, "the machine's CA store should not be empty"
    assert verifying_context(ca_file).cert_store_stats()["x509_ca"] == system + 1


def test_smtp_verifies_host_names_and_imap_context_does_not() -> None:
    smtp = verifying_context()
    assert smtp.check_hostname is True
    assert smtp.verify_mode is ssl.CERT_REQUIRED
    imap = imap_context()  # node-imap: rejectUnauthorized false (spec §3.2)
    assert imap.verify_mode is ssl.CERT_NONE


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_smtp_server_limited_to_tls_1_1_fails_before_auth(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    ctx = sandbox_ca.server_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    server = await start_smtp_server(mode="implicit", tls_context=ctx, users={"u": "p"})
    inbox = Inbox(
        name="old tls",
        email="old@example.com",
        smtp=SmtpSettings(
            server="localhost", port=server.port, username="u", password=Secret("p"), secure=True
        ),
        imap=ImapSettings(
            server="localhost", port=1, username="u", password=Secret("p"), secure=True
        ),
    )
    try:
        loop = asyncio.get_running_loop()
        result = await probe_smtp(
            inbox, ProbeOptions(ca_file=ca_file, step_timeout=2), deadline=loop.time() + 10
        )
    finally:
        await server.close()
    assert result.status is Status.FAILED
    # OpenSSL here answers a TLS 1.2 ClientHello to a 1.1-only server with a reset,
    # elsewhere with a protocol-version alert.
    assert result.failure in {FailureClass.TLS_PROTOCOL, FailureClass.RESET}
    assert server.auth_attempts == []


async def test_turning_smtp_verification_off_is_explicit_and_reported(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path) as box:
        strict = await asyncio.to_thread(
            runner.invoke, app, ["check", str(box.inbox_file), "--json"]
        )
        loose = await asyncio.to_thread(
            runner.invoke, app, ["check", str(box.inbox_file), "--json", "--smtp-no-verify"]
        )
        text = await asyncio.to_thread(
            runner.invoke, app, ["check", str(box.inbox_file), "--smtp-no-verify"]
        )
    # Without --ca-file the sandbox CA is unknown: SMTP fails, as in Rocket.Chat.
    assert strict.exit_code == 12
    doc = json.loads(loose.stdout)
    assert loose.exit_code == 0
    assert doc["settings"]["smtp_verify"] is False
    assert doc["settings"]["imap_verify"] is False
    codes = {w["code"] for i in doc["inboxes"] for s in i["stages"] for w in s["warnings"]}
    assert "smtp-verify-off" in codes
    assert "SMTP certificate verification is OFF" in text.stdout
