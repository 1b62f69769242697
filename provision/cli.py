"""The ``provision`` command line: parse, call a command (``provision.commands``), render, exit.

Heavy modules (the probes, aiosmtplib, aioimaplib, httpx, the sandbox servers)
are imported inside the command bodies so that ``--help`` and ``--version`` stay
fast. Every outcome ends in a stated exit code (``provision.results.ExitCode``);
no traceback reaches the user (typer's locals display is off: it can show secrets).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from provision._version import __version__
from provision.cli_coerce import FastCommand, FastGroup
from provision.cli_help import command_help
from provision.cli_options import (
    AllowHttpOpt,
    CaFileOpt,
    CertDaysOpt,
    ConcurrencyOpt,
    EhloOpt,
    EnvelopeOpt,
    EveryOpt,
    JsonOpt,
    JunitOpt,
    MetricsOpt,
    NoVerifyOpt,
    QuietOpt,
    RoundTripOpt,
    RoundTripTimeoutOpt,
    Run,
    ServeOpt,
    ServerOpt,
    StepTimeoutOpt,
    StrictOpt,
    TimeoutOpt,
    TwoFactorOpt,
    VerboseOpt,
    shared_options,
)
from provision.errors import ConfigError, ConfigProblem
from provision.results import ExitCode

if TYPE_CHECKING:
    import logging

    from typer.models import CommandInfo

    from provision.commands.prune import PruneOptions
    from provision.errors import RocketChatCallError
    from provision.inbox import LoadResult
    from provision.models import ProbeOptions
    from provision.render.ci import CiOutputs
    from provision.results import Report
    from provision.rocketchat.credentials import Credentials
    from provision.sandbox.runner import Sandbox
    from provision.stopping import Stop

__all__ = ["app", "main"]

app = typer.Typer(
    cls=FastGroup,
    name="provision",
    help="Probe, then provision Rocket.Chat omnichannel email inboxes as code.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provision {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Probe, then provision Rocket.Chat omnichannel email inboxes as code.

    Exit codes: 0 ok, 2 bad input, 10 DNS, 11 connect, 12 TLS/certificate,
    13 protocol or TLS-mode mismatch, 14 authentication, 15 mailbox/sender,
    16 transient (4xx, throttling, timeouts), 17 discover found nothing usable, 18 drift,
    20 Rocket.Chat API; 129, 130, 143 stopped by SIGHUP, SIGINT, SIGTERM.
    """


@app.command(cls=FastCommand, **command_help("check"))
@shared_options(timeout=60.0)
def check(
    run: Run,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Check every input rule and log into nothing (no network; for pre-commit).",
        ),
    ] = False,
    envelope: EnvelopeOpt = False,
    round_trip: RoundTripOpt = False,
    round_trip_timeout: RoundTripTimeoutOpt = 60.0,
    metrics: MetricsOpt = None,
    serve: ServeOpt = None,
    every: EveryOpt = None,
) -> None:
    """Log into the SMTP and IMAP server of each inbox exactly as Rocket.Chat would."""
    if offline and run.sandbox:
        _usage_error("--offline checks inbox files; do not give --sandbox with it", run.json_output)
    if offline and (envelope or round_trip):
        _usage_error(
            "--offline logs into nothing; --envelope and --round-trip need the network",
            run.json_output,
        )
    extras = {
        "envelope": envelope,
        "round_trip": round_trip,
        "round_trip_timeout": round_trip_timeout,
    }
    if serve is not None or every is not None:
        if "-" in (run.files or []):
            _usage_error("--serve reads the inbox files each round: give files, not '-'", False)
        others = {"--offline": offline, "--metrics": metrics is not None}
        _watch(
            run,
            "check",
            serve,
            every,
            others,
            lambda o, stop: _check(run, _probe_extras(o, **extras), _silent_ci("check"), stop),
            validate=(lambda: _load_files(run.files or [])) if run.files else None,
        )
    options, ci = _start(run, "check", metrics=metrics)
    options = _probe_extras(options, **extras)
    from provision.stopping import handling_signals

    with handling_signals() as stop:
        work = _check_offline(run, options) if offline else _check(run, options, ci, stop)
        report = _run(work, run.json_output, ci, stop)
        _emit(report, run.json_output, code=_finish_ci(ci, report), quiet=run.quiet)


@app.command(name="set", cls=FastCommand, **command_help("set"))
@shared_options(timeout=120.0)
def set_command(
    run: Run,
    server: ServerOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Probe and print the plan; write nothing.")
    ] = False,
    send_test: Annotated[
        bool,
        typer.Option("--send-test", help="After a write, ask Rocket.Chat to send its test mail."),
    ] = False,
    wait_active: Annotated[
        float,
        typer.Option(
            "--wait-active",
            min=0,
            metavar="SECONDS",
            help="Re-read written inboxes this long; fail if Rocket.Chat switches one off.",
        ),
    ] = 0.0,
    allow_http: AllowHttpOpt = False,
    two_factor_code: TwoFactorOpt = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Afterwards delete the inboxes that are in none of the files (see README).",
        ),
    ] = False,
    prune_scope: Annotated[
        list[str] | None,
        typer.Option(
            "--prune-scope",
            metavar="DOMAIN",
            help="With --prune: delete only addresses in this domain (repeatable).",
            show_default=False,
        ),
    ] = None,
    max_delete: Annotated[
        int | None,
        typer.Option(
            "--max-delete",
            metavar="N",
            min=0,
            help="With --prune: more planned deletions than N is an error (default 5).",
            show_default=False,
        ),
    ] = None,
    envelope: EnvelopeOpt = False,
) -> None:
    """Probe each inbox, then create or update it on Rocket.Chat (only if every probe passed).

    Credentials come from the environment: ROCKETCHAT_USER_ID + ROCKETCHAT_AUTH_TOKEN
    (a personal access token), or ROCKETCHAT_USER + ROCKETCHAT_PASSWORD.
    """
    options, ci = _start(run, "set", server=server)
    options = _probe_extras(options, envelope=envelope)
    switches = {
        "allow_http": allow_http,
        "dry_run": dry_run,
        "send_test": send_test,
        "wait_active": wait_active,
        "prune": _prune_options(prune, prune_scope or [], max_delete, run.json_output),
    }
    from provision.stopping import handling_signals

    with handling_signals() as stop:
        coro = _set(run, server or "", two_factor_code, switches, options, ci, stop)
        report = _run(coro, run.json_output, ci, stop)
        _emit(report, run.json_output, code=_finish_ci(ci, report), quiet=run.quiet)


def _prune_options(
    prune: bool, scopes: list[str], max_delete: int | None, json_output: bool
) -> PruneOptions:
    from provision.commands.prune import DEFAULT_MAX_DELETE, PruneOptions

    if not prune and (scopes or max_delete is not None):
        _usage_error("--prune-scope and --max-delete only apply with --prune", json_output)
    for scope in scopes:
        if not scope or "@" in scope or any(c.isspace() for c in scope):
            _usage_error(f"--prune-scope {scope!r}: give a domain such as example.com", json_output)
    limit = DEFAULT_MAX_DELETE if max_delete is None else max_delete
    return PruneOptions(enabled=prune, scopes=tuple(scopes), max_delete=limit)


def _start(
    run: Run, command: str, *, server: str | None = None, metrics: Path | None = None
) -> tuple[ProbeOptions, CiOutputs]:
    """Check what can be checked before any I/O; the probe options and CI outputs."""
    _setup_logging(run.verbose)
    if command != "audit" and not run.files and not run.sandbox:
        _usage_error(
            "give at least one inbox file ('-' for standard input), or --sandbox", run.json_output
        )
    if run.files and run.sandbox:
        _usage_error(
            "--sandbox uses the embedded servers; do not give inbox files with it", run.json_output
        )
    if command == "set" and not run.sandbox and not server:
        _usage_error(
            "no Rocket.Chat server: give --server URL or set ROCKETCHAT_URL", run.json_output
        )
    from provision.models import ProbeOptions
    from provision.render.ci import CiOutputs

    try:
        options = ProbeOptions(
            step_timeout=run.step_timeout,
            timeout=run.timeout,
            concurrency=run.concurrency,
            ca_file=_check_ca_file(run.ca_file),
            strict=run.strict,
            ehlo_name=run.ehlo_name,
            smtp_verify=not run.smtp_no_verify,
            cert_days=run.cert_days,
        )
        # A --junit or --metrics path that cannot be written is exit 2 now, before any probe.
        return options, CiOutputs.from_environ(command, run.junit, metrics=metrics)
    except ConfigError as exc:
        _config_error(exc.problems, run.json_output)


def _watch(
    run: Run,
    command: str,
    address: str | None,
    every: str | None,
    others: dict[str, bool],
    one_round: Callable[[ProbeOptions, Stop], Coroutine[Any, Any, Report]],
    *,
    validate: Callable[[], object] | None = None,
) -> NoReturn:
    """``--serve``: the exporter (``provision.watch``) until SIGTERM, SIGINT or SIGHUP; exit 0."""
    given = [name for name, on in {**others, "--json": run.json_output}.items() if on]
    given += ["--junit"] if run.junit else []
    if address is None:
        _usage_error("--every needs --serve ADDR:PORT", run.json_output)
    if given:
        _usage_error(f"--serve serves each round's metrics; do not give {', '.join(given)}", False)
    from provision.watch import Exporter, parse_duration, parse_listen

    try:
        host, port = parse_listen(address)
        interval = parse_duration(every or "5m")
    except ValueError as exc:
        _usage_error(str(exc), False)
    options, _ci = _start(run, command)
    if validate is not None:  # bad input is exit 2 now, not a failed round later
        try:
            validate()
        except ConfigError as exc:
            _config_error(exc.problems, False)
    from provision.stopping import handling_signals

    _small_tls_buffers()
    # The first SIGTERM/SIGINT/SIGHUP stops the exporter (a round in flight is cancelled;
    # exit 0: its normal end); a second ends the process at once (provision.stopping).
    with handling_signals() as stop:
        exporter = Exporter(
            lambda: one_round(options, stop),
            command=command,
            every=interval,
            deadline=run.timeout,
            log=_say,  # control characters from input (a bad file's problems) escaped
        )
        try:
            stop.run(exporter.run(host, port, stop=stop))
        except ConfigError as exc:
            _config_error(exc.problems, False)
    raise typer.Exit(0)


def _load_files(files: list[str]) -> LoadResult:
    from provision.inbox import load_inboxes

    return load_inboxes(files)


def _silent_ci(command: str) -> CiOutputs:
    """CI outputs that write nothing: a round of ``--serve`` shows no progress."""
    from provision.render.ci import CiOutputs

    return CiOutputs(command=command)


def _probe_extras(options: ProbeOptions, **extras: Any) -> ProbeOptions:
    """The probe options beyond the login (--envelope, --round-trip), when given."""
    if not (extras.get("envelope") or extras.get("round_trip")):
        return options  # dataclasses stays off the common path
    import dataclasses

    return dataclasses.replace(options, **extras)


def _check_ca_file(path: Path | None) -> Path | None:
    if path is None:
        return None  # the check's module stays off the common path
    from provision.commands.inputs import check_ca_file

    return check_ca_file(path)


@contextlib.asynccontextmanager
async def _inputs(
    run: Run, options: ProbeOptions, stop: Stop
) -> AsyncIterator[tuple[LoadResult, ProbeOptions, Sandbox | None]]:
    """The inboxes to run: the files, or those of a sandbox started for the run (and its CA)."""
    from provision.inbox import load_inboxes

    if not run.sandbox:
        with stop.interruptible():  # standard input may never end
            loaded = load_inboxes(run.files or [])
        yield loaded, options, None
        return
    import dataclasses

    from provision.sandbox.runner import running_sandbox

    async with running_sandbox() as box:
        loaded = load_inboxes([str(box.inbox_file)])
        yield loaded, dataclasses.replace(options, ca_file=options.ca_file or box.ca_file), box


async def _check(run: Run, options: ProbeOptions, ci: CiOutputs, stop: Stop) -> Report:
    from provision.commands.check import check as run_check

    async with _inputs(run, options, stop) as (loaded, options, _box):
        return await run_check(
            loaded.inboxes,
            options,
            input_warnings=loaded.warnings,
            on_inbox_done=ci.started(loaded.inboxes),
            stop=stop,
        )


async def _check_offline(run: Run, options: ProbeOptions) -> Report:
    import os

    from provision.commands.check import OfflineEnviron, check_offline
    from provision.inbox import load_inboxes

    environ = OfflineEnviron(os.environ)
    loaded = load_inboxes(run.files or [], environ=environ)
    return check_offline(
        loaded.inboxes,
        options,
        input_warnings=loaded.warnings,
        unset_variables=sorted(environ.unset),
    )


async def _set(
    run: Run,
    server: str,
    code: str | None,
    switches: dict[str, Any],
    options: ProbeOptions,
    ci: CiOutputs,
    stop: Stop,
) -> Report:
    from provision.commands.set import SetOptions, set_inboxes
    from provision.rocketchat.credentials import (
        TokenAuth,
        check_url,
        credentials_from_env,
    )

    async with _inputs(run, options, stop) as (loaded, options, box):
        credentials: Credentials
        if box is None:
            credentials = credentials_from_env(os.environ, code=code)
            check_url(server, allow_http=switches["allow_http"])
        else:
            server = box.rocketchat_url
            credentials = TokenAuth(user_id=box.user_id, token=box.token)
        target = SetOptions(server=server, credentials=credentials, **switches)
        return await set_inboxes(
            loaded.inboxes,
            options,
            target,
            input_warnings=loaded.warnings,
            on_inbox_done=ci.started(loaded.inboxes),
            stop=stop,
        )


@app.command(name="audit", cls=FastCommand, **command_help("audit"))
def audit_command(
    server: ServerOpt = None,
    emails: Annotated[
        list[str] | None,
        typer.Option(
            "--email",
            metavar="ADDR",
            help="Audit only this stored inbox (repeatable; exact, case-sensitive).",
            show_default=False,
        ),
    ] = None,
    against: Annotated[
        list[str] | None,
        typer.Option(
            "--against",
            metavar="FILE",
            help="Compare the stored inboxes with these inbox files (repeatable); "
            "drift is exit 18.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    strict: StrictOpt = False,
    timeout: TimeoutOpt = 120.0,
    step_timeout: StepTimeoutOpt = 10.0,
    concurrency: ConcurrencyOpt = 10,
    ca_file: CaFileOpt = None,
    ehlo_name: EhloOpt = None,
    smtp_no_verify: NoVerifyOpt = False,
    cert_days: CertDaysOpt = 21,
    allow_http: AllowHttpOpt = False,
    two_factor_code: TwoFactorOpt = None,
    junit: JunitOpt = None,
    verbose: VerboseOpt = False,
    metrics: MetricsOpt = None,
    serve: ServeOpt = None,
    every: EveryOpt = None,
    envelope: EnvelopeOpt = False,
    round_trip: Annotated[
        bool,
        typer.Option(
            "--round-trip",
            help="For inactive inboxes only (an active one would import it): send one "
            "tagged message to itself, find it over IMAP, delete it.",
        ),
    ] = False,
    round_trip_timeout: RoundTripTimeoutOpt = 60.0,
) -> None:
    """Probe every inbox stored in Rocket.Chat with its stored settings, exactly as `check`.

    Reports per inbox its probes and Rocket.Chat's state (id, active, updated); an
    inactive inbox whose probe fails was most likely switched off by Rocket.Chat.
    Credentials come from the environment, as for `set`. Passwords read from the API
    are never printed, logged or written.
    """
    if not server:
        _usage_error("no Rocket.Chat server: give --server URL or set ROCKETCHAT_URL", json_output)
    run = Run(
        files=None,
        json_output=json_output,
        quiet=quiet,
        strict=strict,
        timeout=timeout,
        step_timeout=step_timeout,
        concurrency=concurrency,
        ca_file=ca_file,
        ehlo_name=ehlo_name,
        smtp_no_verify=smtp_no_verify,
        sandbox=False,
        verbose=verbose,
        junit=junit,
        cert_days=cert_days,
    )
    if serve is not None or every is not None:
        # Credentials, URL and --against files are checked before listening (exit 2).
        _watch(
            run,
            "audit",
            serve,
            every,
            {"--metrics": metrics is not None},
            lambda o, _stop: _audit(
                server, emails or [], against, allow_http, two_factor_code, o, _silent_ci("audit")
            ),
            validate=lambda: _audit_inputs(server, against, allow_http, two_factor_code),
        )
    options, ci = _start(run, "audit", metrics=metrics)
    options = _probe_extras(
        options, envelope=envelope, round_trip=round_trip, round_trip_timeout=round_trip_timeout
    )
    from provision.errors import RocketChatCallError
    from provision.stopping import handling_signals

    with handling_signals() as stop:
        coro = _audit(
            server, emails or [], against, allow_http, two_factor_code, options, ci, stop=stop
        )
        try:
            # A stop while Rocket.Chat is read ends the audit whole (no inboxes,
            # stopped_by set); during the probes each inbox says how far it got.
            report = _run(coro, json_output, ci, stop)
        except RocketChatCallError as exc:
            _rocketchat_error(exc, json_output, ci)
        _emit(report, json_output, code=_finish_ci(ci, report), quiet=quiet)


async def _audit(
    server: str,
    emails: list[str],
    against: list[str] | None,
    allow_http: bool,
    code: str | None,
    options: ProbeOptions,
    ci: CiOutputs,
    *,
    stop: Stop | None = None,
) -> Report:
    from provision.commands.audit import AuditTarget, audit_inboxes

    credentials, loaded = _audit_inputs(server, against, allow_http, code)
    target = AuditTarget(
        server=server,
        credentials=credentials,
        allow_http=allow_http,
        emails=tuple(dict.fromkeys(emails)),
    )
    return await audit_inboxes(
        options,
        target,
        against=loaded.inboxes if loaded is not None else None,
        against_files=against or (),
        started=ci.started,
        stop=stop,
    )


def _audit_inputs(
    server: str, against: list[str] | None, allow_http: bool, code: str | None
) -> tuple[Credentials, LoadResult | None]:
    """What ``audit`` reads before any I/O: the credentials, the URL, the --against files.

    Raises:
        ConfigError: any of them is missing or wrong.
    """
    from provision.inbox import load_inboxes
    from provision.rocketchat.credentials import check_url, credentials_from_env

    credentials = credentials_from_env(os.environ, code=code)
    check_url(server, allow_http=allow_http)
    return credentials, load_inboxes(against) if against else None


def _rocketchat_error(exc: RocketChatCallError, json_output: bool, ci: CiOutputs) -> NoReturn:
    """Rocket.Chat could not be read at all: exit 20, the error on stderr (and as JSON)."""
    problem = ConfigProblem(exc.message + (f" ({exc.hint})" if exc.hint else ""))
    failed = ci.failed_input([problem], rocketchat=True)
    if failed:
        typer.echo(f"error: {failed}", err=True)
    typer.echo(f"error: {problem}", err=True)
    if json_output:
        from provision.render.json import render_problems_json

        typer.echo(render_problems_json([problem], exit_code=ExitCode.ROCKETCHAT))
    raise typer.Exit(int(ExitCode.ROCKETCHAT))


@app.command(name="discover", cls=FastCommand, **command_help("discover"))
def discover_command(
    address: Annotated[
        str, typer.Argument(metavar="ADDRESS", help="The inbox address, e.g. support@example.com.")
    ],
    username: Annotated[
        str | None,
        typer.Option(
            "--username", metavar="U", help="Login name (default: the address).", show_default=False
        ),
    ] = None,
    password_from: Annotated[
        str | None,
        typer.Option(
            "--password-from",
            metavar="VAR|file:PATH",
            help="Where the password is: an environment variable or file:PATH. Written into "
            "the file as ${VAR} / ${file:PATH}; given, the best servers are logged into.",
            show_default=False,
        ),
    ] = None,
    ca_file: CaFileOpt = None,
    nameserver: Annotated[
        str | None,
        typer.Option(
            "--nameserver",
            metavar="IP[:PORT]",
            help="Send every DNS query to this server.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="Write the inbox file to FILE.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = 60.0,
    step_timeout: StepTimeoutOpt = 10.0,
    ehlo_name: EhloOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Find an address's SMTP and IMAP servers (SRV, autoconfig, MX, usual names) and
    write an inbox file with Rocket.Chat's secure values; candidates on stderr."""
    _setup_logging(verbose)
    from provision.discover.dns import parse_nameserver
    from provision.discover.inboxfile import password_reference
    from provision.discover.search import SearchOptions

    try:
        server = parse_nameserver(nameserver) if nameserver else None
        password_reference(password_from)
    except ValueError as exc:
        _usage_error(str(exc), json_output)
    if "@" not in address.strip("@"):
        _usage_error(f"{address!r} is not an email address (local@domain)", json_output)
    options = SearchOptions(
        step_timeout=step_timeout,
        timeout=timeout,
        nameserver=server,
        ca_file=_check_ca_file(ca_file),
        ehlo_name=ehlo_name,
    )
    from provision.commands.discover import discover
    from provision.render.discover import render_discover_json, render_discover_table
    from provision.stopping import Stopped, handling_signals

    try:
        with handling_signals() as stop:
            result = stop.run(
                discover(
                    address,
                    options,
                    username=username,
                    password_from=password_from,
                    login=password_from is not None,
                ),
                stoppable=True,
            )
    except Stopped:
        _stopped_early("discover", stop, json_output)
    except ValueError as exc:
        _usage_error(str(exc), json_output)
    except ConfigError as exc:
        _config_error(exc.problems, json_output)
    _say(render_discover_table(result))
    if result.login is not None and not result.login.ok:
        from provision.render.text import render_text

        typer.echo(render_text(result.login, color=False), err=True)
    if json_output:
        typer.echo(render_discover_json(result))
    elif result.inbox_file is not None:
        if output is None:
            typer.echo(result.inbox_file, nl=False)
        else:
            try:
                output.write_text(result.inbox_file)
            except OSError as exc:
                _usage_error(f"cannot write {output}: {exc.strerror or exc}", json_output)
    raise typer.Exit(int(result.exit_code))


@app.command(name="sandbox", cls=FastCommand, **command_help("sandbox"))
def sandbox_command(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="PATH",
            help="Where to write the inbox file and CA (default: a temp dir).",
        ),
    ] = None,
) -> None:
    """Run local SMTP and IMAP servers with a throw-away CA, and a Rocket.Chat double,
    until stopped (Ctrl-C, SIGTERM, SIGHUP; its files are removed then).

    The directory holds inboxes.yaml (the sandbox's inboxes), ca.pem (its CA) and
    rocketchat.env (the double's URL and token, for `set` and `export`); it prints the
    commands that use them.
    """
    from provision.cli_help import invocation
    from provision.sandbox.runner import serve_forever
    from provision.stopping import Stopped, handling_signals

    with handling_signals() as stop, contextlib.suppress(Stopped):
        stop.run(
            serve_forever(directory, announce=typer.echo, program=invocation()), stoppable=True
        )
    # Its files (the password and the token among them) went with it.
    typer.echo(f"sandbox stopped by {stop.name}; its files are removed", err=True)
    raise typer.Exit(stop.exit_code)


@app.command(name="export", cls=FastCommand, **command_help("export"))
def export_command(
    server: ServerOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the inbox file here (default: standard output).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing --output file.")
    ] = False,
    allow_http: AllowHttpOpt = False,
    two_factor_code: TwoFactorOpt = None,
    ca_file: CaFileOpt = None,
    timeout: TimeoutOpt = 60.0,
    verbose: VerboseOpt = False,
) -> None:
    """Write every email inbox of Rocket.Chat as an inbox file that `set` accepts.

    Passwords are never written: each becomes a ${VAR} reference named after the
    inbox (SUPPORT_EXAMPLE_COM_SMTP_PASSWORD); the file's header lists them.
    Credentials come from the environment, as for `set`.
    """
    _setup_logging(verbose)
    if not server:
        _usage_error("no Rocket.Chat server: give --server URL or set ROCKETCHAT_URL", False)
    if output is not None and output.exists() and not force:
        _usage_error(f"{output} exists; give --force to overwrite it", False)
    import dataclasses

    from provision.commands.export import export_inboxes
    from provision.errors import RocketChatCallError
    from provision.rocketchat.credentials import check_url, credentials_from_env
    from provision.stopping import Stopped, handling_signals

    try:
        credentials = credentials_from_env(os.environ, code=two_factor_code)
        check_url(server, allow_http=allow_http)
        with handling_signals() as stop:
            result = stop.run(
                export_inboxes(
                    server,
                    credentials,
                    ca_file=_check_ca_file(ca_file),
                    allow_http=allow_http,
                    time_limit=timeout,
                ),
                stoppable=True,
            )
    except Stopped:
        _stopped_early("export", stop, False)
    except ConfigError as exc:
        _config_error(exc.problems, False)
    except RocketChatCallError as exc:
        _say(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        raise typer.Exit(int(ExitCode.ROCKETCHAT)) from None
    shown = str(output) if output is not None else "<stdout>"
    if output is None:
        typer.echo(result.text, nl=False)
    else:
        try:
            result.write(output, overwrite=force)
        except FileExistsError:
            _usage_error(f"{output} exists; give --force to overwrite it", False)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            _config_error([ConfigProblem(f"cannot write: {reason}", file=str(output))], False)
    for warning in result.warnings:
        _say(f"warning: {warning}")
    for problem in result.problems:
        _say(f"warning: {dataclasses.replace(problem, file=shown)}")
    if result.problems:
        typer.echo("warning: edit these fields before `provision set` accepts the file", err=True)
    typer.echo(
        f"exported {result.count} inbox{'es' if result.count != 1 else ''} to {shown}; "
        f"set {len(result.variables)} password variables before using it (see its header)",
        err=True,
    )
    raise typer.Exit(0)


@app.command(name="schema", cls=FastCommand, **command_help("schema"))
def schema_command() -> None:
    """Print the JSON Schema (draft 2020-12) of the inbox file, for editors and linters."""
    from provision.commands.schema import schema_text

    typer.echo(schema_text())
    raise typer.Exit(0)


def _small_tls_buffers() -> None:
    """Read TLS records into 32 KiB instead of asyncio's 256 KiB per connection.

    A probe reads a few short replies; with 100 inboxes at once (300 TLS
    connections) the default buffers alone are about 75 MB (bench/RESULTS.md).
    ``SSLProtocol.max_size`` is asyncio's own knob (3.11+); this is the CLI's
    process, so changing it here touches no library user.
    """
    import asyncio.sslproto

    if hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
        asyncio.sslproto.SSLProtocol.max_size = 32 * 1024


def _run(
    coro: Coroutine[Any, Any, Report],
    json_output: bool,
    ci: CiOutputs,
    stop: Stop,
    *,
    stoppable: bool = False,
) -> Report:
    _small_tls_buffers()
    from provision.stopping import Stopped

    try:
        return stop.run(coro, stoppable=stoppable)
    except Stopped:  # before any inbox was read (or a stoppable run): none, stopped
        from provision.results import Report

        return Report(command=ci.command, settings={"stopped_by": stop.name})
    except ConfigError as exc:
        failed = ci.failed_input(exc.problems)
        if failed:
            _say(f"error: {failed}")
        _config_error(exc.problems, json_output)


def _finish_ci(ci: CiOutputs, report: Report) -> int | None:
    """Write the CI outputs; the exit code to use instead of the report's, if any."""
    failed = ci.finish(report)
    if not failed:
        return None
    _say(f"error: {failed}")
    # The JUnit file was asked for: a run that passed without it is a usage failure.
    return int(report.exit_code) or int(ExitCode.USAGE)


def _stopped_early(command: str, stop: Stop, json_output: bool) -> NoReturn:
    """A command with nothing to report yet was stopped: say so, write nothing, exit."""
    typer.echo(f"{command}: stopped by {stop.name}; nothing was written", err=True)
    if json_output:
        import json

        doc = {"ok": False, "exit_code": stop.exit_code, "stopped_by": stop.name}
        typer.echo(json.dumps(doc, indent=2))
    raise typer.Exit(stop.exit_code)


def _emit(
    report: Report, json_output: bool, *, code: int | None = None, quiet: bool = False
) -> NoReturn:
    if json_output:
        from provision.render.json import render_json

        typer.echo(render_json(report))
    else:
        from provision.render.text import render_text

        typer.echo(render_text(report, color=_color(), quiet=quiet))
    raise typer.Exit(int(report.exit_code) if code is None else code)


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _say(text: str) -> None:
    """Write a line to stderr with any control character from input or servers escaped."""
    from provision.render.terminal import safe_text

    typer.echo(safe_text(text), err=True)


def _usage_error(message: str, json_output: bool) -> NoReturn:
    _config_error([ConfigProblem(message)], json_output)


def _config_error(problems: list[ConfigProblem], json_output: bool) -> NoReturn:
    for problem in problems:
        _say(f"error: {problem}")
    if json_output:
        from provision.render.json import render_problems_json

        typer.echo(render_problems_json(problems))
    raise typer.Exit(int(ExitCode.USAGE))


@functools.cache
def _stderr_handler() -> type[logging.Handler]:
    """The handler class, made on first use: ``--version`` and ``--help`` need no logging."""
    import logging

    class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""

        def format(self, record: logging.LogRecord) -> str:
            from provision.render.terminal import safe_text

            text = safe_text(super().format(record))
            # On a terminal, first erase a progress line ("[10/10] probed; submitting...").
            return "\r\x1b[K" + text if _is_terminal(sys.stderr) else text

        @property
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, _value: Any) -> None:
            pass

    return _StderrHandler


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _setup_logging(verbose: bool) -> None:
    """provision's own warnings to stderr (a rate-limit wait); ``-v``: everything, timed.

    One handler, however often called.
    """
    import logging

    handler_type = _stderr_handler()
    logger = logging.getLogger("provision")
    handler = next((h for h in logger.handlers if isinstance(h, handler_type)), None)
    if handler is None:
        handler = handler_type()
        logger.addHandler(handler)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.setLevel(logging.NOTSET)


def _exit_past_hung_threads(done: SystemExit) -> None:
    """A stopped run whose resolver threads still hang: its report is out, so end now
    instead of joining them (the interpreter would, for as long as they hang)."""
    stopping = sys.modules.get("provision.stopping")  # loaded only by a command that ran
    if stopping is None or not stopping.threads_left():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(done.code if isinstance(done.code, int) else int(ExitCode.INTERNAL))


def _commands_needed(args: list[str]) -> list[CommandInfo] | None:
    """The registered commands a run needs, or None for all of them.

    Typer turns every registered command into a Click command (reading its signature
    and annotations, about 1 ms each) before it parses anything; a run that names a
    command, or only asks for ``--version``, needs one or none. Root help, no
    arguments, an unknown name or any other root option keep them all.
    """
    names = [a for a in args if not a.startswith("-")]
    before = args[: args.index(names[0])] if names else args
    if any(a != "--version" for a in before) or not args:
        return None
    if not names:
        return []
    wanted = [c for c in app.registered_commands if _command_name(c) == names[0]]
    return wanted or None


def _command_name(info: CommandInfo) -> str | None:
    if info.name or info.callback is None:
        return info.name
    return typer.main.get_command_name(info.callback.__name__)


@contextlib.contextmanager
def _only_needed_commands(args: list[str]) -> Iterator[None]:
    """Register only the commands this run needs while it runs (see _commands_needed)."""
    registered = list(app.registered_commands) if isinstance(app, typer.Typer) else None
    needed = _commands_needed(args) if registered is not None else None
    if needed is None:
        yield
        return
    app.registered_commands[:] = needed
    try:
        yield
    finally:
        app.registered_commands[:] = registered or []


def main() -> None:
    """Console entry point: the only place an unexpected exception is caught."""
    try:
        with _only_needed_commands(sys.argv[1:]):
            app()
    except SystemExit as done:
        _exit_past_hung_threads(done)
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("PROVISION_DEBUG"):
            raise
        # The type only: an exception's text may quote input, including secrets.
        typer.echo(
            f"internal error: {type(exc).__name__} (a bug in provision; "
            "run with PROVISION_DEBUG=1 to see the traceback)",
            err=True,
        )
        raise SystemExit(int(ExitCode.INTERNAL)) from None
