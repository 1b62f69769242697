"""``provision discover`` as a library call: search, write the inbox file, and, given a
password, log into the best candidates exactly as ``provision check`` does.

:func:`discover` returns a :class:`DiscoverResult` and never prints.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provision.discover.assess import Assessment
from provision.discover.candidates import Protocol
from provision.discover.search import Discovery, SearchOptions, search
from provision.models import ProbeOptions
from provision.results import ExitCode, FailureClass, InboxResult, Report, Stage, Status

__all__ = ["MAX_LOGIN_TRIES", "DiscoverResult", "LoginAttempt", "discover"]

#: Usable candidates logged into per protocol, best first, while the login fails for a
#: reason another server may not share (a closed port, a TLS or protocol problem).
MAX_LOGIN_TRIES = 3

_F = FailureClass
#: Failures of the account or the password, not of the server: the same at every
#: candidate, and each retry would add a failed login toward a lockout.
_ACCOUNT_FAILURES = frozenset(
    {
        _F.AUTH_FAILED,
        _F.APP_PASSWORD_REQUIRED,
        _F.BASIC_AUTH_DISABLED,
        _F.OAUTH_REJECTED,
        _F.NON_ASCII_CREDENTIALS,
        _F.MAILBOX,
        _F.MAILBOX_READ_ONLY,
        _F.THROTTLED,
        _F.DEADLINE,
    }
)


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """One ``check`` of a pair of candidates with the password."""

    smtp: Assessment
    imap: Assessment
    report: Report

    def to_json(self) -> dict[str, Any]:
        inbox = self.report.inboxes[0]
        return {
            "smtp": f"{self.smtp.candidate.host}:{self.smtp.candidate.port}",
            "imap": f"{self.imap.candidate.host}:{self.imap.candidate.port}",
            "ok": self.report.ok,
            "stages": {
                str(s.stage): {
                    "status": str(s.status),
                    "class": str(s.failure) if s.failure else None,
                }
                for s in inbox.stages
            },
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverResult:
    """What ``discover`` found and what it would write.

    Attributes:
        discovery: the whole search (candidates, assessments, lookups).
        inbox_file: the YAML inbox file, or ``None`` when a half has no usable server.
        login: the ``check`` report of that file, when a password was given.
        attempts: every pair of candidates logged into, in order; a half that passed
            at one attempt is what the file names.
    """

    discovery: Discovery
    inbox_file: str | None
    login: Report | None = None
    attempts: tuple[LoginAttempt, ...] = ()

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
            "login_attempts": [a.to_json() for a in self.attempts],
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
            ``check`` does (needs ``password_from``); a half that fails for a server's
            reason (not the account's) moves on to its next usable candidate.
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
    probe = probe_options or ProbeOptions(
        step_timeout=options.step_timeout,
        timeout=options.timeout,
        ca_file=options.ca_file,
        ehlo_name=options.ehlo_name,
    )
    attempts = await _log_in(
        discovery, probe, username=username, password_from=password_from, environ=environ
    )
    smtp = _passed(attempts, Stage.SMTP) or attempts[0]
    imap = _passed(attempts, Stage.IMAP) or attempts[0]
    text = inbox_file(
        discovery,
        username=username,
        password_from=password_from,
        smtp=smtp.smtp,
        imap=imap.imap,
    )
    return DiscoverResult(
        discovery=discovery,
        inbox_file=text,
        login=_combined(smtp.report, imap.report),
        attempts=tuple(attempts),
    )


async def _log_in(
    discovery: Discovery,
    probe: ProbeOptions,
    *,
    username: str | None,
    password_from: str | None,
    environ: Mapping[str, str] | None,
) -> list[LoginAttempt]:
    """Check the best pair; while a half fails for a server's reason, move that half to
    its next candidate (at most :data:`MAX_LOGIN_TRIES` each, within one deadline). Any
    failure of the account or the password ends the tries."""
    from provision.commands.check import check
    from provision.discover.inboxfile import inbox_file
    from provision.inbox import load_inboxes

    smtps = discovery.usable(Protocol.SMTP)[:MAX_LOGIN_TRIES]
    imaps = discovery.usable(Protocol.IMAP)[:MAX_LOGIN_TRIES]
    deadline = time.monotonic() + probe.timeout
    attempts: list[LoginAttempt] = []
    i = j = 0
    while True:
        text = inbox_file(
            discovery,
            username=username,
            password_from=password_from,
            smtp=smtps[i],
            imap=imaps[j],
        )
        assert text is not None  # both halves are given
        loaded = load_inboxes(["-"], stdin=io.StringIO(text), environ=environ)
        remaining = max(deadline - time.monotonic(), 0.001)
        report = await check(
            loaded.inboxes,
            dataclasses.replace(probe, timeout=remaining),
            input_warnings=loaded.warnings,
        )
        attempts.append(LoginAttempt(smtps[i], imaps[j], report))
        inbox = report.inboxes[0]
        if _account_failure(inbox):
            # The password or account is wrong: another server would only count one
            # more failed login against it.
            return attempts
        next_i = i + 1 if _server_failure(inbox, Stage.SMTP) and i + 1 < len(smtps) else i
        next_j = j + 1 if _server_failure(inbox, Stage.IMAP) and j + 1 < len(imaps) else j
        if (next_i, next_j) == (i, j) or time.monotonic() >= deadline:
            return attempts
        i, j = next_i, next_j


def _stage(inbox: InboxResult, stage: Stage) -> Status | None:
    found = [s for s in inbox.stages if s.stage is stage]
    return found[0].status if found else None


def _server_failure(inbox: InboxResult, stage: Stage) -> bool:
    """The stage failed for a reason another candidate may not have."""
    for s in inbox.stages:
        if s.stage is stage and s.status is Status.FAILED:
            return s.failure not in _ACCOUNT_FAILURES
    return False


def _account_failure(inbox: InboxResult) -> bool:
    return any(s.status is Status.FAILED and s.failure in _ACCOUNT_FAILURES for s in inbox.stages)


def _passed(attempts: list[LoginAttempt], stage: Stage) -> LoginAttempt | None:
    for attempt in attempts:
        if _stage(attempt.report.inboxes[0], stage) in (Status.PASSED, Status.WARNING):
            return attempt
    return None


def _combined(smtp: Report, imap: Report) -> Report:
    """One report of the file written: its SMTP stage from the attempt that probed its
    SMTP server, its IMAP stage from the one that probed its IMAP server. The probes are
    independent, so each stage is exactly what a ``check`` of the file finds."""
    if smtp is imap:
        return smtp
    base, other = smtp.inboxes[0], imap.inboxes[0]
    stages = [s for s in base.stages if s.stage is not Stage.IMAP]
    stages += [s for s in other.stages if s.stage is Stage.IMAP]
    order = {Stage.SMTP: 0, Stage.IMAP: 1}
    stages.sort(key=lambda s: order.get(s.stage, 2))
    inbox = dataclasses.replace(base, stages=stages)
    return dataclasses.replace(smtp, inboxes=[inbox], elapsed_ms=smtp.elapsed_ms + imap.elapsed_ms)
