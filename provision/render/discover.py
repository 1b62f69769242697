"""``provision discover``'s output: the candidates table (stderr) and the JSON (stdout)."""

from __future__ import annotations

import json
from typing import Any
from typing import Protocol as TypingProtocol

from provision.discover.candidates import Protocol
from provision.discover.search import Discovery
from provision.results import Report


class _Result(TypingProtocol):
    """What ``commands.discover.DiscoverResult`` offers (render and commands share a layer)."""

    @property
    def discovery(self) -> Discovery: ...
    @property
    def inbox_file(self) -> str | None: ...
    @property
    def login(self) -> Report | None: ...
    @property
    def attempts(self) -> tuple[Any, ...]: ...
    def to_json(self) -> dict[str, Any]: ...


__all__ = ["render_discover_json", "render_discover_table"]


def render_discover_json(result: _Result) -> str:
    """The whole search as JSON (``schema_version`` 1)."""
    return json.dumps(result.to_json(), indent=2)


def render_discover_table(result: _Result) -> str:
    """One line per candidate, in search order, with its verdict and reason."""
    discovery = result.discovery
    if discovery.offline:
        return f"discover {discovery.address}: {discovery.message}"
    best = {id(discovery.best(p)) for p in Protocol}
    rows = [("", "proto", "server:port", "from", "verdict", "secure", "why")]
    for a in discovery.assessments:
        c = a.candidate
        rows.append(
            (
                "*" if id(a) in best else "",
                str(c.protocol),
                f"{c.host}:{c.port}",
                str(c.origin),
                str(a.verdict),
                "" if a.secure is None else str(a.secure).lower(),
                "; ".join(x for x in (a.reason, *a.notes, *c.notes) if x),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:6], widths, strict=True)) + "  " + row[6]
        for row in rows
    ]
    for attempt in discovery.autoconfig:
        lines.append(f"autoconfig {attempt.url}: {attempt.outcome}")
    if result.inbox_file is None:
        lines.append("nothing usable: no SMTP or no IMAP server Rocket.Chat can log into")
    elif result.login is not None:
        if len(result.attempts) > 1:
            for n, attempt in enumerate(result.attempts, 1):
                lines.append(f"login attempt {n}: {_attempt_line(attempt.to_json())}")
        state = "passed" if result.login.ok else f"failed (exit {int(result.login.exit_code)})"
        lines.append(f"login with the password: {state}")
    return "\n".join(line.rstrip() for line in lines)


def _attempt_line(attempt: dict[str, Any]) -> str:
    parts = []
    for stage, server in (("smtp", attempt["smtp"]), ("imap", attempt["imap"])):
        state = attempt["stages"].get(stage, {})
        how = state.get("status", "not run")
        if state.get("class"):
            how += f" ({state['class']})"
        parts.append(f"{stage} {server} {how}")
    return ", ".join(parts)
