"""``provision set``: probe, then create or update each inbox on Rocket.Chat, idempotently.

Stages per inbox: validate (``provision.inbox``) -> probe (smtp, imap) -> submit ->
verify. Only an inbox whose every probe passed (and, with ``--strict``, drew no
warning) is sent to Rocket.Chat; the others get ``submit: skipped``. Each inbox is
one ``POST /api/v1/email-inbox``, so nothing is ever half-written:

* submit: ``email-inbox.search`` by address, then **create** (no ``_id``),
  **update** (with ``_id``, only when a field differs, passwords included) or
  **unchanged** (no write at all);
* verify: read the inbox back by id and compare; with ``wait_active`` keep reading
  and fail if Rocket.Chat switched it off (spec §3.2, §4).

Inboxes stored on the server but in none of the files are ``provision.commands.prune``'s:
planned before the probes, deleted (``--prune``) after every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from provision.commands.prune import PruneOptions
from provision.errors import ConfigError, ConfigProblem
from provision.models import Inbox, ProbeOptions
from provision.results import Action, FailureClass, InboxResult, Report, Stage, StageResult, Status
from provision.stopping import GRACE, READ_BACK, Stop, WriteAbandoned

if TYPE_CHECKING:
    from typing import Any

    from provision.errors import RocketChatCallError
    from provision.results import Finding
    from provision.rocketchat.client import RocketChat
    from provision.rocketchat.credentials import Credentials

__all__ = ["SetOptions", "resolve_departments", "set_inboxes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetOptions:
    """Where and how ``set`` writes.

    Attributes:
        server: Rocket.Chat base URL.
        credentials: a token, or a user and password (see ``provision.rocketchat``).
        allow_http: plain HTTP to a non-loopback server (shown in the report).
        dry_run: plan only; nothing is written.
        send_test: after a write, ask Rocket.Chat to send its test mail.
        wait_active: seconds to keep re-reading a written inbox; fail if it turns inactive.
        write_concurrency: inboxes submitted at once (the client waits out 429s).
        prune: ``--prune`` and its limits (``provision.commands.prune``).
    """

    server: str
    credentials: Credentials
    allow_http: bool = False
    dry_run: bool = False
    send_test: bool = False
    wait_active: float = 0.0
    write_concurrency: int = 2
    prune: PruneOptions = field(default_factory=PruneOptions)


#: How often ``wait_active`` re-reads an inbox.
_POLL = 1.0


async def set_inboxes(
    inboxes: Sequence[Inbox],
    options: ProbeOptions,
    target: SetOptions,
    *,
    input_warnings: Mapping[int, Sequence[Finding]] | None = None,
    progress: Report | None = None,
    on_inbox_done: Callable[[InboxResult], None] | None = None,
    stop: Stop | None = None,
) -> Report:
    """Probe every inbox, then submit and verify those whose probes passed.

    Args:
        inboxes: the inboxes in input order (addresses must be unique).
        options: probe options; ``options.timeout`` bounds the whole run.
        target: the Rocket.Chat server, credentials and ``set`` switches.
        input_warnings: findings from loading, by index into ``inboxes``.
        progress: a report to fill in as the run goes (so a stopped run can
            still show what was written); a new one when ``None``.
        on_inbox_done: called with each inbox's result as soon as its probes finish
            (as for :func:`provision.commands.check.check`).
        stop: a stop (``provision.stopping``) starts nothing new, cancels reads, gives
            writes in flight the grace and reads back those that did not answer; each
            inbox then shows what is true: written, ``unchanged``, ``not-started`` or
            ``unknown``; ``settings.stopped_by`` names the signal.

    Returns:
        The report: stages smtp, imap, submit, verify per inbox, plus ``action``
        and ``id``.

    Raises:
        ConfigError: a department name is unknown or ambiguous, or the URL is refused
            (before any probe or write).
    """
    from provision.commands.check import probe_all, report_settings
    from provision.commands.prune import Pruning
    from provision.errors import RocketChatCallError
    from provision.rocketchat.client import open_rocketchat
    from provision.rocketchat.transport import RocketChatOptions
    from provision.stopping import Stopped

    stop = stop if stop is not None else Stop()
    started = time.perf_counter()
    deadline = time.monotonic() + options.timeout
    stop.deadline = deadline
    report = progress if progress is not None else Report(command="set")
    report.command = "set"
    report.strict = options.strict
    report.settings = {
        **report_settings(options),
        "server": target.server,
        "allow_http": target.allow_http,
        "dry_run": target.dry_run,
        **target.prune.settings(),
    }
    pruning = Pruning(options=target.prune, dry_run=target.dry_run)
    try:
        async with contextlib.AsyncExitStack() as stack:
            async with stop.stoppable():
                rc = await stack.enter_async_context(
                    open_rocketchat(
                        target.server,
                        target.credentials,
                        RocketChatOptions.like_probes(options, allow_http=target.allow_http),
                        deadline=deadline,
                    )
                )
                stack.callback(_bound_logout, rc, stop)
                report.settings["rocketchat_version"] = rc.info.version
                departments = await resolve_departments(rc, inboxes)
                await pruning.prepare(rc, inboxes)
            report.inboxes[:] = await probe_all(
                inboxes,
                options,
                input_warnings=input_warnings,
                on_inbox_done=on_inbox_done,
                stop=stop,
            )
            gate = asyncio.Semaphore(max(1, target.write_concurrency))

            async def one(inbox: Inbox, result: InboxResult) -> None:
                async with gate:
                    if not stop.requested:
                        await _submit_and_verify(
                            rc, inbox, result, departments.get(inbox.email), target, options, stop
                        )

            tasks = [
                asyncio.ensure_future(one(inbox, result))
                for inbox, result in zip(inboxes, report.inboxes, strict=True)
            ]
            await stop.settle(tasks)
            for task in tasks:  # a bug in one inbox's job: the CLI reports an internal error
                if task.done() and not task.cancelled() and (error := task.exception()):
                    raise error
            await pruning.run(rc, report, strict=options.strict, stop=stop)
    except Stopped:
        pass  # stopped while connecting: nothing was probed or sent (``_stopped`` says so)
    except RocketChatCallError as exc:
        _unreachable(report, inboxes, exc)
    if stop.requested:
        _stopped(report, inboxes, str(stop.name))
        pruning.stopped(report, str(stop.name))
    report.elapsed_ms = (time.perf_counter() - started) * 1000
    return report


def _bound_logout(rc: RocketChat, stop: Stop) -> None:
    """After a stop, logging out (a password session) must not outlast it either."""
    if stop.requested:
        rc.deadline = min(rc.deadline or float("inf"), time.monotonic() + READ_BACK)


def _stopped(report: Report, inboxes: Sequence[Inbox], signal_name: str) -> None:
    """A stopped run's report: every inbox not reached says so (``not-started``)."""
    from provision.commands.check import stopped_probes

    report.settings["stopped_by"] = signal_name
    by_email = {r.email: r for r in report.inboxes}
    report.inboxes[:] = [
        by_email.get(inbox.email) or stopped_probes(inbox, signal_name, begun=False)
        for inbox in inboxes
    ]
    for result in report.inboxes:
        if result.action is not None:
            continue
        result.action = Action.NOT_STARTED
        stages = {s.stage: s for s in result.stages}
        for name in (Stage.SUBMIT, Stage.VERIFY):
            if name not in stages:
                result.stages.append(StageResult(stage=name))
        for ran in result.stages:
            if ran.stage in (Stage.SUBMIT, Stage.VERIFY):
                _skip(ran, f"not sent to Rocket.Chat: stopped by {signal_name}")


async def resolve_departments(rc: RocketChat, inboxes: Sequence[Inbox]) -> dict[str, str]:
    """Department ids by inbox address; names resolved through the Omnichannel API."""
    from provision.errors import RocketChatDepartmentError

    resolved: dict[str, str] = {}
    cache: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    for inbox in inboxes:
        if not inbox.department:
            continue
        try:
            if inbox.department not in cache:
                cache[inbox.department] = await rc.resolve_department(inbox.department)
            resolved[inbox.email] = cache[inbox.department]
        except RocketChatDepartmentError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            problems.append(
                ConfigProblem(
                    f"{exc.message}{hint}",
                    file=inbox.source.file,
                    line=inbox.source.line_of("department"),
                    inbox=repr(inbox.name),
                    field="department",
                )
            )
    if problems:
        raise ConfigError(problems)
    return resolved


async def _submit_and_verify(
    rc: RocketChat,
    inbox: Inbox,
    result: InboxResult,
    department_id: str | None,
    target: SetOptions,
    options: ProbeOptions,
    stop: Stop,
) -> None:
    from provision.errors import RocketChatCallError

    submit = StageResult(stage=Stage.SUBMIT)
    verify = StageResult(stage=Stage.VERIFY)
    result.stages += [submit, verify]
    if result.status(strict=options.strict) is Status.FAILED:
        why = "a probe failed" if _probe_failed(result) else "a probe warned (--strict)"
        _skip(submit, f"not sent to Rocket.Chat: {why}")
        _skip(verify, "nothing was submitted")
        result.action = Action.SKIPPED
        return
    started = time.perf_counter()
    try:
        # A stop cancels this only outside ``stop.write``: before anything was written.
        inbox_id, action = await _submit(rc, inbox, department_id, target, submit, stop)
    except RocketChatCallError as exc:
        _rocketchat_failure(submit, exc)
        _skip(verify, "submit failed")
        result.action = Action.UNKNOWN if exc_write_state(exc) == "unknown" else Action.FAILED
        return
    finally:
        submit.elapsed_ms = (time.perf_counter() - started) * 1000
    result.action, result.inbox_id = action, inbox_id
    if action is Action.UNKNOWN:
        _skip(verify, "the write's outcome is not known: nothing to read back")
        return
    if target.dry_run or inbox_id is None:
        _skip(verify, "dry run: nothing was written")
        return
    if stop.requested:
        _skip(verify, f"not read back: stopped by {stop.name}")
        return
    started = time.perf_counter()
    try:
        await _verify(rc, inbox, inbox_id, department_id, target, verify)
    except RocketChatCallError as exc:
        _rocketchat_failure(verify, exc)
    except asyncio.CancelledError:
        if stop.requested:
            if verify.message is None:
                _skip(verify, f"not read back: stopped by {stop.name}")
            else:
                verify.message += f"; --wait-active cut short: stopped by {stop.name}"
        raise
    finally:
        verify.elapsed_ms = (time.perf_counter() - started) * 1000


def exc_write_state(exc: RocketChatCallError) -> str | None:
    """The error's ``write_state`` (``"unknown"``: the answer was lost, no read-back)."""
    state = getattr(exc, "write_state", None)
    return state if isinstance(state, str) else None


async def _submit(
    rc: RocketChat,
    inbox: Inbox,
    department_id: str | None,
    target: SetOptions,
    stage: StageResult,
    stop: Stop,
) -> tuple[str | None, Action]:
    from provision.rocketchat.payload import (
        diff_inbox,
        inbox_payload,
        plan_body_for_create,
        plan_body_for_update,
    )

    wanted = inbox_payload(inbox, department_id=department_id)
    stored = await rc.search_inbox(inbox.email)
    if stored is None:
        stage.facts["changes"] = [c.to_json() for c in diff_inbox({}, wanted)]
        if target.dry_run:
            stage.message = "would create the inbox"
            return None, Action.CREATE
        inbox_id = await _write(rc, stop, plan_body_for_create(wanted), wanted, stage)
        if inbox_id is None:
            return None, Action.UNKNOWN
        stage.message = f"created inbox {inbox_id}"
        await _send_test(rc, inbox_id, target, stage, stop)
        return inbox_id, Action.CREATED
    inbox_id = str(stored["_id"])
    changes = diff_inbox(stored, wanted)
    stage.facts["changes"] = [c.to_json() for c in changes]
    if not changes:
        stage.message = f"inbox {inbox_id} is already as described: nothing written"
        return inbox_id, Action.UNCHANGED
    listed = ", ".join(str(c) for c in changes)
    if target.dry_run:
        stage.message = f"would update inbox {inbox_id}: {listed}"
        return inbox_id, Action.UPDATE
    if await _write(rc, stop, plan_body_for_update(stored, wanted), wanted, stage) is None:
        return inbox_id, Action.UNKNOWN
    stage.message = f"updated inbox {inbox_id}: {listed}"
    await _send_test(rc, inbox_id, target, stage, stop)
    return inbox_id, Action.UPDATED


async def _write(
    rc: RocketChat,
    stop: Stop,
    body: dict[str, Any],
    wanted: dict[str, Any],
    stage: StageResult,
) -> str | None:
    """Save the inbox; its id, or ``None`` when a stop left the outcome unknown.

    A write that the stop's grace cut short is read back by address: stored exactly
    as wanted, it counts as written; otherwise it may still land, and the stage says so.
    """
    from provision.errors import RocketChatError
    from provision.rocketchat.payload import diff_inbox

    async def stored_as_wanted() -> str | None:
        try:
            found = await rc.search_inbox(str(wanted["email"]))
        except RocketChatError:
            return None
        if found is None or diff_inbox(found, wanted) or not isinstance(found.get("_id"), str):
            return None
        stage.facts["write_state"] = "confirmed-by-read-back"
        return str(found["_id"])

    inbox_id = await stop.write_or_read_back(rc.save_inbox(body), stored_as_wanted)
    if inbox_id is not None:
        return inbox_id
    stage.fail(
        FailureClass.ROCKETCHAT,
        f"stopped by {stop.name} while the write was in flight: no answer within "
        f"{GRACE:g} s and a read-back did not show it applied, so it may or may not land",
        hint="rerun `provision set` with the same file: it converges (a write that landed "
        "comes out unchanged, one that did not is made)",
    )
    stage.facts["write_state"] = "unknown"
    return None


async def _send_test(
    rc: RocketChat, inbox_id: str, target: SetOptions, stage: StageResult, stop: Stop
) -> None:
    if not target.send_test:
        return
    if stop.requested:
        stage.facts["test_mail"] = f"not requested: stopped by {stop.name}"
        return
    try:
        await stop.write(rc.send_test(inbox_id))
    except WriteAbandoned:
        stage.facts["test_mail"] = f"unknown: stopped by {stop.name} before Rocket.Chat answered"
        return
    # Rocket.Chat fires the SMTP send without awaiting it (spec §1.7).
    stage.facts["test_mail"] = "requested"
    stage.facts["test_mail_note"] = (
        "Rocket.Chat does not wait for the send, so delivery is not confirmed; "
        "look for 'Test of inbox configuration' in the caller's mailbox"
    )


async def _verify(
    rc: RocketChat,
    inbox: Inbox,
    inbox_id: str,
    department_id: str | None,
    target: SetOptions,
    stage: StageResult,
) -> None:
    from provision.rocketchat.payload import diff_inbox, inbox_payload

    wanted = inbox_payload(inbox, department_id=department_id)
    stored = await rc.get_inbox(inbox_id)
    drift = diff_inbox(stored, wanted)
    if drift:
        stage.facts["drift"] = [c.to_json() for c in drift]
        stage.fail(
            FailureClass.ROCKETCHAT,
            "the stored inbox differs from what was sent: " + ", ".join(str(c) for c in drift),
            hint="another writer changed it, or this Rocket.Chat version drops fields",
        )
        return
    stage.message = "read back: as described"
    if target.wait_active <= 0 or not inbox.active:
        return
    until = time.monotonic() + target.wait_active
    while True:
        if stored.get("active") is False:
            stage.fail(
                FailureClass.ROCKETCHAT,
                "Rocket.Chat switched the inbox off (its IMAP connection failed "
                f"imap.maxRetries={inbox.imap.max_retries} times)",
                hint="read the EmailInbox lines of the Rocket.Chat log; the probe "
                "passed here, so the Rocket.Chat host may reach the servers differently",
                field="imap.maxRetries",
            )
            return
        remaining = until - time.monotonic()
        if remaining <= 0:
            stage.message = f"read back: as described, still active after {target.wait_active:g} s"
            return
        await asyncio.sleep(min(_POLL, remaining))
        stored = await rc.get_inbox(inbox_id)


def _probe_failed(result: InboxResult) -> bool:
    return any(
        s.status is Status.FAILED for s in result.stages if s.stage in (Stage.SMTP, Stage.IMAP)
    )


def _skip(stage: StageResult, why: str) -> None:
    stage.status = Status.SKIPPED
    stage.message = why


def _rocketchat_failure(stage: StageResult, exc: RocketChatCallError) -> None:
    stage.fail(FailureClass.ROCKETCHAT, exc.message, hint=exc.hint, field=exc.field)
    if exc.status is not None:
        stage.facts["http_status"] = exc.status
    if exc.error is not None:
        stage.facts["error"] = exc.error
    write_state = exc_write_state(exc)
    if write_state is not None:
        stage.facts["write_state"] = write_state


def _unreachable(report: Report, inboxes: Sequence[Inbox], exc: RocketChatCallError) -> None:
    """Rocket.Chat failed outside any one inbox's submit (connect, auth, departments)."""
    by_email = {r.email: r for r in report.inboxes}
    report.inboxes[:] = []
    for inbox in inboxes:
        result = by_email.get(inbox.email) or InboxResult.for_inbox(inbox)
        stages = {s.stage: s for s in result.stages}
        for probe in (Stage.SMTP, Stage.IMAP):
            if probe not in stages:
                stage = StageResult(stage=probe)
                _skip(stage, "not probed: Rocket.Chat could not be used")
                result.stages.append(stage)
        if Stage.SUBMIT not in stages:
            submit = StageResult(stage=Stage.SUBMIT)
            _rocketchat_failure(submit, exc)
            result.stages.append(submit)
            verify = StageResult(stage=Stage.VERIFY)
            _skip(verify, "nothing was submitted")
            result.stages.append(verify)
        if result.action is None:
            result.action = Action.FAILED
        report.inboxes.append(result)
