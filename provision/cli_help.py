"""What ``--help`` says beyond the options: each command's one-line purpose, examples and
exit codes. Kept apart from ``cli.py`` so the texts can be read (and tested) in one place.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import TypedDict

from provision.results import ExitCode

__all__ = ["EXIT_MEANINGS", "command_help", "invocation"]

#: Every exit code and what it means (the README's table says the same).
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "every inbox passed",
    ExitCode.INTERNAL: "a bug in provision (reported, never a traceback)",
    ExitCode.USAGE: "bad input: a flag, an inbox file, a missing variable",
    ExitCode.DNS: "a server name does not resolve",
    ExitCode.CONNECT: "a port is closed, filtered or unreachable",
    ExitCode.TLS: "TLS or certificate",
    ExitCode.PROTOCOL: "protocol or TLS-mode mismatch (the `secure` flag, the port)",
    ExitCode.AUTH: "authentication",
    ExitCode.MAILBOX: "mailbox or sender",
    ExitCode.TRANSIENT: "transient: 4xx, throttling, timeouts, the deadline",
    ExitCode.NOTHING_FOUND: "discover found no usable SMTP or IMAP server",
    ExitCode.DRIFT: "audit: stored inboxes differ from the files (nothing worse failed)",
    ExitCode.ROCKETCHAT: "Rocket.Chat's API refused or failed",
    ExitCode.STOPPED_SIGHUP: "stopped by SIGHUP (the report says what was done)",
    ExitCode.STOPPED_SIGINT: "stopped by SIGINT, Ctrl-C (the report says what was done)",
    ExitCode.STOPPED_SIGTERM: "stopped by SIGTERM (the report says what was done)",
}
#: A signal stops every command but ``schema`` (``provision.stopping``).
_STOPPED = (ExitCode.STOPPED_SIGHUP, ExitCode.STOPPED_SIGINT, ExitCode.STOPPED_SIGTERM)

_PROBE_CODES = (
    ExitCode.OK,
    ExitCode.USAGE,
    ExitCode.DNS,
    ExitCode.CONNECT,
    ExitCode.TLS,
    ExitCode.PROTOCOL,
    ExitCode.AUTH,
    ExitCode.MAILBOX,
    ExitCode.TRANSIENT,
)


class CommandHelp(TypedDict):
    """Keyword arguments of ``typer.Typer.command`` that carry help text."""

    short_help: str
    epilog: str


def _epilog(examples: tuple[str, ...], codes: tuple[ExitCode, ...]) -> str:
    # "\b" keeps click from re-wrapping the paragraph that follows it.
    lines = ["\b", "Examples:", *(f"  {example}" for example in examples), "", "\b", "Exit codes:"]
    lines += [f"  {int(code):>3}  {EXIT_MEANINGS[code]}" for code in codes]
    return "\n".join(lines)


_HELP: dict[str, tuple[str, tuple[str, ...], tuple[ExitCode, ...]]] = {
    "check": (
        "Log into each inbox's SMTP and IMAP server as Rocket.Chat would.",
        (
            "provision check inboxes.yaml",
            "provision check inboxes.yaml --ca-file corp-ca.pem --junit report.xml",
            "provision check --offline inboxes/*.yaml      # input rules only",
            "provision check inbox.yaml --envelope --round-trip  # send as it, mail to itself",
            "provision check inboxes.yaml --serve :9188 --every 5m  # a Prometheus exporter",
        ),
        (*_PROBE_CODES, *_STOPPED),
    ),
    "set": (
        "Probe each inbox, then create or update it in Rocket.Chat.",
        (
            "provision set inboxes.yaml --server https://chat.example.com",
            "provision set inboxes.yaml --dry-run          # probe and plan, write nothing",
            "provision set inboxes/*.yaml --prune --dry-run  # also list what would be deleted",
        ),
        (*_PROBE_CODES, ExitCode.ROCKETCHAT, *_STOPPED),
    ),
    "discover": (
        "Find an address's mail servers and write its inbox file.",
        (
            "provision discover support@example.com > inbox.yaml",
            "provision discover support@example.com --password-from SUPPORT_PASSWORD -o inbox.yaml",
        ),
        (*_PROBE_CODES, ExitCode.NOTHING_FOUND, *_STOPPED),
    ),
    "sandbox": (
        "Run local mail servers and a Rocket.Chat double to try provision.",
        (
            "provision sandbox                             # until Ctrl-C",
            "provision check --sandbox                     # or start one just for a run",
        ),
        (ExitCode.USAGE, *_STOPPED),
    ),
    "export": (
        "Write Rocket.Chat's inboxes as an inbox file (no passwords).",
        (
            "provision export --server https://chat.example.com -o inboxes.yaml",
            "provision export --server https://chat.example.com --json",
        ),
        (ExitCode.OK, ExitCode.USAGE, ExitCode.ROCKETCHAT, *_STOPPED),
    ),
    "audit": (
        "Probe the inboxes stored in Rocket.Chat as check does; find drift.",
        (
            "provision audit --server https://chat.example.com",
            "provision audit --email support@example.com --json",
            "provision audit --against inboxes.yaml --junit audit.xml   # drift is exit 18",
        ),
        (*_PROBE_CODES, ExitCode.DRIFT, ExitCode.ROCKETCHAT, *_STOPPED),
    ),
    "schema": (
        "Print the JSON Schema of the inbox file.",
        ("provision schema > inbox.schema.json",),
        (ExitCode.OK,),
    ),
}


def command_help(name: str) -> CommandHelp:
    """The one-line purpose (the command list shows it uncut) and the epilog of ``name``."""
    purpose, examples, codes = _HELP[name]
    return CommandHelp(short_help=purpose, epilog=_epilog(examples, codes))


def invocation(argv0: str | None = None) -> str:
    """How to run this same ``provision`` again, as the user can paste it: ``provision``
    when that is what the shell finds, else the path that was run (``.venv/bin/provision``
    after the README's install), else ``python -m provision``."""
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    found = shutil.which("provision")
    if found and os.path.exists(argv0) and os.path.samefile(found, argv0):
        return "provision"
    if os.path.basename(argv0) == "provision" and os.access(argv0, os.X_OK):
        return shlex.quote(argv0 if os.sep in argv0 else f".{os.sep}{argv0}")
    return f"{shlex.quote(sys.executable)} -m provision"
