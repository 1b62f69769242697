"""`main()` builds only the Click command a run names (start-up, issue 13), and nothing changes."""

from __future__ import annotations

import sys

import pytest

from provision.cli import app, main
from provision.cli_dispatch import commands_needed
from tests.child import run_python


def _names(args: list[str]) -> list[str | None] | None:
    needed = commands_needed(app, args)
    return None if needed is None else [c.name or c.callback.__name__ for c in needed]  # type: ignore[union-attr]


def test_a_named_command_or_version_alone_needs_one_or_none() -> None:
    assert _names(["--version"]) == []
    assert _names(["check", "inboxes.yaml", "--json"]) == ["check"]
    assert _names(["--version", "set", "--help"]) == ["set"]
    # Root help, no arguments, an unknown name or another root option: all of them.
    for args in ([], ["--help"], ["-h", "check"], ["chek"], ["--bogus", "check"]):
        assert _names(args) is None, args


def _child(code: str, args: list[str]) -> tuple[int, str, str]:
    done = run_python(f"import sys; sys.argv[0] = 'provision'; {code}", *args)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    "args",
    [["--version"], ["check", "--help"], ["set", "--help"], ["--help"], ["chek"], []],
)
def test_the_console_script_answers_as_the_full_app(args: list[str]) -> None:
    # The console script (entry.console: --version alone before Typer, the rest through
    # cli.main, then the process ends without teardown) against the app with every command
    # registered, each in a child process.
    full = _child("from provision.cli import app; app()", args)
    assert _child("from provision.entry import console; console()", args) == full
    assert full[1] or full[2]


def test_main_puts_every_command_back(monkeypatch: pytest.MonkeyPatch) -> None:
    before = list(app.registered_commands)
    monkeypatch.setattr(sys, "argv", ["provision", "--version"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    assert app.registered_commands == before
    assert len(before) >= 6
