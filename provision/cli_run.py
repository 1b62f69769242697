"""How the command line runs a command once its options are parsed: probe options and
CI outputs from the flags, the inputs (files or a sandbox), the event loop with the
stop handling, the report or the error on the way out, and logging to stderr.

``cli.py`` declares the commands (typer) and calls these; nothing here parses options.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from provision.cli_options import (
    Run,
)
from provision.errors import ConfigError, ConfigProblem
from provision.results import ExitCode

if TYPE_CHECKING:
    import logging

    from provision.commands.prune import PruneOptions
    from provision.errors import RocketChatCallError
    from provision.inbox import LoadResult
    from provision.models import ProbeOptions
    from provision.render.ci import CiOutputs
    from provision.results import Report
    from provision.rocketchat.credentials import Credentials
    from provision.sandbox.runner import Sandbox
    from provision.stopping import Stop

__all__ = [
    "audit_inputs",
    "check_ca_file",
    "color",
    "config_error",
    "emit",
    "finish_ci",
    "is_terminal",
    "load_files",
    "load_inputs",
    "probe_extras",
    "prune_options",
    "rocketchat_error",
    "run_audit",
    "run_check",
    "run_check_offline",
    "run_report",
    "run_set",
    "say",
    "setup_logging",
    "silent_ci",
    "small_tls_buffers",
    "start_run",
    "stderr_handler",
    "stopped_early",
    "usage_error",
    "watch_rounds",
]


def prune_options(
    prune: bool, scopes: list[str], max_delete: int | None, json_output: bool
) -> PruneOptions:
    from provision.commands.prune import DEFAULT_MAX_DELETE, PruneOptions

    if not prune and (scopes or max_delete is not None):
        usage_error("--prune-scope and --max-delete only apply with --prune", json_output)
    for scope in scopes:
        if not scope or "@" in scope or any(c.isspace() for c in scope):
            usage_error(f"--prune-scope {scope!r}: give a domain such as example.com", json_output)
    limit = DEFAULT_MAX_DELETE if max_delete is None else max_delete
    return PruneOptions(enabled=prune, scopes=tuple(scopes), max_delete=limit)


def start_run(
    run: Run,
    command: str,
    *,
    server: str | None = None,
    metrics: Path | None = None,
    dial: bool = False,
) -> tuple[ProbeOptions, CiOutputs]:
    """Check what can be checked before any I/O; the probe options and CI outputs.

    ``dial``: ``check``'s start, which dials before its loop (``cli_dial``): the
    logging set-up and the CA file's check are left to ``cli_dial.after_dial``, so that their
    imports (``logging``, ``ssl``: some 10 ms) overlap the first handshakes. The CA
    file is still checked before a byte is sent.
    """
    if not dial:
        setup_logging(run.verbose)
    if command != "audit" and not run.files and not run.sandbox:
        usage_error(
            "give at least one inbox file ('-' for standard input), or --sandbox", run.json_output
        )
    if run.files and run.sandbox:
        usage_error(
            "--sandbox uses the embedded servers; do not give inbox files with it", run.json_output
        )
    if command == "set" and not run.sandbox and not server:
        usage_error(
            "no Rocket.Chat server: give --server URL or set ROCKETCHAT_URL", run.json_output
        )
    from provision.models import ProbeOptions
    from provision.render.ci import CiOutputs

    try:
        options = ProbeOptions(
            step_timeout=run.step_timeout,
            timeout=run.timeout,
            concurrency=run.concurrency,
            ca_file=run.ca_file if dial else check_ca_file(run.ca_file),
            strict=run.strict,
            ehlo_name=run.ehlo_name,
            smtp_verify=not run.smtp_no_verify,
            cert_days=run.cert_days,
        )
        # A --junit or --metrics path that cannot be written is exit 2 now, before any probe.
        return options, CiOutputs.from_environ(command, run.junit, metrics=metrics)
    except ConfigError as exc:
        config_error(exc.problems, run.json_output)


def watch_rounds(
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
        usage_error("--every needs --serve ADDR:PORT", run.json_output)
    if given:
        usage_error(f"--serve serves each round's metrics; do not give {', '.join(given)}", False)
    from provision.watch import Exporter, parse_duration, parse_listen

    try:
        host, port = parse_listen(address)
        interval = parse_duration(every or "5m")
    except ValueError as exc:
        usage_error(str(exc), False)
    options, _ci = start_run(run, command)
    if validate is not None:  # bad input is exit 2 now, not a failed round later
        try:
            validate()
        except ConfigError as exc:
            config_error(exc.problems, False)
    from provision.stopping import handling_signals

    small_tls_buffers()
    # The first SIGTERM/SIGINT/SIGHUP stops the exporter (a round in flight is cancelled;
    # exit 0: its normal end); a second ends the process at once (provision.stopping).
    with handling_signals() as stop:
        exporter = Exporter(
            lambda: one_round(options, stop),
            command=command,
            every=interval,
            deadline=run.timeout,
            log=say,  # control characters from input (a bad file's problems) escaped
            quiet=run.quiet,
        )
        try:
            stop.run(exporter.run(host, port, stop=stop))
        except ConfigError as exc:
            config_error(exc.problems, False)
    raise typer.Exit(0)


def load_files(files: list[str]) -> LoadResult:
    from provision.inbox import load_inboxes

    return load_inboxes(files)


def silent_ci(command: str) -> CiOutputs:
    """CI outputs that write nothing: a round of ``--serve`` shows no progress."""
    from provision.render.ci import CiOutputs

    return CiOutputs(command=command)


def probe_extras(options: ProbeOptions, **extras: Any) -> ProbeOptions:
    """The probe options beyond the login (--envelope, --round-trip), when given."""
    if not (extras.get("envelope") or extras.get("round_trip")):
        return options  # dataclasses stays off the common path
    import dataclasses

    return dataclasses.replace(options, **extras)


def check_ca_file(path: Path | None) -> Path | None:
    if path is None:
        return None  # the check's module stays off the common path
    from provision.commands.inputs import check_ca_file as readable_ca_file

    return readable_ca_file(path)


@contextlib.asynccontextmanager
async def load_inputs(
    run: Run, options: ProbeOptions, stop: Stop, read: LoadResult | ConfigError | None = None
) -> AsyncIterator[tuple[LoadResult, ProbeOptions, Sandbox | None]]:
    """The inboxes to run: the files (``read`` by ``cli_dial.dial_first`` already, if given),
    or those of a sandbox started for the run (and its CA)."""
    from provision.inbox import load_inboxes

    if isinstance(read, ConfigError):
        raise read
    if read is not None:
        yield read, options, None
        return
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


async def run_check(
    run: Run,
    options: ProbeOptions,
    ci: CiOutputs,
    stop: Stop,
    read: LoadResult | ConfigError | None = None,
) -> Report:
    from provision.commands.check import check as check_inboxes

    async with load_inputs(run, options, stop, read) as (loaded, options, _box):
        return await check_inboxes(
            loaded.inboxes,
            options,
            input_warnings=loaded.warnings,
            on_inbox_done=ci.started(loaded.inboxes),
            stop=stop,
        )


async def run_check_offline(run: Run, options: ProbeOptions) -> Report:
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


async def run_set(
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

    async with load_inputs(run, options, stop) as (loaded, options, box):
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


async def run_audit(
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

    credentials, loaded = audit_inputs(server, against, allow_http, code)
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


def audit_inputs(
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


def rocketchat_error(exc: RocketChatCallError, json_output: bool, ci: CiOutputs) -> NoReturn:
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


def small_tls_buffers() -> None:
    """Read TLS records into 32 KiB instead of asyncio's 256 KiB per connection.

    A probe reads a few short replies; with 100 inboxes at once (300 TLS
    connections) the default buffers alone are about 75 MB (bench/RESULTS.md).
    ``SSLProtocol.max_size`` is asyncio's own knob (3.11+); this is the CLI's
    process, so changing it here touches no library user.
    """
    import asyncio.sslproto

    if hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
        asyncio.sslproto.SSLProtocol.max_size = 32 * 1024


def run_report(
    coro: Coroutine[Any, Any, Report],
    json_output: bool,
    ci: CiOutputs,
    stop: Stop,
    *,
    stoppable: bool = False,
) -> Report:
    small_tls_buffers()
    from provision.stopping import Stopped

    try:
        return stop.run(coro, stoppable=stoppable)
    except Stopped:  # before any inbox was read (or a stoppable run): none, stopped
        from provision.results import Report

        return Report(command=ci.command, settings={"stopped_by": stop.name})
    except ConfigError as exc:
        failed = ci.failed_input(exc.problems)
        if failed:
            say(f"error: {failed}")
        config_error(exc.problems, json_output)


def finish_ci(ci: CiOutputs, report: Report) -> int | None:
    """Write the CI outputs; the exit code to use instead of the report's, if any."""
    failed = ci.finish(report)
    if not failed:
        return None
    say(f"error: {failed}")
    # The JUnit file was asked for: a run that passed without it is a usage failure.
    return int(report.exit_code) or int(ExitCode.USAGE)


def stopped_early(command: str, stop: Stop, json_output: bool) -> NoReturn:
    """A command with nothing to report yet was stopped: say so, write nothing, exit."""
    typer.echo(f"{command}: stopped by {stop.name}; nothing was written", err=True)
    if json_output:
        import json

        doc = {"ok": False, "exit_code": stop.exit_code, "stopped_by": stop.name}
        typer.echo(json.dumps(doc, indent=2))
    raise typer.Exit(stop.exit_code)


def emit(
    report: Report, json_output: bool, *, code: int | None = None, quiet: bool = False
) -> NoReturn:
    if json_output:
        from provision.render.json import render_json

        typer.echo(render_json(report))
    else:
        from provision.render.text import render_text

        typer.echo(render_text(report, color=color(), quiet=quiet))
    raise typer.Exit(int(report.exit_code) if code is None else code)


def run_export(
    server: str | None,
    output: Path | None,
    *,
    force: bool,
    allow_http: bool,
    two_factor_code: str | None,
    ca_file: Path | None,
    timeout: float,
    verbose: bool,
) -> NoReturn:
    """`export`: read every inbox from Rocket.Chat, write the inbox file, say what is left to do."""
    setup_logging(verbose)
    if not server:
        usage_error("no Rocket.Chat server: give --server URL or set ROCKETCHAT_URL", False)
    if output is not None and output.exists() and not force:
        usage_error(f"{output} exists; give --force to overwrite it", False)
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
                    ca_file=check_ca_file(ca_file),
                    allow_http=allow_http,
                    time_limit=timeout,
                ),
                stoppable=True,
            )
    except Stopped:
        stopped_early("export", stop, False)
    except ConfigError as exc:
        config_error(exc.problems, False)
    except RocketChatCallError as exc:
        say(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        raise typer.Exit(int(ExitCode.ROCKETCHAT)) from None
    shown = str(output) if output is not None else "<stdout>"
    if output is None:
        typer.echo(result.text, nl=False)
    else:
        try:
            result.write(output, overwrite=force)
        except FileExistsError:
            usage_error(f"{output} exists; give --force to overwrite it", False)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            config_error([ConfigProblem(f"cannot write: {reason}", file=str(output))], False)
    for warning in result.warnings:
        say(f"warning: {warning}")
    for problem in result.problems:
        say(f"warning: {dataclasses.replace(problem, file=shown)}")
    if result.problems:
        typer.echo("warning: edit these fields before `provision set` accepts the file", err=True)
    typer.echo(
        f"exported {result.count} inbox{'es' if result.count != 1 else ''} to {shown}; "
        f"set {len(result.variables)} password variables before using it (see its header)",
        err=True,
    )
    raise typer.Exit(0)


def color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def say(text: str) -> None:
    """Write a line to stderr with any control character from input or servers escaped."""
    from provision.render.terminal import safe_text

    typer.echo(safe_text(text), err=True)


def usage_error(message: str, json_output: bool) -> NoReturn:
    config_error([ConfigProblem(message)], json_output)


def config_error(problems: list[ConfigProblem], json_output: bool) -> NoReturn:
    for problem in problems:
        say(f"error: {problem}")
    if json_output:
        from provision.render.json import render_problems_json

        typer.echo(render_problems_json(problems))
    raise typer.Exit(int(ExitCode.USAGE))


@functools.cache
def stderr_handler() -> type[logging.Handler]:
    """The stderr handler class, made on first use: ``--version`` and ``--help`` need no
    ``logging``. It writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""
    import logging

    class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
        def format(self, record: logging.LogRecord) -> str:
            from provision.render.terminal import safe_text

            text = safe_text(super().format(record))
            # On a terminal, first erase a progress line ("[10/10] probed; submitting...").
            return "\r\x1b[K" + text if is_terminal(sys.stderr) else text

        @property
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, _value: Any) -> None:
            pass

    return StderrHandler


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def setup_logging(verbose: bool) -> None:
    """provision's own warnings to stderr (a rate-limit wait); ``-v``: everything, timed.

    One handler, however often called.
    """
    import logging

    handler_type = stderr_handler()
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
