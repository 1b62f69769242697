"""The ``provision`` command line: parse, call a command (``provision.commands``), render, exit.

Heavy modules (the probes, aiosmtplib, aioimaplib, httpx, the sandbox servers)
are imported inside the command bodies so that ``--help`` and ``--version`` stay
fast. Every outcome ends in a stated exit code (``provision.results.ExitCode``);
no traceback reaches the user (typer's locals display is off: it can show secrets).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from provision._version import print_version
from provision.cli_coerce import FastCommand, FastGroup
from provision.cli_dial import after_dial, close_dials, dial_first
from provision.cli_dispatch import only_needed_commands
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
from provision.cli_run import (
    audit_inputs,
    check_ca_file,
    config_error,
    emit,
    finish_ci,
    load_files,
    probe_extras,
    prune_options,
    rocketchat_error,
    run_audit,
    run_check,
    run_check_offline,
    run_export,
    run_report,
    run_set,
    say,
    setup_logging,
    silent_ci,
    start_run,
    stopped_early,
    usage_error,
    watch_rounds,
)
from provision.errors import ConfigError

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
        print_version()
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
        usage_error("--offline checks inbox files; do not give --sandbox with it", run.json_output)
    if offline and (envelope or round_trip):
        usage_error(
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
            usage_error("--serve reads the inbox files each round: give files, not '-'", False)
        others = {"--offline": offline, "--metrics": metrics is not None}
        watch_rounds(
            run,
            "check",
            serve,
            every,
            others,
            lambda o, stop: run_check(run, probe_extras(o, **extras), silent_ci("check"), stop),
            validate=(lambda: load_files(run.files or [])) if run.files else None,
        )
    options, ci = start_run(run, "check", metrics=metrics, dial=True)
    options = probe_extras(options, **extras)
    from provision.stopping import handling_signals

    try:
        with handling_signals() as stop:
            # The options are valid and a signal is handled: dial now, before the loop;
            # logging and the CA file's check (nothing is sent before it) meanwhile.
            read = None if offline else dial_first(run)
            after_dial(run)
            work = (
                run_check_offline(run, options)
                if offline
                else run_check(run, options, ci, stop, read)
            )
            report = run_report(work, run.json_output, ci, stop)
            emit(report, run.json_output, code=finish_ci(ci, report), quiet=run.quiet)
    finally:
        close_dials()


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
    options, ci = start_run(run, "set", server=server)
    options = probe_extras(options, envelope=envelope)
    switches = {
        "allow_http": allow_http,
        "dry_run": dry_run,
        "send_test": send_test,
        "wait_active": wait_active,
        "prune": prune_options(prune, prune_scope or [], max_delete, run.json_output),
    }
    from provision.stopping import handling_signals

    with handling_signals() as stop:
        coro = run_set(run, server or "", two_factor_code, switches, options, ci, stop)
        report = run_report(coro, run.json_output, ci, stop)
        emit(report, run.json_output, code=finish_ci(ci, report), quiet=run.quiet)


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
        usage_error("no Rocket.Chat server: give --server URL or set ROCKETCHAT_URL", json_output)
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
        watch_rounds(
            run,
            "audit",
            serve,
            every,
            {"--metrics": metrics is not None},
            lambda o, _stop: run_audit(
                server, emails or [], against, allow_http, two_factor_code, o, silent_ci("audit")
            ),
            validate=lambda: audit_inputs(server, against, allow_http, two_factor_code),
        )
    options, ci = start_run(run, "audit", metrics=metrics)
    options = probe_extras(
        options, envelope=envelope, round_trip=round_trip, round_trip_timeout=round_trip_timeout
    )
    from provision.errors import RocketChatCallError
    from provision.stopping import handling_signals

    with handling_signals() as stop:
        coro = run_audit(
            server, emails or [], against, allow_http, two_factor_code, options, ci, stop=stop
        )
        try:
            # A stop while Rocket.Chat is read ends the audit whole (no inboxes,
            # stopped_by set); during the probes each inbox says how far it got.
            report = run_report(coro, json_output, ci, stop)
        except RocketChatCallError as exc:
            rocketchat_error(exc, json_output, ci)
        emit(report, json_output, code=finish_ci(ci, report), quiet=quiet)


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
    setup_logging(verbose)
    from provision.discover.dns import parse_nameserver
    from provision.discover.inboxfile import password_reference
    from provision.discover.search import SearchOptions

    try:
        server = parse_nameserver(nameserver) if nameserver else None
        password_reference(password_from)
    except ValueError as exc:
        usage_error(str(exc), json_output)
    if "@" not in address.strip("@"):
        usage_error(f"{address!r} is not an email address (local@domain)", json_output)
    options = SearchOptions(
        step_timeout=step_timeout,
        timeout=timeout,
        nameserver=server,
        ca_file=check_ca_file(ca_file),
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
        stopped_early("discover", stop, json_output)
    except ValueError as exc:
        usage_error(str(exc), json_output)
    except ConfigError as exc:
        config_error(exc.problems, json_output)
    say(render_discover_table(result))
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
                usage_error(f"cannot write {output}: {exc.strerror or exc}", json_output)
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
    run_export(
        server,
        output,
        force=force,
        allow_http=allow_http,
        two_factor_code=two_factor_code,
        ca_file=ca_file,
        timeout=timeout,
        verbose=verbose,
    )


@app.command(name="schema", cls=FastCommand, **command_help("schema"))
def schema_command() -> None:
    """Print the JSON Schema (draft 2020-12) of the inbox file, for editors and linters."""
    from provision.commands.schema import schema_text

    typer.echo(schema_text())
    raise typer.Exit(0)


def main() -> None:
    """Run the command line with only the commands this run needs; ``provision.entry.main``
    (the console entry point) calls it and catches whatever else escapes."""
    with only_needed_commands(app, sys.argv[1:]):
        app()
