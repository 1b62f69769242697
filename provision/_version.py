"""The one source of the version: ``pyproject.toml`` reads it, so does ``provision --version``.

A module of its own so that code inside the package never imports ``provision`` (its
parent) just for the version string.
"""

import sys

__version__ = "0.1.0"


def print_version() -> None:
    """What ``provision --version`` prints, on both of its paths: ``provision.entry``
    (before Typer is imported) and the root ``--version`` option of ``provision.cli``."""
    out = sys.stdout
    if out is None:  # no standard output at all: nothing to print to (click.echo alike)
        return
    out.write(f"provision {__version__}\n")
    out.flush()
