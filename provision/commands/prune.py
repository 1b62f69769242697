"""``provision set --prune``: delete the inboxes that are on the server but in none of the files.

The plan is made before any probe (one ``email-inbox.list``), so that a plan over the
``--max-delete`` cap stops the run before anything is written. The deletions run
after every create and update, one at a time, and only when no inbox of the run
failed (a partial file must not wipe the server). Each pruned inbox is an
:class:`~provision.results.InboxResult` of its own with a ``prune`` stage whose
``delete_state`` fact is kept true as the deletion goes: ``not-started`` until the
DELETE is sent, ``unknown`` while it is in flight, then ``deleted``, ``not-deleted``
or still ``unknown``. A stop (``provision.stopping``) starts no new deletion and
gives one in flight the grace, then a read-back, so a stopped run reports what
really happened.

Without ``--prune`` the same inboxes are listed as ``only-on-server``: informational,
no effect on the exit code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provision.errors import ConfigError, ConfigProblem
from provision.results import Action, FailureClass, InboxResult, Report, Stage, StageResult, Status
from provision.stopping import Stop

if TYPE_CHECKING:
    from provision.models import Inbox
    from provision.rocketchat.client import RocketChat

__all__ = [
    "DEFAULT_MAX_DELETE",
    "PruneOptions",
    "Pruning",
    "plan_prune",
]

#: ``--max-delete`` when not given: one wrong file cannot empty a server.
DEFAULT_MAX_DELETE = 5

# delete_state values (the stage's facts), in the order a deletion goes through them.
NOT_STARTED = "not-started"
UNKNOWN = "unknown"
DELETED = "deleted"
NOT_DELETED = "not-deleted"


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneOptions:
    """What ``--prune`` may delete.

    Attributes:
        enabled: ``--prune``: delete; otherwise only list the server-only inboxes.
        scopes: ``--prune-scope`` domains; only addresses in them are deleted
            (exact domain, case-insensitive). Empty: every domain.
        max_delete: ``--max-delete``: a plan with more deletions is an input error.
    """

    enabled: bool = False
    scopes: tuple[str, ...] = ()
    max_delete: int = DEFAULT_MAX_DELETE

    def settings(self) -> dict[str, Any]:
        """What the report's ``settings`` show: ``prune``, and its limits when on."""
        if not self.enabled:
            return {"prune": False}
        return {"prune": True, "prune_scope": list(self.scopes), "max_delete": self.max_delete}


def _domain(email: str) -> str:
    return email.rpartition("@")[2].casefold()


def plan_prune(
    stored: Iterable[Mapping[str, Any]], inboxes: Sequence[Inbox], options: PruneOptions
) -> list[Mapping[str, Any]]:
    """The stored inboxes that are in none of the files (and in scope), by address.

    Addresses match exactly, as ``email-inbox.search`` does (spec §1.6): an inbox
    whose stored address differs only in case is another inbox to Rocket.Chat.
    """
    wanted = {inbox.email for inbox in inboxes}
    scopes = {s.casefold() for s in options.scopes}
    found = [
        doc
        for doc in stored
        if isinstance(doc.get("_id"), str)
        and str(doc.get("email")) not in wanted
        and (not scopes or _domain(str(doc.get("email"))) in scopes)
    ]
    return sorted(found, key=lambda doc: (str(doc.get("email")), str(doc["_id"])))


def _check_plan(plan: Sequence[Mapping[str, Any]], options: PruneOptions, files: int) -> None:
    if not options.enabled:
        return
    if files == 0:
        raise ConfigError(
            [ConfigProblem("--prune: the files hold no inbox; refusing to delete every inbox")]
        )
    if len(plan) > options.max_delete:
        listed = ", ".join(str(doc.get("email")) for doc in plan[:10])
        more = f" and {len(plan) - 10} more" if len(plan) > 10 else ""
        raise ConfigError(
            [
                ConfigProblem(
                    f"--max-delete {options.max_delete}: --prune would delete {len(plan)} "
                    f"inboxes ({listed}{more}); give --max-delete {len(plan)} if that is "
                    "intended, or limit it with --prune-scope DOMAIN"
                )
            ]
        )


@dataclass(slots=True, kw_only=True)
class Pruning:
    """A run's prune: the plan (made before the probes) and one result per inbox in it."""

    options: PruneOptions
    dry_run: bool
    results: list[InboxResult] = field(default_factory=list)
    #: why the server's inboxes could not be listed (without ``--prune`` only)
    unlisted: str | None = None

    async def prepare(self, rc: RocketChat, inboxes: Sequence[Inbox]) -> None:
        """List the server's inboxes and plan; before any probe or write.

        Raises:
            ConfigError: ``--prune`` with no inbox in the files, or a plan over
                ``--max-delete``.
            RocketChatCallError: listing failed (only with ``--prune``; without it the
                list is informational and the report's ``settings.only_on_server`` says
                it could not be made).
        """
        from provision.errors import RocketChatCallError

        try:
            stored = await rc.list_inboxes()
        except RocketChatCallError as exc:
            if self.options.enabled:
                raise
            self.unlisted = f"not listed: {exc.message}"
            return
        plan = plan_prune(stored, inboxes, self.options)
        _check_plan(plan, self.options, len(inboxes))
        # Without --prune, or outside its scope: listed, never deleted.
        kept = [d for d in plan_prune(stored, inboxes, PruneOptions()) if d not in plan]
        departments = await _department_names(rc, [*plan, *kept])
        for doc in plan:
            self.results.append(_pending(doc, departments, self.options, self.dry_run))
        for doc in kept:
            self.results.append(_pending(doc, departments, PruneOptions(), self.dry_run))
            self.results[-1].stages[-1].message = _OUTSIDE_SCOPE

    async def run(
        self, rc: RocketChat, report: Report, *, strict: bool, stop: Stop | None = None
    ) -> None:
        """After every create and update: add the results to ``report``, then delete.

        Nothing is deleted when any inbox of the run failed (with ``strict``, a
        warning counts), in a dry run, or without ``--prune``. After a stop nothing
        new starts; a DELETE in flight gets the stop's grace, then a read-back.
        """
        stop = stop if stop is not None else Stop()
        if self.unlisted is not None:
            report.settings["only_on_server"] = self.unlisted
        failed = [r for r in report.inboxes if r.status(strict=strict) is Status.FAILED]
        report.inboxes.extend(self.results)
        # Deletions to make (action None), or to show in a dry run (DELETE).
        planned = [r for r in self.results if r.action in (None, Action.DELETE)]
        if stop.requested:  # the stop, not a failure, is why these are not deleted
            self.stopped(report, str(stop.name))
            return
        if failed and planned:
            why = f"{failed[0].name!r} <{failed[0].email}>"
            if len(failed) > 1:
                why += f" and {len(failed) - 1} more"
            for result in planned:
                _refuse(result, f"not deleted: --prune refused because {why} failed in this run")
            return
        for result in self.results:
            if result.action is not None:
                continue
            if stop.requested:
                _not_started(result, f"stopped by {stop.name}")
            elif rc.deadline is not None and time.monotonic() >= rc.deadline:
                _not_started(result, "the run's deadline passed", deadline=True)
            else:
                await _delete(rc, result, stop)

    def stopped(self, report: Report, signal_name: str) -> None:
        """A stopped run: every planned deletion is in ``report`` with its true state."""
        for result in self.results:
            if result.action is None:
                _not_started(result, f"stopped by {signal_name}")
            if result not in report.inboxes:
                report.inboxes.append(result)


_OUTSIDE_SCOPE = "only on the server: in none of the given files, outside --prune-scope (kept)"


def _pending(
    doc: Mapping[str, Any], departments: Mapping[str, str], options: PruneOptions, dry_run: bool
) -> InboxResult:
    # Server text as stored (render.terminal escapes what reaches a terminal); the
    # DELETE and its read-back use the id and address exactly.
    result = InboxResult(name=str(doc.get("name", "")), email=str(doc.get("email")))
    result.inbox_id = str(doc["_id"])
    stage = StageResult(stage=Stage.PRUNE)
    stage.facts.update(name=result.name, address=result.email)
    department = doc.get("department")
    if isinstance(department, str) and department:
        stage.facts["department"] = departments.get(department, department)
        stage.facts["department_id"] = department
    result.stages.append(stage)
    if not options.enabled:
        stage.status = Status.SKIPPED
        stage.message = "only on the server: in none of the given files (--prune would delete it)"
        result.action = Action.ONLY_ON_SERVER
    elif dry_run:
        stage.message = f"would delete inbox {result.inbox_id}: in none of the given files"
        result.action = Action.DELETE
    else:
        stage.facts["delete_state"] = NOT_STARTED
        stage.message = "not started"
    return result


async def _department_names(rc: RocketChat, plan: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Department names by id, for the plan; ids stay shown when they cannot be read."""
    from provision.errors import RocketChatCallError

    if not any(doc.get("department") for doc in plan):
        return {}
    try:
        departments = await rc.list_departments()
    except RocketChatCallError:
        return {}
    return {str(d.get("_id")): str(d.get("name")) for d in departments if d.get("name")}


async def _delete(rc: RocketChat, result: InboxResult, stop: Stop) -> None:
    from provision.errors import RocketChatCallError, RocketChatError, RocketChatNotFoundError

    stage = result.stages[-1]
    inbox_id, email = result.inbox_id, result.email
    assert inbox_id is not None
    sent: list[int] = []

    async def deleting() -> bool:
        sent.append(await rc.delete_inbox(inbox_id, email))
        return True

    async def gone() -> bool | None:
        try:
            return None if await rc.inbox_present(inbox_id, email) else True
        except RocketChatError:
            return None

    started = time.perf_counter()
    # From here until the answer the DELETE may have reached the server.
    stage.facts["delete_state"] = UNKNOWN
    stage.message = "deleting: not confirmed"
    try:
        confirmed = await stop.write_or_read_back(deleting(), gone)
    except RocketChatNotFoundError:
        stage.facts["delete_state"] = DELETED
        stage.message = f"inbox {inbox_id} was already gone (404): nothing deleted"
        result.action = Action.UNCHANGED
    except RocketChatCallError as exc:
        unknown = getattr(exc, "write_state", None) != "not-applied"
        stage.facts["delete_state"] = UNKNOWN if unknown else NOT_DELETED
        stage.fail(FailureClass.ROCKETCHAT, exc.message, hint=exc.hint)
        if exc.status is not None:
            stage.facts["http_status"] = exc.status
        result.action = Action.UNKNOWN if unknown else Action.FAILED
    else:
        if confirmed is None:
            stage.fail(
                FailureClass.ROCKETCHAT,
                f"stopped by {stop.name} while the DELETE was in flight: no answer within "
                "the grace and a read-back did not show the inbox gone, so it may still go",
                hint="rerun `provision set --prune` with the same files: it converges",
            )
            result.action = Action.UNKNOWN
        else:
            stage.facts["delete_state"] = DELETED
            if sent:
                stage.facts["delete_requests"] = sent[0]
                stage.message = f"deleted inbox {inbox_id} (read back: gone)"
            else:
                stage.facts["write_state"] = "confirmed-by-read-back"
                stage.message = f"deleted inbox {inbox_id} (stopped in flight; read back: gone)"
            result.action = Action.DELETED
    finally:
        stage.elapsed_ms = (time.perf_counter() - started) * 1000


def _refuse(result: InboxResult, why: str) -> None:
    stage = result.stages[-1]
    stage.status = Status.SKIPPED
    stage.message = why
    result.action = Action.SKIPPED


def _not_started(result: InboxResult, why: str, *, deadline: bool = False) -> None:
    stage = result.stages[-1]
    message = f"not deleted: {why} before this deletion started; the inbox is still there"
    if deadline:
        stage.fail(FailureClass.DEADLINE, message, hint="raise --timeout")
    else:
        stage.status = Status.SKIPPED
        stage.message = message
    result.action = Action.NOT_STARTED
