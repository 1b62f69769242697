"""The console entry point (``provision``, ``python -m provision``) and the one place an
unexpected exception is caught.

:func:`console` is the program: :func:`main`, then the process ends at once
(:func:`exit_without_teardown`). :func:`main` alone raises ``SystemExit`` as any
function would, for callers inside another program (tests, a wrapper).

The argument vector ``["--version"]`` exactly is answered here, before Typer is imported
(its import alone is about 60 ms, more than the whole answer may take). It is one literal
match, not a parser: every other vector, ``--version`` together with anything included,
goes to the Typer command line (``provision.cli.main``) unchanged.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import NoReturn

from provision._gc import fewer_collections
from provision._version import print_version

__all__ = ["console", "exit_without_teardown", "main"]


def console() -> None:
    """The ``provision`` program (pyproject's script, ``python -m provision``)."""
    try:
        with fewer_collections():  # from before Typer's import to the end of the run
            main()
    except SystemExit as done:
        exit_without_teardown(done)
        raise
    exit_without_teardown(SystemExit(0))


def main() -> None:
    try:
        if sys.argv[1:] == ["--version"]:
            print_version()
            return
        from provision.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        _say("interrupted")
        raise SystemExit(130) from None
    except OSError as exc:
        if exc.errno not in _CANNOT_WRITE or os.environ.get("PROVISION_DEBUG"):
            _internal(exc)
        from provision.results import ExitCode

        # The machine's, not provision's: the report (or a file beside it) did not fit.
        _say(f"error: the output could not be written: {exc.strerror}")
        raise SystemExit(int(ExitCode.INTERNAL)) from None
    except Exception as exc:
        _internal(exc)


#: Write errors that come from where the output goes (a full disk, a quota, a failing
#: device, a read-only file system), never from provision itself.
_CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def _internal(exc: Exception) -> NoReturn:
    """An unexpected exception: its type only (its text may quote input, secrets
    included), exit 1; ``PROVISION_DEBUG=1`` re-raises it with its traceback."""
    if os.environ.get("PROVISION_DEBUG"):
        raise exc
    from provision.results import ExitCode

    _say(
        f"internal error: {type(exc).__name__} (a bug in provision; "
        "run with PROVISION_DEBUG=1 to see the traceback)"
    )
    raise SystemExit(int(ExitCode.INTERNAL)) from None


def _say(line: str) -> None:
    if sys.stderr is not None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def exit_without_teardown(done: SystemExit) -> None:
    """The run is over and its report written: end the process now.

    The interpreter's own exit tears down some 400 modules and joins finished threads:
    10-20 ms on every run, for nothing, since every file a command writes is closed by
    the command itself (atomic writes, the sandbox's clean-up). A stopped run's resolver
    threads may even hang there (``stopping.threads_left``). Only standard output and
    error and the logging handlers are left to flush. When a flush fails (a closed pipe,
    a full disk) the interpreter's exit takes over as before, unless threads hang.
    Returns only in that case, or for an exit code that is not a number.
    """
    code = 0 if done.code is None else done.code
    if not isinstance(code, int):
        return
    stopping = sys.modules.get("provision.stopping")  # loaded only by a command that ran
    hanging = stopping is not None and stopping.threads_left()
    try:
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # ValueError: a stream the command closed
        if not hanging:
            return
    os._exit(code)
