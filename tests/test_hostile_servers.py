"""Hostile mail servers: every step of SMTP and IMAP x every fault (issue 5, item 1).

The scripted servers of ``tests/servers`` answer one step with a fault from
``tests/servers/faults.py`` and everything else like a healthy server: the connection
closed or reset, silence, garbage and binary, a 10 MB line, a line that never ends, a
storm of short lines, an IMAP literal of 10 MB, a reply trickled one byte at a time,
unsolicited lines, a working STARTTLS or one that breaks in the handshake.

For every case the probe is called directly (no pipeline guard around it) and:

* it returns: an ``asyncio.timeout`` guard fails the test instead of hanging it, and
  the time taken is within the caps (a silent step, one credential-free confirmation
  and the closing grace);
* the stage failed with the class the cause calls for (pinned per case, never
  ``internal-error``), with a message and a hint, or passed where the fault is harmless
  (a trickled reply, anything after LOGOUT/QUIT);
* no exception escapes, the password shows nowhere in the result, and SMTP never got
  more than one AUTH nor any MAIL;
* memory stays bounded: for the flood faults the peak of traced allocations during the
  probe (server included) stays under :data:`MEMORY`, far below the 10 MB sent.

Property-based tests at the end draw the replies with hypothesis and check the same
invariants, one server per test function.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.imap import probe_imap
from provision.probes.smtp import probe_smtp, secret_forms
from provision.results import FailureClass, StageResult, Status
from provision.sandbox.ca import SandboxCA
from tests.servers import imap_misbehaving as imap_servers
from tests.servers import smtp_misbehaving as smtp_servers
from tests.servers.faults import (
    DROP,
    RESET,
    SILENT,
    Await,
    Flood,
    PerCall,
    Reply,
    Seq,
    StartTls,
    Trickle,
)

F = FailureClass
USER = "hostile@example.test"
PASSWORD = "Canary-h0stile-9d2e"
CAP = 0.3  # step cap: silent servers cost this much
BUDGET = 3.0  # the run's deadline, handed to the probe
GUARD = BUDGET + 2.0  # what the pipeline would wait before abandoning a probe
SLOWEST = 3 * CAP + 1.2  # a silent step, a confirmation on a second connection, closing
MEMORY = 5 * 2**20  # traced peak allowed while 10 MB arrive
MB10 = 10 * 2**20

Probe = Callable[..., Awaitable[StageResult]]


# --------------------------------------------------------------------------- faults

#: Faults that send megabytes; their cases also measure memory.
FLOODS = frozenset({"huge-line", "endless-line", "line-storm", "literal"})
#: IMAP literal announced as 10 MB, sent as 1 KiB lines (so the total cap decides).
LITERAL = Seq(
    b"* 1 FETCH (BODY[] {%d}\r\n" % MB10,
    Flood(b"", MB10, end=b")\r\n", fill=b"y" * 1022 + b"\r\n"),
)
UNSOLICITED = {
    "smtp": b"250 unsolicited\r\n",
    "imap": b"* 7 EXISTS\r\n* OK [ALERT] maintenance tonight\r\n* 1 RECENT\r\n",
}
STORM_LINE = {"smtp": b"250-storm\r\n", "imap": b"* 1 EXISTS\r\n"}

SMTP_FAULTS = (
    "close",
    "reset",
    "silent",
    "garbage",
    "binary",
    "huge-line",
    "endless-line",
    "line-storm",
    "trickle",
    "unsolicited",
)
IMAP_FAULTS = (*SMTP_FAULTS, "literal")


def fault(name: str, protocol: str, healthy: bytes, head: bytes) -> Reply:
    """The reply that commits fault ``name`` where ``healthy`` would have been sent.

    Args:
        name: the fault.
        protocol: ``smtp`` or ``imap`` (unsolicited lines and storms differ).
        healthy: what a healthy server sends at this step.
        head: the start of a plausible line at this step (a flood begins with it).
    """
    replies: dict[str, Reply] = {
        "close": DROP,
        "reset": RESET,
        "silent": SILENT,
        "garbage": b"what do you mean?\r\n",
        "binary": b"\x00\x01\xfe\xff\x80\x1b[31m\r\n",
        "huge-line": Flood(head, MB10),
        "endless-line": Flood(head, None),
        "line-storm": Flood(b"", MB10, fill=STORM_LINE[protocol]),
        "literal": LITERAL,
        "trickle": Trickle(healthy),
    }
    if name == "unsolicited":
        # IMAP: untagged lines before the reply; SMTP: a reply nobody asked for after it.
        unsolicited = UNSOLICITED[protocol]
        return unsolicited + healthy if protocol == "imap" else healthy + unsolicited
    return replies[name]


# --------------------------------------------------------------------------- expectations

PE = F.PROTOCOL_ERROR
_MALFORMED = dict.fromkeys(("garbage", "binary", "huge-line", "endless-line", "line-storm"), PE)

#: SMTP: the class per step and fault; ``None`` means the probe passes.
SMTP_EXPECTED: dict[str, dict[str, FailureClass | None]] = {
    # A reply after the greeting is taken as EHLO's, as nodemailer does (its response
    # queue pairs them in order): a bare "250" advertises no AUTH.
    "greeting": {
        **_MALFORMED,
        "close": F.RESET,
        "reset": F.RESET,
        "silent": F.SLOW_GREETING,
        "trickle": None,
        "unsolicited": F.AUTH_NOT_ADVERTISED,
    },
    "EHLO": {
        **_MALFORMED,
        "close": PE,
        "reset": PE,
        "silent": F.TIMEOUT,
        "trickle": None,
        "unsolicited": PE,
    },
    "STARTTLS": {
        **_MALFORMED,
        "close": F.RESET,
        "reset": F.RESET,
        "silent": F.TIMEOUT,
        "trickle": None,
        "unsolicited": None,
    },
    # Silence after AUTH is how Exchange Online refuses credentials.
    "AUTH": {
        **_MALFORMED,
        "close": PE,
        "reset": PE,
        "silent": F.AUTH_FAILED,
        "trickle": None,
        "unsolicited": None,
    },
    # Logged in already: nothing after it fails the stage (Rocket.Chat never waits for QUIT).
    "QUIT": dict.fromkeys(SMTP_FAULTS, None),
}
SMTP_EXPECTED["EHLO#2"] = SMTP_EXPECTED["EHLO"]

_IMAP_COMMAND: dict[str, FailureClass | None] = {
    **_MALFORMED,
    "close": F.RESET,
    "reset": F.RESET,
    "silent": F.TIMEOUT,
    "literal": PE,
    "trickle": None,
    "unsolicited": None,
}
IMAP_EXPECTED: dict[str, dict[str, FailureClass | None]] = {
    # Nothing may come before the greeting (RFC 3501 §7.1): unsolicited lines are an error.
    "greeting": {
        **dict.fromkeys(IMAP_FAULTS, PE),
        "close": F.RESET,
        "reset": F.RESET,
        "silent": F.SLOW_GREETING,
        "trickle": None,
    },
    "CAPABILITY": _IMAP_COMMAND,
    "LOGIN": _IMAP_COMMAND,
    "SELECT": _IMAP_COMMAND,
    "SEARCH": _IMAP_COMMAND,
    # Rocket.Chat never logs out: LOGOUT is courtesy and never fails the stage.
    "LOGOUT": dict.fromkeys(IMAP_FAULTS, None),
}

SMTP_HEADS = {
    "greeting": b"220 ",
    "EHLO": b"250-",
    "EHLO#2": b"250-",
    "STARTTLS": b"220 ",
    "AUTH": b"535 ",
    "QUIT": b"221 ",
}
IMAP_HEADS = {
    "greeting": b"* OK ",
    "CAPABILITY": b"* CAPABILITY ",
    "LOGIN": b"* OK [ALERT] ",
    "SELECT": b"* FLAGS (",
    "SEARCH": b"* SEARCH ",
    "LOGOUT": b"* BYE ",
}

#: Where each mode's faults go: plaintext, STARTTLS (a working upgrade), implicit TLS.
SMTP_MODES = {
    "plain": ("greeting", "EHLO", "AUTH", "QUIT"),
    "starttls": ("STARTTLS", "EHLO#2", "AUTH"),
    "implicit": ("greeting", "AUTH"),
}
IMAP_MODES = {
    "plain": ("greeting", "CAPABILITY", "LOGIN", "SELECT", "SEARCH", "LOGOUT"),
    "implicit": ("greeting", "LOGIN", "SEARCH"),
}

# TLS handshakes that go wrong: the server waits for the ClientHello, then misbehaves.
_HALF_SERVER_HELLO = b"\x16\x03\x03\x00\x50\x02\x00\x00\x4c\x03\x03"
TLS_FAULTS: dict[str, Reply] = {
    "close-at-once": DROP,
    "close-after-hello": Await(DROP),
    "reset-after-hello": Await(RESET),
    "silent": SILENT,
    "plaintext-answer": Await(b"what do you mean?\r\n"),
    "endless-plaintext": Await(Flood(b"", None)),
    "handshake-failure-alert": Await(b"\x15\x03\x03\x00\x02\x02\x28"),
    "half-server-hello-then-reset": Await(Seq(_HALF_SERVER_HELLO, RESET)),
    "half-server-hello-then-silent": Await(Seq(_HALF_SERVER_HELLO, SILENT)),
    "trickled-bad-record": Await(Trickle(b"\x16\x03\x03\x00\x05hello")),
}
_TLS_COMMON: dict[str, FailureClass] = {
    "close-at-once": F.RESET,
    "close-after-hello": F.RESET,
    "reset-after-hello": F.RESET,
    "silent": F.TIMEOUT,
    "handshake-failure-alert": F.TLS_PROTOCOL,
    "half-server-hello-then-reset": F.RESET,
    "half-server-hello-then-silent": F.TIMEOUT,
    "trickled-bad-record": F.TLS_ERROR,
}
#: Plaintext instead of a ServerHello: on an implicit-TLS port the port speaks plaintext;
#: after STARTTLS was accepted the server's STARTTLS is broken.
TLS_EXPECTED: dict[str, dict[str, FailureClass]] = {
    "smtp-implicit": {
        **_TLS_COMMON,
        "plaintext-answer": F.TLS_ON_PLAINTEXT_PORT,
        "endless-plaintext": F.TLS_ON_PLAINTEXT_PORT,
    },
    "smtp-starttls": {
        **_TLS_COMMON,
        "plaintext-answer": F.TLS_ERROR,
        "endless-plaintext": F.TLS_ERROR,
    },
    "imap-implicit": {
        **_TLS_COMMON,
        "plaintext-answer": F.TLS_ON_PLAINTEXT_PORT,
        "endless-plaintext": F.TLS_ON_PLAINTEXT_PORT,
    },
}


# --------------------------------------------------------------------------- harness


def make_inbox(smtp_port: int, imap_port: int, *, secure: bool) -> Inbox:
    return Inbox(
        name="hostile",
        email=USER,
        smtp=SmtpSettings(
            server="127.0.0.1",
            port=smtp_port,
            username=USER,
            password=Secret(PASSWORD),
            secure=secure,
        ),
        imap=ImapSettings(
            server="127.0.0.1",
            port=imap_port,
            username=USER,
            password=Secret(PASSWORD),
            secure=secure,
        ),
    )


@dataclass
class Outcome:
    result: StageResult
    elapsed: float
    peak: int


@contextmanager
def traced_peak(enabled: bool) -> Iterator[list[int]]:
    """Measure the peak of traced allocations inside the block (0 when not enabled)."""
    box = [0]
    if not enabled:
        yield box
        return
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield box
    finally:
        box[0] = tracemalloc.get_traced_memory()[1] - base
        if not was_tracing:
            tracemalloc.stop()


async def run_probe(
    probe: Probe, port: int, *, secure: bool, ca_file: Path, cap: float = CAP, memory: bool
) -> Outcome:
    """One probe call under the guard, timed, with the memory peak when asked."""
    options = ProbeOptions(step_timeout=cap, ca_file=ca_file)
    inbox = make_inbox(port, port, secure=secure)
    deadline = asyncio.get_running_loop().time() + BUDGET
    with traced_peak(memory) as peak:
        started = time.perf_counter()
        async with asyncio.timeout(GUARD):
            result = await probe(inbox, options, deadline=deadline)
        elapsed = time.perf_counter() - started
    return Outcome(result, elapsed, peak[0])


def check_invariants(outcome: Outcome, expected: FailureClass | None, *, slowest: float) -> None:
    """What every hostile case must satisfy, whatever the fault."""
    result = outcome.result
    shown = json.dumps(result.to_json())
    assert outcome.elapsed < slowest, (outcome.elapsed, shown)
    if expected is None:
        assert result.status in (Status.PASSED, Status.WARNING), shown
        assert result.failure is None, shown
    else:
        assert result.status is Status.FAILED, shown
        assert result.failure is expected, shown
        assert result.message, shown
        assert result.hint, shown
    assert result.failure is not F.INTERNAL, shown
    for form in secret_forms(USER, PASSWORD):
        assert form not in shown


@pytest.fixture(scope="module")
def tls_context(sandbox_ca: SandboxCA) -> ssl.SSLContext:
    return sandbox_ca.server_context()


@pytest.fixture
async def servers() -> AsyncIterator[list[Any]]:
    """Scripted servers started by a test, closed after it."""
    started: list[Any] = []
    yield started
    for server in started:
        await server.close()


# --------------------------------------------------------------------------- SMTP


def smtp_script(mode: str, step: str, name: str, context: ssl.SSLContext) -> smtp_servers.Script:
    """A healthy server for ``mode`` whose reply at ``step`` commits fault ``name``."""
    replies: dict[str, Reply | PerCall] = {}
    greeting: Reply = smtp_servers.GREETING
    starttls_reply = b"220 2.0.0 Ready to start TLS\r\n"
    if mode == "starttls":
        replies["EHLO"] = PerCall(smtp_servers.EHLO_STARTTLS, smtp_servers.EHLO_AUTH)
        replies["STARTTLS"] = StartTls(starttls_reply, context)
    healthy = {
        "greeting": smtp_servers.GREETING,
        "EHLO": smtp_servers.EHLO_AUTH,
        "EHLO#2": smtp_servers.EHLO_AUTH,
        "STARTTLS": starttls_reply,
        "AUTH": b"235 2.7.0 Authentication successful\r\n",
        "QUIT": b"221 2.0.0 Bye\r\n",
    }[step]
    reply = fault(name, "smtp", healthy, SMTP_HEADS[step])
    if step == "greeting":
        greeting = reply
    elif step == "STARTTLS":
        # Harmless faults still have to upgrade afterwards.
        replies["STARTTLS"] = (
            Seq(reply, StartTls(b"", context)) if isinstance(reply, bytes | Trickle) else reply
        )
    elif step == "EHLO#2":
        replies["EHLO"] = PerCall(smtp_servers.EHLO_STARTTLS, reply)
    else:
        replies[step] = reply
    return smtp_servers.Script(greeting=greeting, replies=replies)


SMTP_CASES = [
    pytest.param(mode, step, name, id=f"{mode}-{step}-{name}")
    for mode, steps in SMTP_MODES.items()
    for step in steps
    for name in SMTP_FAULTS
]


@pytest.mark.parametrize(("mode", "step", "name"), SMTP_CASES)
async def test_smtp_fault_at_every_step(
    servers: list[Any],
    tls_context: ssl.SSLContext,
    ca_file: Path,
    mode: str,
    step: str,
    name: str,
) -> None:
    script = smtp_script(mode, step, name, tls_context)
    server = await smtp_servers.start_scripted_server(
        script, tls_context=tls_context if mode == "implicit" else None
    )
    servers.append(server)

    outcome = await run_probe(
        probe_smtp, server.port, secure=mode == "implicit", ca_file=ca_file, memory=name in FLOODS
    )

    check_invariants(outcome, SMTP_EXPECTED[step][name], slowest=SLOWEST)
    assert outcome.peak < MEMORY, outcome.peak
    assert server.verbs().count("AUTH") <= 1
    assert not {"MAIL", "RCPT", "DATA"} & set(server.verbs())


TLS_CASES = [
    pytest.param(where, name, id=f"{where}-{name}") for where in TLS_EXPECTED for name in TLS_FAULTS
]


@pytest.mark.parametrize(("where", "name"), TLS_CASES)
async def test_tls_handshake_faults(
    servers: list[Any], ca_file: Path, where: str, name: str
) -> None:
    reply = TLS_FAULTS[name]
    if where == "smtp-implicit":
        server: Any = await smtp_servers.start_scripted_server(smtp_servers.Script(greeting=reply))
        probe, secure = probe_smtp, True
    elif where == "smtp-starttls":
        script = smtp_servers.Script(
            replies={
                "EHLO": smtp_servers.EHLO_STARTTLS,
                "STARTTLS": Seq(b"220 2.0.0 Ready to start TLS\r\n", reply),
            }
        )
        server = await smtp_servers.start_scripted_server(script)
        probe, secure = probe_smtp, False
    else:
        server = await imap_servers.start_scripted_server(imap_servers.Script(greeting=reply))
        probe, secure = probe_imap, True
    servers.append(server)

    outcome = await run_probe(probe, server.port, secure=secure, ca_file=ca_file, memory=False)

    check_invariants(outcome, TLS_EXPECTED[where][name], slowest=SLOWEST)
    assert outcome.result.steps[-1].step.value in ("tls", "starttls")
    if where.startswith("smtp"):
        assert "AUTH" not in server.verbs()
    else:
        assert "LOGIN" not in server.commands


# --------------------------------------------------------------------------- IMAP


def imap_script(step: str, name: str) -> imap_servers.Script:
    """A healthy IMAP server whose reply at ``step`` commits fault ``name``."""
    # Without capabilities in the greeting the probe sends CAPABILITY (node-imap does).
    greeting = b"* OK ready\r\n" if step == "CAPABILITY" else imap_servers.GREETING
    healthy = greeting if step == "greeting" else imap_servers.DEFAULT_REPLIES[step]
    assert isinstance(healthy, bytes)
    reply = fault(name, "imap", healthy, IMAP_HEADS[step])
    if step == "greeting":
        return imap_servers.Script(greeting=reply)
    return imap_servers.Script(greeting=greeting, replies={step: reply})


IMAP_CASES = [
    pytest.param(mode, step, name, id=f"{mode}-{step}-{name}")
    for mode, steps in IMAP_MODES.items()
    for step in steps
    for name in IMAP_FAULTS
]


@pytest.mark.parametrize(("mode", "step", "name"), IMAP_CASES)
async def test_imap_fault_at_every_step(
    servers: list[Any],
    tls_context: ssl.SSLContext,
    ca_file: Path,
    mode: str,
    step: str,
    name: str,
) -> None:
    server = await imap_servers.start_scripted_server(
        imap_script(step, name), tls_context=tls_context if mode == "implicit" else None
    )
    servers.append(server)

    outcome = await run_probe(
        probe_imap, server.port, secure=mode == "implicit", ca_file=ca_file, memory=name in FLOODS
    )

    check_invariants(outcome, IMAP_EXPECTED[step][name], slowest=SLOWEST)
    assert outcome.peak < MEMORY, outcome.peak
    assert server.commands.count("LOGIN") <= 1


# --------------------------------------------------------------------------- named cases

MULTILINE_534 = (
    b"534-5.7.9 Application-specific password required. Learn more at\r\n"
    b"534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor\r\n"
)


@pytest.mark.parametrize(
    ("replies", "expected", "words"),
    [
        pytest.param(
            {"AUTH": b"502 5.5.1 Command not implemented\r\n"},
            F.NO_COMMON_MECHANISM,
            "although it advertised it",
            id="auth-advertised-then-502",
        ),
        pytest.param(
            {"AUTH": b"503 5.5.1 Error: authentication not enabled\r\n"},
            F.NO_COMMON_MECHANISM,
            "although it advertised it",
            id="auth-advertised-then-503",
        ),
        pytest.param(
            {"AUTH": b"500 5.5.2 Syntax error, command unrecognized\r\n"},
            F.NO_COMMON_MECHANISM,
            "although it advertised it",
            id="auth-advertised-then-500",
        ),
        pytest.param(
            {"EHLO": smtp_servers.EHLO_STARTTLS, "STARTTLS": b"502 5.5.1 Not implemented\r\n"},
            F.STARTTLS_REFUSED,
            "advertised STARTTLS but refused it",
            id="starttls-advertised-then-502",
        ),
        pytest.param(
            {"AUTH": Trickle(MULTILINE_534)},
            F.APP_PASSWORD_REQUIRED,
            "534",
            id="multi-line-534-one-byte-at-a-time",
        ),
        pytest.param(
            {"AUTH": Trickle(MULTILINE_534, size=7)},
            F.APP_PASSWORD_REQUIRED,
            "534",
            id="multi-line-534-seven-bytes-at-a-time",
        ),
        pytest.param(
            {"EHLO": Trickle(smtp_servers.EHLO_AUTH, size=3), "AUTH": b"535 5.7.8 no\r\n"},
            F.AUTH_FAILED,
            "535",
            id="multi-line-ehlo-three-bytes-at-a-time",
        ),
        pytest.param(
            {"AUTH": Seq(b"454 4.7.0 Too many login attempts", Trickle(b"\r\n"))},
            F.THROTTLED,
            "Too many",
            id="line-end-in-its-own-segment",
        ),
    ],
)
async def test_smtp_named_hostile_cases(
    servers: list[Any],
    ca_file: Path,
    replies: dict[str, Reply],
    expected: FailureClass,
    words: str,
) -> None:
    server = await smtp_servers.start_scripted_server(smtp_servers.Script(replies=dict(replies)))
    servers.append(server)

    outcome = await run_probe(probe_smtp, server.port, secure=False, ca_file=ca_file, memory=False)

    check_invariants(outcome, expected, slowest=SLOWEST)
    assert words in (outcome.result.message or "")
    assert server.verbs().count("AUTH") <= 1


async def test_smtp_starttls_then_no_auth_over_tls(
    servers: list[Any], tls_context: ssl.SSLContext, ca_file: Path
) -> None:
    bare = b"250-scripted.test\r\n250 HELP\r\n"
    script = smtp_servers.Script(
        replies={
            "EHLO": PerCall(smtp_servers.EHLO_STARTTLS, bare),
            "STARTTLS": StartTls(b"220 2.0.0 Ready\r\n", tls_context),
        }
    )
    server = await smtp_servers.start_scripted_server(script)
    servers.append(server)

    outcome = await run_probe(probe_smtp, server.port, secure=False, ca_file=ca_file, memory=False)

    check_invariants(outcome, F.AUTH_NOT_ADVERTISED, slowest=SLOWEST)
    assert "even over TLS" in (outcome.result.message or "")
    assert server.verbs() == ["EHLO", "STARTTLS", "EHLO"]


@pytest.mark.parametrize(
    ("script", "expected", "words"),
    [
        pytest.param(
            imap_servers.Script(
                greeting=imap_servers.GREETING + b"* 5 EXISTS\r\n* OK [ALERT] hello\r\n"
            ),
            None,
            "",
            id="unsolicited-lines-right-after-the-greeting",
        ),
        pytest.param(
            imap_servers.Script(replies={"LOGIN": b"{tag} BAD Unknown command LOGIN\r\n"}),
            F.PROTOCOL_ERROR,
            "BAD",
            id="login-not-implemented",
        ),
        pytest.param(
            imap_servers.Script(replies={"SELECT": b"* BYE [UNAVAILABLE] shutting down\r\n"}),
            F.RESET,
            "shutting down",
            id="bye-instead-of-select",
        ),
        pytest.param(
            imap_servers.Script(
                replies={
                    "LOGIN": Trickle(
                        b"{tag} NO [ALERT] Application-specific password required: "
                        b"https://support.google.com/accounts/answer/185833 (Failure)\r\n"
                    )
                }
            ),
            F.APP_PASSWORD_REQUIRED,
            "Application-specific",
            id="login-refusal-one-byte-at-a-time",
        ),
        pytest.param(
            imap_servers.Script(
                replies={
                    "SELECT": Trickle(
                        b"* FLAGS (\\Seen)\r\n* 3 EXISTS\r\n{tag} OK [READ-WRITE] done\r\n", size=5
                    )
                }
            ),
            None,
            "",
            id="select-five-bytes-at-a-time",
        ),
        pytest.param(
            imap_servers.Script(replies={"LOGIN": b"+ send more\r\n{tag} OK done\r\n"}),
            None,
            "",
            id="continuation-nobody-asked-for",
        ),
        pytest.param(
            imap_servers.Script(replies={"SEARCH": b"{tag} ok lower-case is not IMAP\r\n"}),
            F.PROTOCOL_ERROR,
            "not an IMAP response line",
            id="garbage-that-looks-tagged",
        ),
    ],
)
async def test_imap_named_hostile_cases(
    servers: list[Any],
    ca_file: Path,
    script: imap_servers.Script,
    expected: FailureClass | None,
    words: str,
) -> None:
    server = await imap_servers.start_scripted_server(script)
    servers.append(server)

    outcome = await run_probe(probe_imap, server.port, secure=False, ca_file=ca_file, memory=False)

    check_invariants(outcome, expected, slowest=SLOWEST)
    assert words in (outcome.result.message or "")


# --------------------------------------------------------------------------- properties

PROPERTY_CAP = 0.15
PROPERTIES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b""])
junk = st.binary(max_size=60)
smtp_lines = st.builds(
    lambda code, sep, text, end: code + sep + text + end,
    st.sampled_from([b"220", b"221", b"235", b"250", b"334", b"421", b"454", b"502", b"535"])
    | st.integers(0, 999).map(lambda n: str(n).encode())
    | junk,
    st.sampled_from([b" ", b"-", b"", b"\t"]),
    junk | st.sampled_from([b"AUTH PLAIN LOGIN", b"STARTTLS", b"AUTH XOAUTH2", b"8BITMIME"]),
    line_ends,
)
imap_lines = st.builds(
    lambda start, text, end: start + text + end,
    st.sampled_from(
        [b"* ", b"{tag} ", b"+ ", b"* OK ", b"{tag} OK ", b"{tag} NO ", b"{tag} BAD ", b""]
    )
    | junk,
    st.sampled_from(
        [
            b"[CAPABILITY IMAP4rev1 LOGINDISABLED]",
            b"[READ-ONLY]",
            b"[ALERT] hi",
            b"CAPABILITY IMAP4rev1",
            b"BYE bye",
            b"3 EXISTS",
            b"SEARCH 1 2 3",
            b"{5}",
            b"{99999999}",
            b"[UNAVAILABLE]",
        ]
    )
    | junk,
    line_ends,
)


def drawn_reply(lines: st.SearchStrategy[bytes]) -> st.SearchStrategy[Reply]:
    """Random lines, sent whole or trickled, then maybe a close or a reset."""
    return st.builds(
        lambda parts, trickle, ending: Seq(
            Trickle(b"".join(parts), size=trickle) if trickle else b"".join(parts),
            *([ending] if ending is not None else []),
        ),
        st.lists(lines, min_size=1, max_size=6),
        st.sampled_from([0, 0, 1, 3, 7]),
        st.sampled_from([None, None, DROP, RESET]),
    )


@PROPERTIES
@given(
    step=st.sampled_from(["greeting", "EHLO", "STARTTLS", "AUTH", "QUIT"]),
    reply=drawn_reply(smtp_lines),
)
async def test_property_smtp_random_replies(
    servers: list[Any], ca_file: Path, step: str, reply: Reply
) -> None:
    if not servers:
        servers.append(await smtp_servers.start_scripted_server("healthy"))
    server: smtp_servers.ScriptedSmtpServer = servers[0]
    # STARTTLS is offered only when it is the step under test (the default refuses it).
    ehlo = smtp_servers.EHLO_STARTTLS if step == "STARTTLS" else smtp_servers.EHLO_AUTH
    if step == "greeting":
        server.script = smtp_servers.Script(greeting=reply)
    else:
        server.script = smtp_servers.Script(replies={"EHLO": ehlo, step: reply})
    server.commands.clear()

    outcome = await run_probe(
        probe_smtp, server.port, secure=False, ca_file=ca_file, cap=PROPERTY_CAP, memory=False
    )

    result = outcome.result
    check_invariants(outcome, result.failure, slowest=3 * PROPERTY_CAP + 1.2)
    assert step != "QUIT" or result.status is not Status.FAILED  # logged in already
    assert server.verbs().count("AUTH") <= 1
    assert not {"MAIL", "RCPT", "DATA"} & set(server.verbs())


@PROPERTIES
@given(
    step=st.sampled_from(["greeting", "CAPABILITY", "LOGIN", "SELECT", "SEARCH", "LOGOUT"]),
    reply=drawn_reply(imap_lines),
)
async def test_property_imap_random_replies(
    servers: list[Any], ca_file: Path, step: str, reply: Reply
) -> None:
    if not servers:
        servers.append(await imap_servers.start_scripted_server("healthy"))
    server: imap_servers.ScriptedImapServer = servers[0]
    greeting: Reply = b"* OK ready\r\n"  # no capabilities: CAPABILITY is always sent
    if step == "greeting":
        server.script = imap_servers.Script(greeting=reply)
    else:
        server.script = imap_servers.Script(greeting=greeting, replies={step: reply})
    server.commands.clear()

    outcome = await run_probe(
        probe_imap, server.port, secure=False, ca_file=ca_file, cap=PROPERTY_CAP, memory=False
    )

    result = outcome.result
    check_invariants(outcome, result.failure, slowest=3 * PROPERTY_CAP + 1.2)
    assert step != "LOGOUT" or result.status is not Status.FAILED  # everything was checked
    assert server.commands.count("LOGIN") <= 1
