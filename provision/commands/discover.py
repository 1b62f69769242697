"""``provision discover`` as a library call: search, write the inbox file, and, given a
password, log into the best candidates exactly as ``provision check`` does.

:func:`discover` returns a :class:`DiscoverResult` and never prints.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provision.discover.search import Discovery, SearchOptions, search
from provision.models import ProbeOptions
from provision.results import ExitCode, Report

__all__ = ["DiscoverResult", "discover"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverResult:
    """What ``discover`` found and what it would write.

    Attributes:
        discovery: the whole search (candidates, assessments, lookups).
        inbox_file: the YAML inbox file, or ``None`` when a half has no usable server.
        login: the ``check`` report of that file, when a password was given.
    """

    discovery: Discovery
    inbox_file: str | None
    login: Report | None = None

    @property
    def exit_code(self) -> ExitCode:
        """16 offline, 17 nothing usable, the login's code if it failed, else 0."""
        if self.discovery.offline:
            return ExitCode.TRANSIENT
        if self.inbox_file is None:
            return ExitCode.NOTHING_FOUND
        if self.login is not None:
            return self.login.exit_code
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        """The whole search, the file and the login, JSON-ready (``--json``)."""
        return {
            "schema_version": 1,
            "command": "discover",
            "ok": self.exit_code is ExitCode.OK,
            "exit_code": int(self.exit_code),
            **self.discovery.to_json(),
            "inbox_file": self.inbox_file,
            "login": self.login.to_json() if self.login is not None else None,
        }


async def discover(
    address: str,
    options: SearchOptions | None = None,
    *,
    username: str | None = None,
    password_from: str | None = None,
    login: bool = False,
    probe_options: ProbeOptions | None = None,
    environ: Mapping[str, str] | None = None,
) -> DiscoverResult:
    """Find the servers of ``address`` and write its inbox file.

    Args:
        address: the inbox address.
        options: search caps, deadline, resolver, CAs.
        username: login name written into the file (default: the source's, else the address).
        password_from: ``VAR`` or ``file:PATH``, written as ``${VAR}`` / ``${file:PATH}``.
        login: log into the best SMTP and IMAP candidates with that password, as
            ``check`` does (needs ``password_from``).
        probe_options: options of that check (default: the search's caps and CA file).
        environ: where ``${VAR}`` is read for the login (default: ``os.environ``).

    Raises:
        ValueError: a malformed address or ``password_from``.
        ConfigError: the password cannot be read for the login (variable unset, file missing).
    """
    from provision.discover.inboxfile import inbox_file

    options = options or SearchOptions()
    if login and password_from is None:
        raise ValueError("a login needs password_from (VAR or file:PATH)")
    discovery = await search(address, options)
    text = inbox_file(discovery, username=username, password_from=password_from)
    if text is None or not login:
        return DiscoverResult(discovery=discovery, inbox_file=text)
    from provision.commands.check import check
    from provision.inbox import load_inboxes

    loaded = load_inboxes(["-"], stdin=io.StringIO(text), environ=environ)
    probe = probe_options or ProbeOptions(
        step_timeout=options.step_timeout,
        timeout=options.timeout,
        ca_file=options.ca_file,
        ehlo_name=options.ehlo_name,
    )
    report = await check(loaded.inboxes, probe, input_warnings=loaded.warnings)
    return DiscoverResult(discovery=discovery, inbox_file=text, login=report)
