"""Shared fixtures: one throw-away CA per session, its CA file, and env hygiene."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from provision.sandbox.ca import SandboxCA
from tests.servers.latency_proxy import LatencyProxy

#: Seconds each way through :func:`turn_proxy`: enough for a client's close to reach
#: the proxy before the server's answer to its QUIT or LOGOUT (a round trip later).
TURN_PROXY_DELAY = 0.01

StartProxy = Callable[[int], Awaitable[LatencyProxy]]


@pytest.fixture(scope="session")
def sandbox_ca() -> SandboxCA:
    return SandboxCA.create()


@pytest.fixture(scope="session")
def ca_file(sandbox_ca: SandboxCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sandbox_ca.write_ca(tmp_path_factory.mktemp("ca") / "ca.pem")


#: GITHUB_*: a suite run under GitHub Actions must not annotate or write its job summary.
_STRIPPED_PREFIXES = ("PROVISION_", "SSL_CERT_", "ROCKETCHAT_", "GITHUB_")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip variables that change TLS or proxy behaviour, and our own."""
    import os

    for name in list(os.environ):
        if name.startswith(_STRIPPED_PREFIXES) or name.lower() in {
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
        }:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_process_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os._exit`` inside the test process would end pytest with that code, 0 included:
    a green run that stopped half-way. In-process code that reaches it fails instead
    (``entry.console`` ends the process that way; tests run it in a child)."""
    import os

    def refuse(code: int) -> None:
        pytest.fail(f"os._exit({code}) called inside the test process")

    monkeypatch.setattr(os, "_exit", refuse)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``-v`` (and the CLI's warning handler) add to the ``provision`` logger; take
    what a test added away again."""
    logger = logging.getLogger("provision")
    before, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
async def turn_proxy() -> AsyncIterator[StartProxy]:
    """Start a round-trip counting proxy to a port on 127.0.0.1 (closed at the end)."""
    started: list[LatencyProxy] = []

    async def start(port: int) -> LatencyProxy:
        proxy = LatencyProxy(("127.0.0.1", port), TURN_PROXY_DELAY)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.close()
