"""Faults under load: 500 inboxes, a fifth of them on servers that hang, reset or refuse.

``provision check --json`` runs as a process of its own, as a pipeline runs it, against a
handful of listeners on 127.0.0.1: one good SMTP and IMAP pair from the sandbox factories
(aiosmtpd, pymap; plaintext, so the load is the protocol and not TLS), one that accepts
and never says a word, one that resets every connection, and a closed port. Every fifth
inbox points at a faulty listener, for SMTP, IMAP or both.

The run must end within ``--timeout`` (plus a small margin), give every inbox a result in
input order, pass every good inbox, classify every faulty one by its fault, and exit with
the code of the first failing inbox (SMTP before IMAP), as the README documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provision.results import ExitCode, FailureClass
from provision.sandbox.imapd import start_imap_server
from provision.sandbox.smtpd import start_smtp_server
from tests.servers import imap_misbehaving, smtp_misbehaving
from tests.servers.faults import RESET, SILENT

USER = "load@example.com"
PASSWORD = "load-test-password-31c7"
INBOXES = 500
TIMEOUT = 8.0
STEP = 1.0
CONCURRENCY = 50
MARGIN = 1.5

F = FailureClass
#: What each faulty listener does to a client, and the class each probe reports.
EXPECTED: dict[str, dict[str, FailureClass]] = {
    "hang": {"smtp": F.SLOW_GREETING, "imap": F.SLOW_GREETING},
    "refuse": {"smtp": F.PORT_CLOSED, "imap": F.PORT_CLOSED},
    "reset": {"smtp": F.RESET, "imap": F.RESET},
}
KINDS = tuple(EXPECTED)
#: Which stages of a faulty inbox point at a faulty listener.
VARIANTS = (("smtp", "imap"), ("smtp",), ("imap",))


def plan(index: int) -> dict[str, str]:
    """The faulty listener of each stage of inbox ``index`` (stages not named are good).

    Every fifth inbox is faulty; kinds and variants rotate so that every combination
    occurs. When both stages are faulty they fail differently: the first failing inbox
    (4) hangs on SMTP (exit 13) and is refused on IMAP (exit 11), so the exit code also
    shows that SMTP comes first.
    """
    if index % 5 != 4:
        return {}
    group = index // 5
    stages = VARIANTS[(group // len(KINDS)) % len(VARIANTS)]
    return {
        stage: KINDS[(group + offset) % len(KINDS)]
        for offset, stage in enumerate(("smtp", "imap"))
        if stage in stages
    }


@dataclass
class Listeners:
    ports: dict[str, dict[str, int]]  # "good"/kind -> stage -> port


@contextlib.asynccontextmanager
async def running_listeners() -> AsyncIterator[Listeners]:
    """The good pair and the faulty listeners, closed on exit."""
    smtp = await start_smtp_server(mode="plain", tls_context=None, users={USER: PASSWORD})
    imap = await start_imap_server(
        implicit_tls=False, tls_context=None, user=USER, password=PASSWORD
    )
    hang_smtp = await smtp_misbehaving.start_scripted_server(
        smtp_misbehaving.Script(greeting=SILENT)
    )
    hang_imap = await imap_misbehaving.start_scripted_server(
        imap_misbehaving.Script(greeting=SILENT)
    )
    reset = await smtp_misbehaving.start_scripted_server(smtp_misbehaving.Script(greeting=RESET))
    with socket.socket() as sock:  # nothing listens here once it is closed
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    try:
        yield Listeners(
            {
                "good": {"smtp": smtp.port, "imap": imap.port},
                "hang": {"smtp": hang_smtp.port, "imap": hang_imap.port},
                "reset": {"smtp": reset.port, "imap": reset.port},
                "refuse": {"smtp": closed, "imap": closed},
            }
        )
    finally:
        for server in (hang_smtp, hang_imap, reset):
            await server.close()
        await imap.close()
        await smtp.close()


@pytest.fixture
async def listeners() -> AsyncIterator[Listeners]:
    async with running_listeners() as running:
        yield running


def inbox(index: int, listeners: Listeners) -> dict[str, Any]:
    faulty = plan(index)

    def port(stage: str) -> int:
        return listeners.ports[faulty.get(stage, "good")][stage]

    server = {"server": "127.0.0.1", "username": USER, "password": PASSWORD, "secure": False}
    return {
        "name": f"inbox {index}",
        "email": f"inbox{index}@example.com",
        "smtp": {**server, "port": port("smtp")},
        "imap": {**server, "port": port("imap"), "maxRetries": 10},
    }


async def test_500_inboxes_with_a_fifth_of_the_servers_faulty(
    listeners: Listeners, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"inboxes": [inbox(i, listeners) for i in range(INBOXES)]}))
    args = [
        "check",
        str(batch),
        "--json",
        "--timeout",
        str(TIMEOUT),
        "--step-timeout",
        str(STEP),
        "--concurrency",
        str(CONCURRENCY),
    ]

    # A process of its own, as a pipeline runs it: the servers keep this one busy.
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provision",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT + 10):
        stdout, stderr = await process.communicate()
    elapsed = time.perf_counter() - started

    assert elapsed < TIMEOUT + MARGIN, elapsed
    assert b"Traceback" not in stderr, stderr
    doc = json.loads(stdout)
    inboxes = doc["inboxes"]
    assert [i["name"] for i in inboxes] == [f"inbox {i}" for i in range(INBOXES)]
    first_failure: FailureClass | None = None
    for index, found in enumerate(inboxes):
        faulty = plan(index)
        stages = {s["stage"]: s for s in found["stages"]}
        assert list(stages) == ["smtp", "imap"], found
        for stage, shown in stages.items():
            if stage in faulty:
                assert shown["status"] == "failed", (index, shown)
                assert shown["class"] == EXPECTED[faulty[stage]][stage].value, (index, shown)
                assert shown["message"]
                if first_failure is None:
                    first_failure = FailureClass(shown["class"])
            else:
                # Plaintext servers: passed with the plaintext-credentials warning.
                assert shown["status"] in ("passed", "warning"), (index, shown)
                assert shown["class"] is None, (index, shown)
    # The first failing inbox in input order decides, and within it SMTP before IMAP.
    assert plan(4) == {"smtp": "hang", "imap": "refuse"}
    assert first_failure is F.SLOW_GREETING
    assert process.returncode == doc["exit_code"] == first_failure.exit_code == ExitCode.PROTOCOL
    assert sum(i["status"] == "failed" for i in inboxes) == INBOXES // 5
    assert {kind for i in range(INBOXES) for kind in plan(i).values()} == set(KINDS)
