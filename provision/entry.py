"""The console entry point (``provision``, ``python -m provision``) and the one place an
unexpected exception is caught.

The argument vector ``["--version"]`` exactly is answered here, before Typer is imported
(its import alone is about 60 ms, more than the whole answer may take). It is one literal
match, not a parser: every other vector, ``--version`` together with anything included,
goes to the Typer command line (``provision.cli.main``) unchanged.
"""

from __future__ import annotations

import os
import sys

from provision._version import print_version

__all__ = ["main"]


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
    except Exception as exc:
        if os.environ.get("PROVISION_DEBUG"):
            raise
        from provision.results import ExitCode

        # The type only: an exception's text may quote input, including secrets.
        _say(
            f"internal error: {type(exc).__name__} (a bug in provision; "
            "run with PROVISION_DEBUG=1 to see the traceback)"
        )
        raise SystemExit(int(ExitCode.INTERNAL)) from None


def _say(line: str) -> None:
    if sys.stderr is not None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
