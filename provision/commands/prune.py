"""``provision set --prune``: delete the inboxes that are on the server but in none of the files.

The plan is made before any probe (one ``email-inbox.list``), so that a plan over the
``--max-delete`` cap stops the run before anything is written. The deletions run
after every create and update, one at a time, and only when no inbox of the run
failed (a partial file must not wipe the server). Each pruned inbox is an
:class:`~provision.results.InboxResult` of its own with a ``prune`` stage whose
``delete_state`` fact is kept true as the deletion goes: ``not-started`` until the
DELETE is sent, ``unknown`` while it is in flight, then ``deleted``, ``not-deleted``
or still ``unknown`` (so an interrupted run reports what really happened).

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

if TYPE_CHECKING:
    from provision.models import Inbox
    from provision.rocketchat.client import RocketChat

__all__ = [
    "DEFAULT_MAX_DELETE",
    "PruneOptions",
    "Pruning",
    "mark_prune_interrupted",
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

    @classmethod
    async def prepare(
        cls, rc: RocketChat, inboxes: Sequence[Inbox], options: PruneOptions, *, dry_run: bool
    ) -> Pruning:
        """List the server's inboxes and plan; before any probe or write.

        Raises:
            ConfigError: ``--prune`` with no inbox in the files, or a plan over
                ``--max-delete``.
            RocketChatCallError: listing failed (only with ``--prune``; without it the
                list is informational and the report's ``settings.only_on_server`` says
                it could not be made).
        """
        from provision.errors import RocketChatCallError

        pruning = cls(options=options, dry_run=dry_run)
        try:
            stored = await rc.list_inboxes()
        except RocketChatCallError as exc:
            if options.enabled:
                raise
            pruning.unlisted = f"not listed: {exc.message}"
            return pruning
        plan = plan_prune(stored, inboxes, options)
        _check_plan(plan, options, len(inboxes))
        # Without --prune, or outside its scope: listed, never deleted.
        kept = [d for d in plan_prune(stored, inboxes, PruneOptions()) if d not in plan]
        departments = await _department_names(rc, [*plan, *kept])
        for doc in plan:
            pruning.results.append(_pending(doc, departments, options, dry_run))
        for doc in kept:
            pruning.results.append(_pending(doc, departments, PruneOptions(), dry_run))
            pruning.results[-1].stages[-1].message = _OUTSIDE_SCOPE
        return pruning

    async def run(self, rc: RocketChat, report: Report, *, strict: bool) -> None:
        """After every create and update: add the results to ``report``, then delete.

        Nothing is deleted when any inbox of the run failed (with ``strict``, a
        warning counts), in a dry run, or without ``--prune``.
        """
        if self.unlisted is not None:
            report.settings["only_on_server"] = self.unlisted
        failed = [r for r in report.inboxes if r.status(strict=strict) is Status.FAILED]
        report.inboxes.extend(self.results)
        # Deletions to make (action None), or to show in a dry run (DELETE).
        planned = [r for r in self.results if r.action in (None, Action.DELETE)]
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
            if rc.deadline is not None and time.monotonic() >= rc.deadline:
                _stop(result, "not deleted: the run's deadline passed before this deletion")
                continue
            await _delete(rc, result)


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


async def _delete(rc: RocketChat, result: InboxResult) -> None:
    from provision.errors import RocketChatCallError, RocketChatNotFoundError

    stage = result.stages[-1]
    assert result.inbox_id is not None
    started = time.perf_counter()
    # From here until the answer the DELETE may have reached the server.
    stage.facts["delete_state"] = UNKNOWN
    stage.message = "deleting: not confirmed"
    try:
        sent = await rc.delete_inbox(result.inbox_id, result.email)
    except RocketChatNotFoundError:
        stage.facts["delete_state"] = DELETED
        stage.message = f"inbox {result.inbox_id} was already gone (404): nothing deleted"
        result.action = Action.UNCHANGED
    except RocketChatCallError as exc:
        state = getattr(exc, "write_state", None)
        stage.facts["delete_state"] = NOT_DELETED if state == "not-applied" else UNKNOWN
        stage.fail(FailureClass.ROCKETCHAT, exc.message, hint=exc.hint)
        if exc.status is not None:
            stage.facts["http_status"] = exc.status
        result.action = Action.FAILED
    else:
        stage.facts["delete_state"] = DELETED
        stage.facts["delete_requests"] = sent
        stage.message = f"deleted inbox {result.inbox_id} (read back: gone)"
        result.action = Action.DELETED
    finally:
        stage.elapsed_ms = (time.perf_counter() - started) * 1000


def _refuse(result: InboxResult, why: str) -> None:
    stage = result.stages[-1]
    stage.status = Status.SKIPPED
    stage.message = why
    result.action = Action.SKIPPED


def _stop(result: InboxResult, why: str) -> None:
    stage = result.stages[-1]
    stage.fail(FailureClass.DEADLINE, why, hint="raise --timeout")
    result.action = Action.SKIPPED


def mark_prune_interrupted(result: InboxResult) -> bool:
    """Give an interrupted deletion its true state; ``False`` if ``result`` is no deletion."""
    stages = [s for s in result.stages if s.stage is Stage.PRUNE]
    if not stages or result.action is not None:
        return bool(stages)
    stage = stages[0]
    if stage.facts.get("delete_state") == NOT_STARTED:
        stage.status = Status.SKIPPED
        stage.message = "not started: the run was interrupted; the inbox is still there"
        result.action = Action.SKIPPED
    else:
        stage.fail(
            FailureClass.ROCKETCHAT,
            "interrupted while deleting: the inbox may or may not be deleted",
            hint="run again (or look in Rocket.Chat) to see",
        )
        result.action = Action.INTERRUPTED
    return True
