"""``provision check``: probe a batch of inboxes and return the report.

Inboxes run concurrently under a semaphore (``ProbeOptions.concurrency``); the
SMTP and IMAP probes of one inbox run concurrently; every step is capped and one
deadline (``ProbeOptions.timeout``) bounds the whole run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from provision.models import Inbox, ProbeOptions
from provision.probes import _early
from provision.results import (
    FailureClass,
    Finding,
    InboxResult,
    Report,
    Stage,
    StageResult,
    Status,
)

if TYPE_CHECKING:
    from provision.stopping import Stop

__all__ = [
    "OfflineEnviron",
    "check",
    "check_offline",
    "probe_all",
    "probe_inbox",
    "report_settings",
    "stopped_probes",
]

#: Extra time past the deadline before a probe that ignored it is abandoned. Steps
#: already stop at the deadline; this only guards against a library that does not.
_GRACE = 2.0


def report_settings(options: ProbeOptions) -> dict[str, object]:
    """The options a report shows, so that any loosened check is visible."""
    return {
        "timeout": options.timeout,
        "step_timeout": options.step_timeout,
        "concurrency": options.concurrency,
        "ca_file": str(options.ca_file) if options.ca_file else None,
        "smtp_verify": options.smtp_verify,
        "imap_verify": False,  # Rocket.Chat's node-imap never verifies (spec §3.2)
        "ehlo_name": options.ehlo_name,
        "envelope": options.envelope,
        "round_trip": options.round_trip,
        "round_trip_timeout": options.round_trip_timeout if options.round_trip else None,
        "cert_days": options.cert_days,
    }


async def probe_inbox(inbox: Inbox, options: ProbeOptions, *, deadline: float) -> InboxResult:
    """Probe one inbox: SMTP and IMAP at once, results in that order."""
    from provision.probes._ahead import load_protocols, open_ahead

    # Both connections first: they travel while the protocol modules load (cold runs).
    cap = options.step_timeout
    smtp = open_ahead(
        Stage.SMTP, inbox.smtp.server, inbox.smtp.port, step_timeout=cap, deadline=deadline
    )
    imap = open_ahead(
        Stage.IMAP, inbox.imap.server, inbox.imap.port, step_timeout=cap, deadline=deadline
    )

    # Each stage waits for its own modules only: SMTP's load first (the longer path).
    async def smtp_stage() -> StageResult:
        await load_protocols(Stage.SMTP)
        from provision.probes.smtp import probe_smtp

        return await probe_smtp(inbox, options, deadline=deadline, opening=smtp)

    async def imap_stage() -> StageResult:
        await load_protocols(Stage.IMAP)
        from provision.probes.imap import probe_imap

        return await probe_imap(inbox, options, deadline=deadline, opening=imap)

    try:
        stages = await asyncio.gather(
            _guarded(Stage.SMTP, smtp_stage), _guarded(Stage.IMAP, imap_stage)
        )
    finally:  # a probe cancelled before it began leaves its connection to close here
        smtp.discard()
        imap.discard()
    from provision.commands.steplog import log_steps

    result = InboxResult.for_inbox(inbox)
    for stage in stages:
        log_steps(inbox, stage)
    result.stages.extend(stages)
    if options.round_trip:
        result.stages.append(await _round_trip(inbox, options, stages, deadline=deadline))
    return result


async def _round_trip(
    inbox: Inbox, options: ProbeOptions, probes: Sequence[StageResult], *, deadline: float
) -> StageResult:
    """``--round-trip``, once both logins work (nothing is sent otherwise)."""
    failed = [s.stage.value for s in probes if s.status is Status.FAILED]
    if failed:
        skipped = StageResult(stage=Stage.ROUND_TRIP, status=Status.SKIPPED)
        skipped.message = f"not sent: the {' and '.join(failed)} probe failed"
        return skipped
    from provision.probes.roundtrip import probe_round_trip

    return await _guarded(
        Stage.ROUND_TRIP, lambda: probe_round_trip(inbox, options, deadline=deadline)
    )


async def _guarded(stage: Stage, probe: Callable[[], Awaitable[StageResult]]) -> StageResult:
    """Turn a bug inside a probe into a reported failure instead of a traceback.

    ``probe`` makes the probe's coroutine only once this one runs: a run cancelled
    before that (a stop, an exporter's shutdown) leaves no coroutine never awaited.
    """
    try:
        return await probe()
    except Exception as exc:  # a bug: report its type only, the text may hold anything
        return StageResult(stage=stage).fail(
            FailureClass.INTERNAL,
            f"internal error in the {stage.value} probe ({type(exc).__name__})",
            hint="this is a bug in provision; run with PROVISION_DEBUG=1 and report it",
        )


async def check(
    inboxes: Sequence[Inbox],
    options: ProbeOptions | None = None,
    *,
    input_warnings: Mapping[int, Sequence[Finding]] | None = None,
    on_inbox_done: Callable[[InboxResult], None] | None = None,
    stop: Stop | None = None,
) -> Report:
    """Probe every inbox and return the report (``provision check`` as a library call).

    Args:
        inboxes: the inboxes, in input order (that order decides the exit code).
        options: caps, deadline, concurrency, TLS trust; defaults if omitted.
        input_warnings: findings from loading the input, by index into ``inboxes``.
        on_inbox_done: called with each inbox's result as soon as its probes finish
            (in completion order, on the event loop; progress displays use it). Not
            called for inboxes abandoned at the deadline.
        stop: a stop (``provision.stopping``) ends the probes in flight; those not
            finished are ``skipped`` and ``settings.stopped_by`` names the signal.

    Returns:
        A :class:`~provision.results.Report`; it never raises for network outcomes.
    """
    options = options or ProbeOptions()
    # Probing began with the command line's dial, if it dialled before the loop.
    started = _early.began() or time.perf_counter()
    report = Report(command="check", strict=options.strict, settings=report_settings(options))
    report.inboxes = await probe_all(
        inboxes, options, input_warnings=input_warnings, on_inbox_done=on_inbox_done, stop=stop
    )
    if stop is not None and stop.requested:
        report.settings["stopped_by"] = stop.name
    report.elapsed_ms = (time.perf_counter() - started) * 1000
    return report


async def probe_all(
    inboxes: Sequence[Inbox],
    options: ProbeOptions,
    *,
    input_warnings: Mapping[int, Sequence[Finding]] | None = None,
    on_inbox_done: Callable[[InboxResult], None] | None = None,
    time_left: float | None = None,
    stop: Stop | None = None,
    options_for: Callable[[int, Inbox], ProbeOptions] | None = None,
) -> list[InboxResult]:
    """The probes of :func:`check` without the report: one result per inbox, input order.

    ``time_left``: what remains of the run's deadline (``options.timeout`` when
    ``None``), for a caller that spent some of it before probing (``audit``).
    ``options_for(index, inbox)``: that inbox's own options (``audit``: a round trip only
    for inactive inboxes, the search from each one's creation day); the run-wide ones
    (deadline, concurrency) stay ``options``'.
    """
    from provision import tls
    from provision.probes._shared import run_scope  # the probes' modules load lazily

    if inboxes:
        # Reading the system CA store takes some 20 ms of CPU, in a thread that mostly
        # runs without the GIL: started now, it overlaps the import of the protocol
        # libraries (probe_inbox) instead of holding up the first STARTTLS.
        tls.warm_probe_context(options.ca_file, verify=options.smtp_verify)
        if not options.smtp_verify:  # the IMAP certificate check always verifies
            tls.warm_probe_context(options.ca_file)
    async with run_scope():  # inboxes on one server share its certificate check
        return await _probe_all(
            inboxes, options, input_warnings, on_inbox_done, time_left, stop, options_for
        )


async def _probe_all(
    inboxes: Sequence[Inbox],
    options: ProbeOptions,
    input_warnings: Mapping[int, Sequence[Finding]] | None,
    on_inbox_done: Callable[[InboxResult], None] | None,
    time_left: float | None,
    stop: Stop | None,
    options_for: Callable[[int, Inbox], ProbeOptions] | None,
) -> list[InboxResult]:
    from provision.stopping import Stop

    stop = stop if stop is not None else Stop()
    loop = asyncio.get_running_loop()
    limit = options.timeout if time_left is None else time_left
    deadline = loop.time() + limit
    gate = asyncio.Semaphore(max(1, options.concurrency))
    begun: set[int] = set()

    async def one(index: int, inbox: Inbox) -> InboxResult | None:
        async with gate:
            if stop.requested:
                return None  # its turn came after the stop: not started
            begun.add(index)
            own = options_for(index, inbox) if options_for is not None else options
            result = await probe_inbox(inbox, own, deadline=deadline)
        if on_inbox_done is not None:
            on_inbox_done(result)
        return result

    tasks = [asyncio.ensure_future(one(i, inbox)) for i, inbox in enumerate(inboxes)]
    try:
        await stop.settle(tasks, within=limit + _GRACE)
    except asyncio.CancelledError:
        # Cancelled from outside (an exporter's round at shutdown): the probes are this
        # call's own tasks, so they end here, their connections closed, not orphaned.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    results = []
    for index, (inbox, task) in enumerate(zip(inboxes, tasks, strict=True)):
        done = task.result() if task.done() and not task.cancelled() else None
        if done is not None:
            result = done
        elif stop.requested:
            task.cancel()
            # An inbox the command line dialled before the loop had begun (a connection
            # was opened), even when the stop came before its probe's turn.
            began = index in begun or _early.dialled(inbox)
            result = stopped_probes(inbox, str(stop.name), begun=began)
        else:
            task.cancel()
            result = _abandoned(inbox, options)
        result.warnings.extend((input_warnings or {}).get(index, ()))
        results.append(result)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def stopped_probes(inbox: Inbox, signal_name: str, *, begun: bool) -> InboxResult:
    """The result of an inbox whose probes a stop cut short (or never let start)."""
    why = (
        f"stopped by {signal_name} during the probe, before it finished"
        if begun
        else f"not started: stopped by {signal_name}"
    )
    result = InboxResult.for_inbox(inbox)
    for stage in (Stage.SMTP, Stage.IMAP):
        result.stages.append(StageResult(stage=stage, status=Status.SKIPPED, message=why))
    return result


def _abandoned(inbox: Inbox, options: ProbeOptions) -> InboxResult:
    result = InboxResult.for_inbox(inbox)
    for stage in (Stage.SMTP, Stage.IMAP):
        result.stages.append(
            StageResult(stage=stage).fail(
                FailureClass.DEADLINE,
                f"the overall deadline of {options.timeout:g} s ran out",
                hint="raise --timeout, or lower --concurrency for large batches",
            )
        )
    return result


#: What an unset ``${VAR}`` reads as offline: validation goes on; nothing is sent anywhere.
OFFLINE_PLACEHOLDER = "offline-placeholder"


class OfflineEnviron(Mapping[str, str]):
    """The environment for an offline check: an unset variable reads as a placeholder.

    A pre-commit hook or an editor has none of the CI's secrets; the file's rules are
    checked all the same, and the names that were not set are listed in the report.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.unset: set[str] = set()

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(name)
        if value is None:
            self.unset.add(name)
            return OFFLINE_PLACEHOLDER
        return value

    def get(self, name: str, default: object = None) -> str:
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def check_offline(
    inboxes: Sequence[Inbox],
    options: ProbeOptions | None = None,
    *,
    input_warnings: Mapping[int, Sequence[Finding]] | None = None,
    unset_variables: Sequence[str] = (),
) -> Report:
    """The report of ``check --offline``: the input passed every rule; nothing was probed."""
    options = options or ProbeOptions()
    settings = report_settings(options) | {
        "offline": True,
        "unset_variables": sorted(unset_variables),
    }
    report = Report(command="check", strict=options.strict, settings=settings)
    for index, inbox in enumerate(inboxes):
        result = InboxResult.for_inbox(inbox)
        for stage in (Stage.SMTP, Stage.IMAP):
            skipped = StageResult(stage=stage, status=Status.SKIPPED)
            skipped.message = "offline: input valid, not probed"
            result.stages.append(skipped)
        result.warnings.extend((input_warnings or {}).get(index, ()))
        report.inboxes.append(result)
    return report
