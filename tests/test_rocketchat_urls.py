"""Rocket.Chat URL mistakes get hints that name the fix (issue 9): ``https://`` to a
plain-HTTP server, and an API address (``.../api/v1``) given as the server URL. Through
the command line, against the double over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.rocketchat import RocketChatDouble, RunningRocketChat, start_rocketchat

runner = CliRunner()
TOKEN = "CANARY-TOKEN-url-5e1"


@pytest.fixture
async def double() -> AsyncIterator[RunningRocketChat]:
    async with await start_rocketchat(RocketChatDouble()) as running:
        yield running


def _env(running: RunningRocketChat) -> dict[str, str]:
    admin = running.app.add_admin(token=TOKEN)
    return {"ROCKETCHAT_USER_ID": admin.id, "ROCKETCHAT_AUTH_TOKEN": TOKEN}


async def test_https_to_a_plain_http_server_hints_http_not_ca_file(
    double: RunningRocketChat,
) -> None:
    plain = double.url.removesuffix("/")
    https = plain.replace("http://", "https://")

    result = await asyncio.to_thread(
        runner.invoke, app, ["export", "--server", https], env=_env(double)
    )

    assert result.exit_code == 20, result.output
    assert "TLS with Rocket.Chat failed: the server did not answer the TLS handshake" in (
        result.stderr
    )
    port = plain.rsplit(":", 1)[1]
    assert f"the server answers plain HTTP on port {port}, not HTTPS: use {plain}" in result.stderr
    assert "--allow-http" in result.stderr
    assert "--ca-file" not in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert double.app.requests == []  # the handshake failed before any request


async def test_untrusted_certificate_still_hints_ca_file(sandbox_ca: SandboxCA) -> None:
    double = RocketChatDouble()
    context = sandbox_ca.server_context(CertKind.VALID)
    async with await start_rocketchat(double, ssl_context=context) as running:
        result = await asyncio.to_thread(
            runner.invoke, app, ["export", "--server", running.url], env=_env(running)
        )

    assert result.exit_code == 20, result.output
    assert "pass the CA that signed the server certificate with --ca-file" in result.stderr


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://chat.example.com/api/v1", "https://chat.example.com"),
        ("https://chat.example.com/api/v1/", "https://chat.example.com"),
        ("https://chat.example.com/api", "https://chat.example.com"),
        ("https://example.com/chat/api/v1/me", "https://example.com/chat"),
    ],
)
@pytest.mark.parametrize("command", ["set", "export"])
def test_api_address_as_server_url_is_refused_naming_the_base(
    tmp_path: Path, url: str, base: str, command: str
) -> None:
    inbox = tmp_path / "inbox.yaml"
    server = "{server: mail.example.com, port: 465, username: u, password: p, secure: true}"
    inbox.write_text(f"name: S\nemail: s@example.com\nsmtp: {server}\nimap: {server}\n")
    args = [command, str(inbox)] if command == "set" else [command]
    env = {"ROCKETCHAT_USER_ID": "u", "ROCKETCHAT_AUTH_TOKEN": TOKEN}

    result = runner.invoke(app, [*args, "--server", url], env=env)

    assert result.exit_code == 2, result.output  # before any probe (mail.example.com)
    path = url.split(".com", 1)[1]
    assert (
        f"ROCKETCHAT_URL: is an API address ({path}); give the server's base URL: {base}"
        in result.stderr
    )


def test_subpath_that_is_not_the_api_is_kept() -> None:
    from provision.rocketchat.credentials import check_url

    assert str(check_url("https://example.com/rapid/chat")) == "https://example.com/rapid/chat"
