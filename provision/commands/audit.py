"""``provision audit``: probe the inboxes Rocket.Chat has stored, as ``check`` probes a file's.

One round: list every stored inbox (paging ``email-inbox.list``), turn each into the
:class:`~provision.models.Inbox` a file would give (``inbox.stored``), probe them all
with :func:`~provision.commands.check.probe_all` (same steps, classes, hints, caps,
concurrency bound and deadline as ``check``), then add per inbox:

* stage ``rocketchat``: what Rocket.Chat says of it (id, ``active``, dates); an inactive
  inbox whose probe fails was most likely switched off by Rocket.Chat itself
  (``switched-off``), one whose probe passes can be turned on again (``inactive-works``);
* stage ``drift`` (with ``against``): the stored inbox field by field against the file's
  (a password only "differs"), or that it is only on the server.

An inbox only in the files, or an asked-for address Rocket.Chat does not store, gets a
result of its own. Drift fails with exit 18, which yields to every probe failure
(``InboxResult.exit_code``). The stored passwords stay in memory: the documents are
kept only for the comparison, the probes get them as ``Secret`` objects, and every text
taken from the server is scrubbed of them (the client's error texts too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.errors import ConfigError, RocketChatUnavailableError
from provision.models import Inbox, ProbeOptions
from provision.results import (
    ExitCode,
    FailureClass,
    Finding,
    InboxResult,
    Report,
    RocketChatState,
    Stage,
    StageResult,
    Status,
)

if TYPE_CHECKING:
    from provision.rocketchat.credentials import Credentials
    from provision.stopping import Stop

__all__ = ["AUDITED_FROM", "AuditTarget", "audit_inboxes"]

#: The "file" of an inbox read from Rocket.Chat (renderers show no path for ``<...>``).
AUDITED_FROM = "<rocketchat>"

#: ``started``: given the inboxes about to be probed, returns the per-inbox callback
#: (``CiOutputs.started``: progress, and the sources for field lines).
Started = Callable[[Sequence[Inbox]], Callable[[InboxResult], None] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditTarget:
    """The Rocket.Chat server to audit and what to audit of it.

    Attributes:
        server: Rocket.Chat base URL.
        credentials: a token, or a user and password, of a user with ``manage-email-inbox``.
        allow_http: plain HTTP to a non-loopback server (shown in the report).
        emails: audit only these addresses (exact, as Rocket.Chat matches them); every
            one that is not stored is reported. Empty: every stored inbox.
        page_size: inboxes asked for per ``email-inbox.list`` page.
    """

    server: str
    credentials: Credentials
    allow_http: bool = False
    emails: tuple[str, ...] = ()
    page_size: int = 100


@dataclass(slots=True, kw_only=True)
class _Stored:
    """One stored inbox: the document (passwords in clear, memory only), its model (``None``
    when the stored settings break the rules, with the problems), what the report shows."""

    doc: dict[str, Any]
    state: RocketChatState
    inbox: Inbox | None
    problems: list[str]
    email: str
    label: str

    @classmethod
    def read(cls, doc: dict[str, Any], index: int) -> _Stored:
        from provision.inbox.stored import stored_inbox

        state = RocketChatState(
            inbox_id=_shown(doc, doc.get("_id")) or f"#{index}",
            active=doc.get("active") is True,
            created_at=_shown(doc, doc.get("_createdAt")),
            updated_at=_shown(doc, doc.get("_updatedAt")),
        )
        email, name = doc.get("email"), doc.get("name")
        try:
            inbox: Inbox | None = stored_inbox(doc, origin=AUDITED_FROM, index=index)
            problems: list[str] = []
        except ConfigError as exc:
            inbox, problems = None, [_scrubbed(doc, str(p)) for p in exc.problems]
        return cls(
            doc=doc,
            state=state,
            inbox=inbox,
            problems=problems,
            email=email if isinstance(email, str) else "",
            label=_scrubbed(doc, name if isinstance(name, str) and name else f"#{index}"),
        )


async def audit_inboxes(
    options: ProbeOptions,
    target: AuditTarget,
    *,
    against: Sequence[Inbox] | None = None,
    against_files: Sequence[str] = (),
    started: Started | None = None,
    stop: Stop | None = None,
) -> Report:
    """One audit round: list, probe, compare; the report (``provision audit`` as a call).

    Args:
        options: probe options, as for ``check``; ``options.timeout`` bounds the whole
            round (listing included).
        target: the server, credentials and address filter.
        against: inboxes from files (``load_inboxes``) to compare with; ``None``: no
            drift check.
        against_files: the names of those files, for messages.
        started: called once with the inboxes about to be probed (see ``Started``).
        stop: a stop (``provision.stopping``) during the probes reports each inbox's
            true state (``settings.stopped_by`` names the signal), as ``check`` does.

    Returns:
        The report (``command`` ``"audit"``); it never raises for probe outcomes.

    Raises:
        ConfigError: a department of ``against`` is unknown, or the URL is refused.
        RocketChatCallError: Rocket.Chat could not be read (authentication,
            permission, transport, the deadline).
    """
    from provision.commands.check import probe_all, report_settings

    began = time.perf_counter()
    deadline = time.monotonic() + options.timeout
    report = Report(command="audit", strict=options.strict)
    report.settings = {
        **report_settings(options),
        "server": target.server,
        "allow_http": target.allow_http,
        "emails": list(target.emails),
        "against": list(against_files) if against is not None else None,
    }
    # A stop while Rocket.Chat is read ends the round at once (nothing probed yet):
    # ``Stopped`` reaches the caller, which reports a stopped run of no inboxes.
    async with stop.stoppable() if stop is not None else contextlib.nullcontext():
        stored, departments, version = await _read(target, options, deadline, against)
    report.settings["rocketchat_version"] = version
    wanted = set(target.emails)
    if wanted:
        stored = [s for s in stored if s.email in wanted]
    by_email = {inbox.email: inbox for inbox in against or ()}
    inboxes = [s.inbox for s in stored if s.inbox is not None]
    callback = started([by_email.get(i.email, i) for i in inboxes]) if started else None
    remaining = max(deadline - time.monotonic(), 0.1)
    probed = [s for s in stored if s.inbox is not None]
    results = iter(
        await probe_all(
            inboxes,
            options,
            on_inbox_done=callback,
            time_left=remaining,
            stop=stop,
            options_for=lambda index, _inbox: _own_options(options, probed[index].state),
        )
    )
    for entry in stored:
        result = next(results) if entry.inbox is not None else _unusable(entry)
        result.name = entry.label  # scrubbed: a stored name may hold anything
        _place(result, by_email.get(result.email))
        result.rocketchat = entry.state
        result.stages.append(_state_stage(entry, result, round_trip=options.round_trip))
        if against is not None:
            file_inbox = by_email.get(result.email)
            result.stages.append(
                _drift_stage(entry, file_inbox, departments)
                if file_inbox is not None
                else _only_on_server(against_files)
            )
        report.inboxes.append(result)
    present = {s.email for s in stored}
    for email in target.emails:
        if email not in present:
            report.inboxes.append(_not_stored(email, by_email.get(email), against is not None))
    if not wanted:
        for inbox in against or ():
            if inbox.email not in present:
                report.inboxes.append(_not_stored(inbox.email, inbox, True, asked=False))
    if stop is not None and stop.requested:
        report.settings["stopped_by"] = stop.name
    report.elapsed_ms = (time.perf_counter() - began) * 1000
    return report


def _own_options(options: ProbeOptions, state: RocketChatState) -> ProbeOptions:
    """A stored inbox's probe options: the IMAP search from the day Rocket.Chat created
    it (what its own search finds), and a round trip only when it is inactive, since an
    active inbox would import the test message."""
    import dataclasses

    return dataclasses.replace(
        options,
        round_trip=options.round_trip and not state.active,
        unseen_since=_day(state.created_at),
    )


def _day(stamp: str | None) -> dt.date | None:
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(dt.UTC).date()
    except ValueError:
        return None


async def _read(
    target: AuditTarget,
    options: ProbeOptions,
    deadline: float,
    against: Sequence[Inbox] | None,
) -> tuple[list[_Stored], dict[str, str], str | None]:
    """Every stored inbox (in Rocket.Chat's order), the departments of ``against``, the version."""
    from provision.rocketchat.client import open_rocketchat
    from provision.rocketchat.transport import RocketChatOptions

    budget = max(deadline - time.monotonic(), 0.1)
    try:
        async with asyncio.timeout(budget):
            async with open_rocketchat(
                target.server,
                target.credentials,
                RocketChatOptions.like_probes(options, allow_http=target.allow_http),
                deadline=deadline,
            ) as rc:
                docs = await rc.list_inboxes(page_size=target.page_size)
                departments: dict[str, str] = {}
                if against:
                    from provision.commands.set import resolve_departments

                    departments = await resolve_departments(rc, against)
                version = rc.info.version
    except TimeoutError:
        raise RocketChatUnavailableError(
            f"Rocket.Chat's inboxes could not be read within the deadline of {options.timeout:g} s",
            hint="raise --timeout",
            method="GET",
            path="/api/v1/email-inbox.list",
        ) from None
    return [_Stored.read(doc, index) for index, doc in enumerate(docs)], departments, version


def _passwords(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for section in ("smtp", "imap"):
        settings = doc.get(section)
        if isinstance(settings, Mapping) and isinstance(settings.get("password"), str):
            out.append(settings["password"])
    return out


def _scrubbed(doc: Mapping[str, Any], text: str) -> str:
    """Server text made safe to show: control characters escaped, the passwords masked."""
    from provision.probes._scrub import scrub

    return scrub(text, *_passwords(doc))


def _shown(doc: Mapping[str, Any], value: Any) -> str | None:
    return _scrubbed(doc, value) if isinstance(value, str) and value else None


def _place(result: InboxResult, file_inbox: Inbox | None) -> None:
    """Name the inbox's place: its file and line when the files describe it, else none."""
    if file_inbox is not None:
        result.file, result.line = file_inbox.source.file, file_inbox.source.line
    else:
        result.file, result.line = None, None


def _scrub_name(name: str) -> str:
    from provision.probes._scrub import scrub

    return scrub(name)


def _unusable(entry: _Stored) -> InboxResult:
    """A stored inbox that breaks the file's rules: not probed, the problems named."""
    result = InboxResult(name=entry.label, email=_scrub_name(entry.email))
    for stage in (Stage.SMTP, Stage.IMAP):
        skipped = StageResult(stage=stage, status=Status.SKIPPED)
        skipped.message = "not probed: the stored settings break the inbox rules"
        result.stages.append(skipped)
    return result


def _probe_failures(result: InboxResult) -> list[StageResult]:
    return [
        s
        for s in result.stages
        if s.stage in (Stage.SMTP, Stage.IMAP) and s.status is Status.FAILED
    ]


def _state_stage(entry: _Stored, result: InboxResult, *, round_trip: bool = False) -> StageResult:
    """Stage ``rocketchat``: the stored state, and what an inactive inbox means."""
    state = entry.state
    stage = StageResult(stage=Stage.ROCKETCHAT)
    stage.facts = {"id": state.inbox_id, "active": state.active, "updated_at": state.updated_at}
    if round_trip and state.active:
        stage.facts["notes"] = [
            "no round trip: the inbox is active, and Rocket.Chat would import the test message"
        ]
    stage.message = (
        f"{'active' if state.active else 'inactive'} (id {state.inbox_id}"
        + (f", updated {state.updated_at}" if state.updated_at else "")
        + ")"
    )
    if entry.inbox is None:
        return stage.fail(
            FailureClass.ROCKETCHAT,
            "Rocket.Chat stores this inbox in a form it cannot use: " + "; ".join(entry.problems),
            hint="fix it in Omnichannel > Email Inboxes, or write it again with provision set",
        )
    if state.active:
        return stage
    failures = _probe_failures(result)
    stage.warn(_switched_off(entry.inbox, failures) if failures else _can_be_on())
    return stage


def _switched_off(inbox: Inbox, failures: Sequence[StageResult]) -> Finding:
    """An inactive inbox whose probe fails: why Rocket.Chat most likely switched it off."""
    imap = [s for s in failures if s.stage is Stage.IMAP]
    imap_failed = bool(imap)
    # Rocket.Chat trips over IMAP: that failure's fix comes first.
    first = imap[0] if imap else failures[0]
    logins = " and ".join(
        f"the {s.stage.value.upper()} login ({s.failure.value if s.failure else 'failed'})"
        for s in failures
    ) + (" fail" if len(failures) > 1 else " fails")
    retries = inbox.imap.max_retries
    if imap_failed and retries >= 0:
        why = (
            "most likely Rocket.Chat switched it off itself, after "
            f"imap.maxRetries={retries} failed IMAP connections"
        )
    elif imap_failed:
        why = "imap.maxRetries is -1 (retry forever), so someone switched it off"
    else:
        why = "Rocket.Chat switches an inbox off only for IMAP failures, so someone switched it off"
    fix = first.hint or f"fix {first.field or first.stage.value}"
    return Finding(
        code="switched-off",
        message=f"the inbox is inactive and {logins}: {why}",
        hint=f"{fix}; then turn it on again (active: true with provision set, or in "
        "Omnichannel > Email Inboxes)",
        field=first.field,
        strict_exit=first.failure.exit_code if first.failure else ExitCode.ROCKETCHAT,
    )


def _can_be_on() -> Finding:
    return Finding(
        code="inactive-works",
        message="the inbox is inactive, but its SMTP and IMAP logins work now: "
        "it can be turned on again",
        hint="set active: true and run provision set, or switch it on in "
        "Omnichannel > Email Inboxes",
        field="active",
        strict_exit=ExitCode.ROCKETCHAT,
    )


def _drift_stage(entry: _Stored, file_inbox: Inbox, departments: Mapping[str, str]) -> StageResult:
    """Stage ``drift``: the stored inbox against the file's, field by field."""
    from provision.rocketchat.payload import diff_inbox, inbox_payload

    stage = StageResult(stage=Stage.DRIFT)
    wanted = inbox_payload(file_inbox, department_id=departments.get(file_inbox.email))
    changes = diff_inbox(entry.doc, wanted)
    where = file_inbox.source.file + (
        f":{file_inbox.source.line}" if file_inbox.source.line else ""
    )
    if not changes:
        stage.message = f"as described in {where}"
        return stage
    stage.facts["changes"] = [
        {k: _scrubbed(entry.doc, v) if isinstance(v, str) else v for k, v in c.drift_json().items()}
        for c in changes
    ]
    listed = _scrubbed(entry.doc, ", ".join(c.as_drift() for c in changes))
    return stage.fail(
        FailureClass.DRIFT,
        f"differs from {where}: {listed}",
        hint="run provision set with the file to write it, or change the file to what is "
        "stored (provision export writes it)",
        field=changes[0].path,
    )


def _only_on_server(against_files: Sequence[str]) -> StageResult:
    return StageResult(stage=Stage.DRIFT).fail(
        FailureClass.DRIFT,
        f"only on the server: {', '.join(against_files) or 'the inbox files'} describe no "
        "inbox with this address",
        hint="add it to the file (provision export writes it), or delete it in Rocket.Chat",
    )


def _not_stored(
    email: str, file_inbox: Inbox | None, drift: bool, *, asked: bool = True
) -> InboxResult:
    """An address asked for (``--email``) or described in a file that Rocket.Chat lacks."""
    if file_inbox is not None:
        result = InboxResult.for_inbox(file_inbox)
    else:
        result = InboxResult(name=_scrub_name(email), email=_scrub_name(email))
    for probe in (Stage.SMTP, Stage.IMAP):
        skipped = StageResult(stage=probe, status=Status.SKIPPED)
        skipped.message = "not probed: Rocket.Chat stores no inbox with this address"
        result.stages.append(skipped)
    state = StageResult(stage=Stage.ROCKETCHAT)
    if asked:
        state.fail(
            FailureClass.NOT_STORED,
            "Rocket.Chat stores no inbox with this address",
            hint="the match is exact and case-sensitive; provision export lists the stored ones",
            field="email",
        )
    else:
        state.status = Status.SKIPPED
        state.message = "not stored"
    result.stages.append(state)
    if drift and file_inbox is not None:
        result.stages.append(
            StageResult(stage=Stage.DRIFT).fail(
                FailureClass.DRIFT,
                "only in the file: Rocket.Chat stores no inbox with this address",
                hint="run provision set with the file to create it",
                field="email",
            )
        )
    return result
