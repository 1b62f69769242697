"""The console entry point (``provision``, ``python -m provision``).

The argument vector ``["--version"]`` exactly is answered here, before Typer is imported
(its import alone is about 60 ms, more than the whole answer may take). It is one literal
match, not a parser: every other vector, ``--version`` together with anything included,
goes to the Typer command line (``provision.cli.main``) unchanged.
"""

from __future__ import annotations

import sys

from provision._version import print_version

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print_version()
        return
    from provision.cli import main as cli_main

    cli_main()
