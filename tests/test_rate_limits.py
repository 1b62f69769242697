"""Rocket.Chat's rate limiter (spec §1.8) as a pipeline meets it (issue 9): the anonymous
``GET /api/info`` never costs a wait, a wait is shown on stderr, and each 429 that is not
waited out names what would lift it. Through the command line, against the double (which
limits per client IP + route, and lets ``api-bypass-rate-limit`` users through)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from provision.cli import app
from provision.errors import RocketChatRateLimitedError
from provision.rocketchat.replies import Scrubber, interpret
from provision.sandbox.rocketchat import (
    RateLimit,
    RocketChatDouble,
    RunningRocketChat,
    User,
    start_rocketchat,
)

runner = CliRunner()
TOKEN = "CANARY-TOKEN-rate-41c"
PASSWORD = "CANARY-PASSWORD-rate-9e"
INBOX = {
    "active": True,
    "description": "",
    "senderInfo": "",
    "smtp": {"server": "s.example.com", "port": 587, "username": "u", "password": "p",
             "secure": False},
    "imap": {"server": "i.example.com", "port": 993, "username": "u", "password": "p",
             "secure": True, "maxRetries": 10},
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("restore_logging")


@contextlib.asynccontextmanager
async def _serve(limit: RateLimit) -> AsyncIterator[RunningRocketChat]:
    async with await start_rocketchat(RocketChatDouble(rate_limit=limit)) as running:
        for n in range(2):
            running.app.add_inbox({**INBOX, "name": f"Inbox {n}", "email": f"i{n}@example.com"})
        yield running


def _token_env(user: User) -> dict[str, str]:
    return {"ROCKETCHAT_USER_ID": user.id, "ROCKETCHAT_AUTH_TOKEN": TOKEN}


def _clerk(double: RocketChatDouble) -> User:
    """A user who may manage inboxes but has no api-bypass-rate-limit."""
    return double.add_user(
        "clerk", PASSWORD, permissions=["manage-email-inbox", "view-livechat-departments"],
        token=TOKEN,
    )  # fmt: skip


async def _export(running: RunningRocketChat, env: dict[str, str], *extra: str) -> Any:
    args = ["export", "--server", running.url, *extra]
    return await asyncio.to_thread(runner.invoke, app, args, env=env)


def _calls(double: RocketChatDouble, path: str) -> list[int]:
    return [r.status for r in double.requests if r.path == path]


async def test_api_info_429_costs_no_wait_and_no_failure() -> None:
    async with _serve(RateLimit(calls=1, interval_ms=600_000)) as running:
        env = _token_env(running.app.add_admin(token=TOKEN))

        first = await _export(running, env)
        started = time.monotonic()
        second = await _export(running, env)  # same IP, within the minute
        elapsed = time.monotonic() - started

    assert first.exit_code == second.exit_code == 0, second.output
    assert _calls(running.app, "/api/info") == [200, 429]  # asked once per run, never again
    assert elapsed < 5  # not the 600 s window
    assert "rate limit" not in second.stderr
    assert first.stdout == second.stdout  # the same file: the version was only informative


async def test_waited_out_429_prints_one_line_on_stderr() -> None:
    async with _serve(RateLimit(calls=1, interval_ms=400)) as running:
        running.app.list_count_limit = 1  # two pages: the second list call is limited
        result = await _export(running, _token_env(_clerk(running.app)))

    assert result.exit_code == 0, result.output
    waits = [li for li in result.stderr.splitlines() if "rate limit" in li]
    assert len(waits) >= 1
    for line in waits:
        assert line.startswith("Rocket.Chat rate limit: waiting ")
        assert line.endswith(" s (X-RateLimit-Reset)")
    assert 429 in _calls(running.app, "/api/v1/email-inbox.list")
    assert "Inbox 0" in result.stdout
    assert "Inbox 1" in result.stdout


async def test_429_on_authenticated_route_not_waited_names_the_bypass_permission() -> None:
    async with _serve(RateLimit(calls=1, interval_ms=600_000)) as running:
        running.app.list_count_limit = 1
        result = await _export(running, _token_env(_clerk(running.app)))

    assert result.exit_code == 20, result.output
    assert "rate-limited GET /api/v1/email-inbox.list (HTTP 429)" in result.stderr
    assert "api-bypass-rate-limit permission" in result.stderr
    assert "authenticated REST routes" in result.stderr
    assert "waiting" not in result.stderr  # 600 s does not fit: no wait announced
    assert TOKEN not in result.stdout + result.stderr


async def test_429_on_login_names_a_token_not_the_bypass_permission() -> None:
    async with _serve(RateLimit(calls=1, interval_ms=600_000)) as running:
        _clerk(running.app)
        env = {"ROCKETCHAT_USER": "clerk", "ROCKETCHAT_PASSWORD": PASSWORD}
        await _export(running, env)
        result = await _export(running, env)

    assert result.exit_code == 20, result.output
    assert "rate-limited POST /api/v1/login" in result.stderr
    assert "personal access token (ROCKETCHAT_USER_ID + ROCKETCHAT_AUTH_TOKEN)" in result.stderr
    assert "applies only after login" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_429_hint_for_an_anonymous_route_says_the_permission_cannot_help() -> None:
    request = httpx.Request("GET", "https://chat.example.com/api/info")
    response = httpx.Response(429, json={"success": False}, request=request)

    with pytest.raises(RocketChatRateLimitedError) as caught:
        interpret(Scrubber(), "GET", "/api/info", response, token_auth=True)

    assert "api-bypass-rate-limit does not apply" in (caught.value.hint or "")
    assert "Rate Limiter" in (caught.value.hint or "")


def test_wait_line_on_a_terminal_erases_the_progress_line_first() -> None:
    import os
    import pty
    import subprocess
    import sys

    code = (
        "import logging, provision.cli_run as cli_run\n"
        "cli_run.setup_logging(False)\n"
        "logging.getLogger('provision.rocketchat').warning("
        "'Rocket.Chat rate limit: waiting %.1f s (%s)', 2.0, 'X-RateLimit-Reset\\x1b[31m')\n"
    )
    leader, follower = pty.openpty()  # a real terminal on stderr
    try:
        subprocess.run([sys.executable, "-c", code], stderr=follower, timeout=30, check=True)
        written = os.read(leader, 4096)
    finally:
        os.close(follower)
        os.close(leader)

    assert written == (
        b"\r\x1b[KRocket.Chat rate limit: waiting 2.0 s (X-RateLimit-Reset\\x1b[31m)\r\n"
    )
