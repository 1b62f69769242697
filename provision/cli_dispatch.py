"""Which registered commands a run needs: ``main`` builds only those (start-up cost).

Typer turns every registered command into a Click command (reading its signature
and annotations, about 1 ms each) before it parses anything; a run that names a
command, or only asks for ``--version``, needs one or none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from typer.models import CommandInfo


def commands_needed(app: typer.Typer, args: list[str]) -> list[CommandInfo] | None:
    """The commands of ``app`` a run with ``args`` needs, or None for all of them.

    Root help, no arguments, an unknown name or any other root option keep them all.
    """
    names = [a for a in args if not a.startswith("-")]
    before = args[: args.index(names[0])] if names else args
    if any(a != "--version" for a in before) or not args:
        return None
    if not names:
        return []
    wanted = [c for c in app.registered_commands if command_name(c) == names[0]]
    return wanted or None


def command_name(info: CommandInfo) -> str | None:
    if info.name or info.callback is None:
        return info.name
    return typer.main.get_command_name(info.callback.__name__)


@contextlib.contextmanager
def only_needed_commands(app: typer.Typer, args: list[str]) -> Iterator[None]:
    """Register only the commands this run needs while it runs (see commands_needed)."""
    registered = list(app.registered_commands) if isinstance(app, typer.Typer) else None
    needed = commands_needed(app, args) if registered is not None else None
    if needed is None:
        yield
        return
    app.registered_commands[:] = needed
    try:
        yield
    finally:
        app.registered_commands[:] = registered or []
