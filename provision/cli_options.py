"""The command line's shared options: one declaration each, and the ``check``/``set`` pair's
common set (``Run``), given to a command by :func:`shared_options`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "AllowHttpOpt",
    "CaFileOpt",
    "FilesArg",
    "EveryOpt",
    "MetricsOpt",
    "ServeOpt",
    "Run",
    "ServerOpt",
    "TimeoutOpt",
    "TwoFactorOpt",
    "VerboseOpt",
    "shared_options",
]

FilesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Inbox files (YAML or JSON); '-' reads standard input.",
        show_default=False,
        metavar="FILE",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Text: show only inboxes that failed or warned, then the summary."
    ),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Warnings fail the run.")]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout", min=0.1, metavar="SECONDS", help="Overall deadline for the run, in seconds."
    ),
]
StepTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--step-timeout",
        min=0.05,
        metavar="SECONDS",
        help="Cap on any single network step, in seconds.",
    ),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, metavar="N", help="Inboxes probed at once.")
]
CaFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        metavar="PATH",
        help="Extra CA certificates (PEM) trusted in addition to the system store.",
        show_default=False,
    ),
]
EhloOpt = Annotated[
    str | None,
    typer.Option("--ehlo-name", metavar="NAME", help="Name sent in SMTP EHLO.", show_default=False),
]
NoVerifyOpt = Annotated[
    bool,
    typer.Option(
        "--smtp-no-verify",
        help="Do not verify SMTP certificates (Rocket.Chat does; the report shows this).",
    ),
]
SandboxOpt = Annotated[
    bool,
    typer.Option(
        "--sandbox",
        help="Start the embedded local mail servers (and, for set, a Rocket.Chat double) "
        "and use their inboxes (no files needed).",
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log provision's steps to stderr.")
]
JunitOpt = Annotated[
    Path | None,
    typer.Option(
        "--junit",
        metavar="FILE",
        help="Also write a JUnit XML report to FILE (one testcase per inbox and stage).",
        show_default=False,
    ),
]
CertDaysOpt = Annotated[
    int,
    typer.Option(
        "--cert-days",
        min=0,
        metavar="N",
        help="Warn when a certificate (SMTP or IMAP) expires within N days.",
    ),
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """The inputs and options ``check`` and ``set`` share."""

    files: list[str] | None
    json_output: bool
    quiet: bool
    strict: bool
    timeout: float
    step_timeout: float
    concurrency: int
    ca_file: Path | None
    ehlo_name: str | None
    smtp_no_verify: bool
    sandbox: bool
    verbose: bool
    junit: Path | None
    cert_days: int = 21


def shared_options(*, timeout: float) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the shared inputs: files first, its own options, then the shared ones.

    Typer has no option groups; this declares them once. The command takes a ``Run``
    as its first argument and its own options after it.
    """
    shared: list[tuple[str, Any, Any]] = [
        ("json_output", JsonOpt, False),
        ("quiet", QuietOpt, False),
        ("strict", StrictOpt, False),
        ("timeout", TimeoutOpt, timeout),
        ("step_timeout", StepTimeoutOpt, 10.0),
        ("concurrency", ConcurrencyOpt, 10),
        ("ca_file", CaFileOpt, None),
        ("ehlo_name", EhloOpt, None),
        ("smtp_no_verify", NoVerifyOpt, False),
        ("sandbox", SandboxOpt, False),
        ("verbose", VerboseOpt, False),
        ("junit", JunitOpt, None),
        ("cert_days", CertDaysOpt, 21),
    ]
    keyword = inspect.Parameter.KEYWORD_ONLY
    names = [f.name for f in fields(Run)]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
        params = [
            inspect.Parameter("files", keyword, default=None, annotation=FilesArg),
            *(p.replace(kind=keyword) for p in own),
            *(inspect.Parameter(n, keyword, default=d, annotation=a) for n, a, d in shared),
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            run = Run(**{name: kwargs.pop(name) for name in names})
            command(run, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return wrapper

    return decorate


AllowHttpOpt = Annotated[
    bool,
    typer.Option("--allow-http", help="Allow plain HTTP to a non-loopback Rocket.Chat."),
]
TwoFactorOpt = Annotated[
    str | None,
    typer.Option(
        "--2fa-code",
        metavar="CODE",
        help="2FA code for a password login (or ROCKETCHAT_2FA_CODE).",
        show_default=False,
    ),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="ROCKETCHAT_URL",
        metavar="URL",
        help="Rocket.Chat base URL (or ROCKETCHAT_URL).",
        show_default=False,
    ),
]

MetricsOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics",
        metavar="FILE",
        help="Also write Prometheus metrics to FILE, atomically (for node_exporter's "
        "textfile collector: name it *.prom).",
        show_default=False,
    ),
]
ServeOpt = Annotated[
    str | None,
    typer.Option(
        "--serve",
        metavar="ADDR:PORT",
        help="Run as a Prometheus exporter until SIGTERM: serve the last round's metrics "
        "at http://ADDR:PORT/metrics and run a round every --every.",
        show_default=False,
    ),
]
EveryOpt = Annotated[
    str | None,
    typer.Option(
        "--every",
        metavar="DURATION",
        help="With --serve: time from one round's start to the next (30s, 5m, 1h; "
        "default 5m). Rounds never overlap.",
        show_default=False,
    ),
]

# Beyond the login (issue 11): check and set take --envelope, check the round trip;
# ``provision audit`` can reuse them. They land in ProbeOptions (see _probe_extras in cli).
EnvelopeOpt = Annotated[
    bool,
    typer.Option(
        "--envelope",
        help="After SMTP AUTH, MAIL FROM and RCPT TO the inbox address, then RSET: may this "
        "login send as the inbox? Nothing is sent.",
    ),
]
RoundTripOpt = Annotated[
    bool,
    typer.Option(
        "--round-trip",
        help="Send one tagged message from the inbox address to itself, wait until IMAP "
        "finds it, report the delivery time, then delete it.",
    ),
]
RoundTripTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--round-trip-timeout",
        min=0.1,
        metavar="SECONDS",
        help="Longest wait for the --round-trip message (the --timeout deadline still applies).",
    ),
]
