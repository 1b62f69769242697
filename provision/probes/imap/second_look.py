"""The IMAP stage's credential-free second looks, and what a failed step means after them.

When the TLS handshake fails, the greeting is a TLS record, or no greeting comes, the
port may speak the other TLS mode: a second connection, without credentials, reads
its greeting in that mode (:func:`other_mode_greeting`) and the failure says what the port really
speaks and which setting to change (:func:`mismatch`). Used by :mod:`.session`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from provision.probes._scrub import scrub
from provision.probes._steps import StepTimeout
from provision.probes.imap.classify import (
    classify_greeting,
    service_of,
    show_greeting,
    timeout_failure,
    tls_hint,
    wrong_service,
)
from provision.probes.imap.connection import Greeting, read_greeting
from provision.results import Failure, FailureClass
from provision.tls_failures import classify_tls_error

if TYPE_CHECKING:
    from provision.probes.imap.session import ImapRun

__all__ = [
    "greeting_failure",
    "greeting_timeout",
    "mismatch",
    "other_mode_greeting",
    "tls_failure",
]


async def other_mode_greeting(run: ImapRun, *, secure: bool) -> Greeting | None:
    """Read the greeting in the other TLS mode, without credentials; ``None`` if none."""
    cap = min(run.options.step_timeout, run.rec.remaining())
    if run.peer is None or cap <= 0:
        return None
    try:
        async with asyncio.timeout(cap):
            return await read_greeting(*run.peer, secure=secure)
    except (TimeoutError, OSError):
        return None


async def tls_failure(run: ImapRun, exc: OSError) -> Failure:
    imap = run.imap
    failure = classify_tls_error(exc, server=imap.server)
    if failure is None:
        return Failure(
            FailureClass.RESET,
            "the connection failed during the TLS handshake "
            f"({exc.strerror or str(exc) or type(exc).__name__})",
            f"check imap.server and imap.port ({imap.port}); port 993 speaks TLS",
            "imap.port",
        )
    if failure.cls is not FailureClass.TLS_ON_PLAINTEXT_PORT:
        return Failure(failure.cls, failure.message, tls_hint(failure.cls), "imap.port")
    confirm = await other_mode_greeting(run, secure=False)
    return mismatch(run, FailureClass.TLS_ON_PLAINTEXT_PORT, failure.message, confirm, in_tls=False)


async def greeting_failure(run: ImapRun, greeting: Greeting) -> Failure:
    imap = run.imap
    if greeting.kind == "tls-record" and not imap.secure:
        confirm = await other_mode_greeting(run, secure=True)
        text = "the server answered with a TLS record instead of an IMAP greeting"
        return mismatch(run, FailureClass.PLAINTEXT_ON_TLS_PORT, text, confirm, in_tls=True)
    if greeting.kind == "closed" and not greeting.data and not imap.secure:
        confirm = await other_mode_greeting(run, secure=True)
        if confirm is not None and confirm.kind == "line":
            text = "the server closed the connection without a greeting"
            return mismatch(run, FailureClass.PLAINTEXT_ON_TLS_PORT, text, confirm, in_tls=True)
    return classify_greeting(greeting, imap)


async def greeting_timeout(run: ImapRun, exc: StepTimeout, partial: bytes) -> Failure:
    imap = run.imap
    if exc.deadline:
        return timeout_failure(exc, run.imap)
    if partial:
        shown = scrub(partial.decode("utf-8", "replace"), imap.password, limit=80)
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the greeting never ended: {len(partial)} bytes without a line end within "
            f"{exc.cap:.1f} s ('{shown}')",
            f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
            "imap.port",
        )
    if not imap.secure:
        # Plaintext to an implicit-TLS port hangs: the server waits for a ClientHello
        # (probe-anchors.md §3 row 9). Confirm with TLS before saying so.
        if run.early_confirm is not None:
            confirm = await run.early_confirm
        else:
            confirm = await other_mode_greeting(run, secure=True)
        if confirm is not None and confirm.kind == "line":
            text = f"no greeting within {exc.cap:.1f} s in plaintext"
            return mismatch(run, FailureClass.PLAINTEXT_ON_TLS_PORT, text, confirm, in_tls=True)
    return Failure(
        FailureClass.SLOW_GREETING,
        f"the server accepted the connection but sent no greeting within {exc.cap:.1f} s"
        + ("" if imap.secure else " (and none over TLS either)"),
        "the server is overloaded or this port is not IMAP; Rocket.Chat gives up 5 s "
        f"after connecting: check imap.server and imap.port ({imap.port})",
        "imap.port",
    )


def mismatch(
    run: ImapRun, failure: FailureClass, text: str, confirm: Greeting | None, *, in_tls: bool
) -> Failure:
    """A TLS-mode mismatch, confirmed (or not) by a greeting in the other mode."""
    imap = run.imap
    mode = "implicit-tls" if in_tls else "plaintext"
    if confirm is not None and confirm.ok:
        run.facts["confirmed_mode"] = mode
        shown = show_greeting(confirm, imap.password)
        if in_tls:
            hint = f"port {imap.port} speaks TLS from the first byte: set imap.secure: true"
        else:
            hint = (
                f"port {imap.port} speaks plaintext: set imap.secure: false "
                "(or better use 993 with secure: true)"
            )
        how = "over TLS" if in_tls else "in plaintext"
        return Failure(failure, f"{text}; {how} it greets with '{shown}'", hint, "imap.secure")
    if confirm is not None and confirm.kind == "line":
        service = service_of(confirm.data)
        if service is not None:
            run.facts["confirmed_mode"] = mode
            return wrong_service(service, confirm, imap, how="over TLS" if in_tls else "")
    run.facts["confirmed_mode"] = None
    other = "TLS" if in_tls else "plaintext"
    if in_tls:
        hint = (
            f"port {imap.port} seems to expect TLS (a {other} retry was not answered); "
            "use imap.secure: true with port 993"
        )
    else:
        hint = (
            f"port {imap.port} does not speak TLS (a {other} retry was not answered); "
            "use port 993 with imap.secure: true"
        )
    return Failure(failure, text, hint, "imap.secure")
