"""``check --round-trip``: one tagged message from the inbox address to itself, found over
IMAP, then deleted so that Rocket.Chat never imports it (issue 11).

The two sessions are the probes' own (:class:`~provision.probes.smtp.session.SmtpProbe`
with a message, :class:`~provision.probes.imap.session.ImapRun` with more work in the
selected INBOX), in this order::

    IMAP: log in, SELECT INBOX ----------------- (waits) --> UID SEARCH HEADER ... (back-off)
    SMTP:                      MAIL, RCPT, DATA --^             --> STORE \\Seen \\Deleted,
                                                                    UID EXPUNGE, check, LOGOUT

Nothing is sent unless INBOX is open, so a message that goes out can always be looked
for. The wait is capped by ``round_trip_timeout`` and the run's deadline. Outcomes: not
sent (the SMTP or IMAP failure), sent but never seen (``not-delivered``), seen but not
removed (a warning naming the header to look for), delivered and removed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, formatdate
from typing import Any

from provision.models import Inbox, ProbeOptions, Secret
from provision.probes._scrub import scrub_stage
from provision.probes._steps import Recorder, StepTimeout
from provision.probes.failure import ProbeFailed
from provision.probes.imap import probe_imap
from provision.probes.imap.classify import search_numbers
from provision.probes.imap.session import ImapRun
from provision.probes.smtp.session import SmtpProbe, secret_forms
from provision.results import (
    ExitCode,
    Failure,
    FailureClass,
    Finding,
    Stage,
    StageResult,
    Status,
    Step,
    StepResult,
)

__all__ = ["HEADER", "probe_message", "probe_round_trip"]

#: The header that tags the probe's message; its value is unique per run and inbox.
HEADER = "X-Provision-Probe"
#: Replies that refused the message: it was not taken.
_REFUSALS = frozenset(
    {
        FailureClass.SENDER_REFUSED,
        FailureClass.RELAY_REFUSED,
        FailureClass.RECIPIENT_UNKNOWN,
        FailureClass.TRANSIENT,
    }
)
#: First and usual longest pause between two searches for the message.
_FIRST_POLL = 0.05
_LONGEST_POLL = 1.0
#: At most about this many searches per wait: each is some 5 reply lines, and one
#: connection may receive 1,000 lines (``imap.connection.MAX_LINES``).
_MOST_POLLS = 100


async def probe_round_trip(inbox: Inbox, options: ProbeOptions, *, deadline: float) -> StageResult:
    """Send one message from ``inbox.email`` to itself, wait for it over IMAP, delete it.

    Args:
        inbox: the inbox; its ``smtp`` settings send, its ``imap`` settings receive.
        options: step cap, ``round_trip_timeout`` (the longest wait for the message), TLS.
        deadline: event-loop time at which the whole run ends.

    Returns:
        The ``round-trip`` stage. Facts: ``header`` (what the message carries),
        ``delivery_ms``, ``removed``, ``send`` and ``receive`` (the two sessions' steps).
    """
    return await _RoundTrip(inbox, options, deadline).run()


def probe_message(inbox: Inbox, tag: str) -> bytes:
    """The small message the round trip sends: from the inbox to itself, tagged, plain text."""
    message = EmailMessage()
    message["From"] = formataddr((inbox.sender_info or "", inbox.email))
    message["To"] = inbox.email
    message["Subject"] = "provision round-trip check (deleted on arrival)"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = f"<{tag}@provision.invalid>"
    message[HEADER] = tag
    # RFC 3834: auto-responders and vacation replies leave automatic mail alone.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "provision check --round-trip sent this message to test that mail to this inbox\n"
        "arrives; it deletes the message as soon as it sees it over IMAP.\n"
    )
    return message.as_bytes(policy=SMTP_POLICY)


class _RoundTrip:
    """One round trip; the IMAP session runs as a task, the SMTP session in between."""

    def __init__(self, inbox: Inbox, options: ProbeOptions, deadline: float) -> None:
        self.inbox = inbox
        self.options = dataclasses.replace(options, envelope=False, round_trip=False)
        self.wait = options.round_trip_timeout
        self.deadline = deadline
        self.loop = asyncio.get_running_loop()
        self.tag = uuid.uuid4().hex
        self.rec = Recorder(
            stage=Stage.ROUND_TRIP, deadline=deadline, step_timeout=options.step_timeout
        )
        self.facts = self.rec.result.facts
        #: Set once INBOX is open: only then is the message sent.
        self.ready: asyncio.Future[None] = self.loop.create_future()
        #: When the server accepted the message (``None``: it was not sent).
        self.sent: asyncio.Future[float | None] = self.loop.create_future()

    async def run(self) -> StageResult:
        self.facts["header"] = f"{HEADER}: {self.tag}"
        receive = asyncio.ensure_future(
            probe_imap(self.inbox, self.options, deadline=self.deadline, then=self._in_inbox)
        )
        try:
            waiting: set[asyncio.Future[Any]] = {self.ready, receive}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if self.ready.done():
                await self._send()
        finally:
            if not self.sent.done():
                self.sent.set_result(None)
            imap = await receive
        self.facts["receive"] = [s.to_json() for s in imap.steps]
        if not self.ready.done():
            self._not_sent("INBOX could not be opened", imap)
        elif imap.status is Status.FAILED and self.rec.result.status is not Status.FAILED:
            self._not_sent_or_unknown(imap)
        if "delivery_ms" in self.facts:
            removed = "removed" if self.facts.get("removed") else "NOT removed"
            self.facts["notes"] = [
                f"the message arrived in INBOX {self.facts['delivery_ms'] / 1000:.2f} s after "
                f"the SMTP server took it, and was {removed}"
            ]
        secrets: list[str | Secret] = [
            *secret_forms(self.inbox.smtp.username, self.inbox.smtp.password.reveal()),
            self.inbox.imap.password,
        ]
        scrub_stage(self.rec.result, *secrets)
        return self.rec.finish()

    # -- SMTP: the message --------------------------------------------------------------

    async def _send(self) -> None:
        probe = SmtpProbe(
            self.inbox.smtp,
            self.options,
            self.deadline,
            email=self.inbox.email,
            message=probe_message(self.inbox, self.tag),
        )
        smtp = await probe.run()
        self.facts["send"] = [s.to_json() for s in smtp.steps]
        data = next((s for s in smtp.steps if s.step is Step.DATA), None)
        status = Status.PASSED if probe.sent_at is not None else Status.FAILED
        detail = data.detail if data is not None else "not sent: " + (smtp.message or "")
        self.rec.result.steps.append(
            StepResult(step=Step.SEND, status=status, elapsed_ms=smtp.elapsed_ms, detail=detail)
        )
        sent_at = probe.sent_at
        if sent_at is None:
            # DATA went out but its reply never came: the server may have taken it, so
            # it is looked for (and removed) all the same; the report says so.
            unsure = data is not None and smtp.failure not in _REFUSALS
            said = "not confirmed sent (it may still arrive)" if unsure else "not sent"
            self.rec.result.fail(
                smtp.failure or FailureClass.INTERNAL,
                f"{said}: {smtp.message or 'the SMTP session failed'}",
                hint=smtp.hint,
                field=smtp.field,
            )
            sent_at = self.loop.time() if unsure else None
        self.sent.set_result(sent_at)

    # -- IMAP: wait for it, then remove it ---------------------------------------------

    async def _in_inbox(self, run: ImapRun) -> None:
        """INBOX is open: let the message go, find it, remove it. Never raises ProbeFailed."""
        self.ready.set_result(None)
        sent_at = await self.sent
        if sent_at is None:
            return
        try:
            uid = await self._find(run, sent_at)
            if uid is not None:
                await self._remove(run, uid)
        except ProbeFailed as stop:
            self._lost_connection(stop.failure)

    async def _find(self, run: ImapRun, sent_at: float) -> str | None:
        """Search for the tag until it is there, with a growing pause; its UID."""
        pause, longest = _FIRST_POLL, max(_LONGEST_POLL, self.wait / _MOST_POLLS)
        try:
            async with self.rec.step(Step.DELIVERY, cap=self.wait) as info:
                info.detail = f"UID SEARCH HEADER {HEADER} {self.tag}"
                while True:
                    # NOOP is IMAP's poll for new mail (RFC 3501 §6.1.2): Dovecot looks at
                    # its Maildir again on it, not on a SEARCH.
                    await self._ask(run, Step.DELIVERY, "NOOP", uid=False)
                    found = await self._ask(
                        run, Step.DELIVERY, "SEARCH", "HEADER", HEADER, self.tag
                    )
                    if found.result != "OK":
                        raise ProbeFailed(self._search_refused(run.reply(found)))
                    uids = search_numbers(found.lines)
                    if uids:
                        seconds = self.loop.time() - sent_at
                        self.facts["delivery_ms"] = round(seconds * 1000, 1)
                        info.detail = f"found after {seconds:.2f} s (UID {uids[0]})"
                        return uids[0]
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, longest)
        except StepTimeout as exc:
            self._never_seen(exc)
            return None

    async def _ask(self, run: ImapRun, step: Step, name: str, *args: str, uid: bool = True) -> Any:
        """One command, capped like any step: a silent server is not a missing message."""
        cap = max(0.0, min(self.options.step_timeout, self.rec.remaining()))
        try:
            async with asyncio.timeout(cap):
                return await run.execute(step, name, *args, uid=uid)
        except TimeoutError:
            raise ProbeFailed(
                Failure(
                    FailureClass.TIMEOUT,
                    f"no answer to {'UID ' if uid else ''}{name} within {cap:.1f} s",
                    "the IMAP server stalls; check imap.server",
                    "imap.server",
                )
            ) from None

    async def _remove(self, run: ImapRun, uid: str) -> None:
        """\\Seen and \\Deleted (Rocket.Chat searches UNSEEN), expunged, then looked for again."""
        self.facts["removed"] = False
        try:
            async with self.rec.step(Step.CLEANUP) as info:
                info.detail = f"UID STORE {uid} +FLAGS.SILENT (\\Seen \\Deleted)"
                stored = await run.execute(
                    Step.CLEANUP, "STORE", uid, "+FLAGS.SILENT", "(\\Seen \\Deleted)", uid=True
                )
                if stored.result != "OK":
                    info.status = Status.WARNING
                    self._not_removed(f"STORE refused: {stored.result} {run.reply(stored)}")
                    return
                why_not = await self._expunge(run, uid)
                if why_not is None:
                    left = await run.execute(
                        Step.CLEANUP, "SEARCH", "HEADER", HEADER, self.tag, uid=True
                    )
                    if left.result == "OK" and not search_numbers(left.lines):
                        self.facts["removed"] = True
                        info.detail = f"UID {uid} flagged \\Seen \\Deleted and expunged"
                        return
                    why_not = "it is still found after EXPUNGE"
                info.status = Status.WARNING
                info.detail = f"UID {uid} flagged \\Seen \\Deleted, not expunged: {why_not}"
                self._not_removed(f"flagged \\Seen and \\Deleted, not expunged: {why_not}")
        except StepTimeout:
            self._not_removed("the server did not answer within the step cap")
        except ProbeFailed as stop:  # the connection ended: the message is still there
            self._not_removed(stop.failure.message)

    async def _expunge(self, run: ImapRun, uid: str) -> str | None:
        """``UID EXPUNGE`` (RFC 4315) if offered; a plain ``EXPUNGE`` only if nothing else
        is marked deleted, since it removes every such message. ``None``: expunged."""
        if "UIDPLUS" in run.capabilities:
            gone = await run.execute(Step.CLEANUP, "EXPUNGE", uid, uid=True)
        else:
            deleted = await run.execute(Step.CLEANUP, "SEARCH", "DELETED", uid=True)
            others = [u for u in search_numbers(deleted.lines) if u != uid]
            if deleted.result != "OK" or others:
                return (
                    f"the server has no UID EXPUNGE (UIDPLUS) and {len(others)} other messages "
                    "are marked deleted, which a plain EXPUNGE would remove too"
                )
            gone = await run.execute(Step.CLEANUP, "EXPUNGE")
        if gone.result != "OK":
            return f"EXPUNGE refused: {gone.result} {run.reply(gone)}"
        return None

    # -- outcomes -------------------------------------------------------------------------

    def _never_seen(self, exc: StepTimeout) -> None:
        waited = f"{exc.cap:.1f} s"
        later = (
            f"if it arrives later, it stays in INBOX: delete the message with the header "
            f"{HEADER}: {self.tag}"
        )
        if exc.deadline:
            self.rec.result.fail(
                FailureClass.DEADLINE,
                f"sent, but not seen in INBOX before the run's deadline ({waited} of waiting)",
                hint=f"raise --timeout above --round-trip-timeout; {later}",
            )
            return
        self.rec.result.fail(
            FailureClass.NOT_DELIVERED,
            f"sent (the SMTP server accepted it), but not seen in INBOX within {waited}",
            hint=(
                f"mail to {self.inbox.email} does not reach the mailbox imap.username opens "
                f"(another mailbox, a spam folder, a rule, or slow delivery: raise "
                f"--round-trip-timeout); {later}"
            ),
            field="email",
        )

    def _not_removed(self, why: str) -> None:
        self.rec.result.warn(
            Finding(
                code="round-trip-not-removed",
                message=f"the round-trip message arrived but was not removed ({why})",
                hint=(
                    f"delete the message with the header {HEADER}: {self.tag} before the inbox "
                    "is active, or Rocket.Chat may import it"
                ),
                field="imap.username",
                strict_exit=ExitCode.MAILBOX,
            )
        )

    def _lost_connection(self, failure: Failure) -> None:
        self.rec.result.fail(
            failure.cls,
            f"sent, but looking for it over IMAP failed: {failure.message}",
            hint=f"{failure.hint or 'retry'}; if the message arrived, delete the one with the "
            f"header {HEADER}: {self.tag}",
            field=failure.field,
        )

    def _search_refused(self, reply: str) -> Failure:
        return Failure(
            FailureClass.MAILBOX,
            f"UID SEARCH HEADER refused: {reply}",
            "the server cannot search by header; the round trip cannot find its message",
            "imap.server",
        )

    def _not_sent(self, what: str, imap: StageResult) -> None:
        self.rec.result.fail(
            imap.failure or FailureClass.INTERNAL,
            f"not sent: {what} ({imap.message or 'the IMAP session failed'})",
            hint=imap.hint,
            field=imap.field,
        )

    def _not_sent_or_unknown(self, imap: StageResult) -> None:
        # The IMAP session failed after INBOX was open but outside the round trip's own
        # steps (LOGOUT never fails it): report it as it is.
        self.rec.result.fail(
            imap.failure or FailureClass.INTERNAL,
            f"the IMAP session failed: {imap.message or 'unknown'}",
            hint=imap.hint,
            field=imap.field,
        )
