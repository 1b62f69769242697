"""IMAP probe: log in exactly as Rocket.Chat's node-imap does, and report what it found.

Rocket.Chat reads an email inbox with node-imap 0.8.19 configured from the inbox's
``imap`` object (spec §3.2): ``secure: true`` is TLS from the first byte with
``rejectUnauthorized: false`` and no SNI; ``secure: false`` is plaintext and never
STARTTLS (node-imap's ``autotls`` defaults to ``never``). It sends ``LOGIN "user"
"password"`` (never AUTHENTICATE), gives up 10 s into connecting and 5 s after
connecting if not logged in, opens INBOX read-write and searches ``UNSEEN SINCE``
(the probe searches from the epoch: the same search counts every unseen message).

The probe walks the same path, one recorded step each: ``resolve``, ``connect``,
``tls`` (secure only), ``greeting``, ``capabilities``, ``auth``, ``mailbox``, ``quit``.
It never fetches a body, never stores a flag and never sends STARTTLS (spec §3.3).
Around that path it adds what Rocket.Chat cannot tell you, each on a second,
credential-free connection: whether the certificate would verify, and which TLS mode a
port really speaks when the configured one fails.

``session`` runs the steps, ``classify`` turns replies into failures and findings,
``connection`` is the wire. aioimaplib (GPL-3.0-only) is imported by this package
only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aioimaplib

from provision.models import Inbox, ProbeOptions
from provision.probes._ahead import Opening
from provision.probes._scrub import SecretsFilter
from provision.probes._steps import Recorder
from provision.probes.failure import ProbeFailed
from provision.probes.imap.session import PLAN_PLAINTEXT, PLAN_TLS, ImapRun
from provision.results import Stage, StageResult

__all__ = ["PLAN_PLAINTEXT", "PLAN_TLS", "probe_imap"]

# aioimaplib logs every line it sends and receives at DEBUG, and servers echo commands:
# mask the passwords of running probes there (the LOGIN line itself it masks already).
_LOG_FILTER = SecretsFilter()
logging.getLogger(aioimaplib.__name__ + ".aioimaplib").addFilter(_LOG_FILTER)


async def probe_imap(
    inbox: Inbox,
    options: ProbeOptions,
    *,
    deadline: float,
    then: Callable[[ImapRun], Awaitable[None]] | None = None,
    opening: Opening | None = None,
) -> StageResult:
    """Log in to the inbox's IMAP server the way Rocket.Chat would.

    Args:
        inbox: the inbox; only ``inbox.imap`` is used.
        options: step cap, CA file for the certificate check.
        deadline: event-loop time at which the whole run ends.
        then: more work in the selected INBOX before LOGOUT (``check --round-trip``).
        opening: the stage's resolve and connect, already under way (``probes._ahead``).

    Returns:
        The ``imap`` stage: passed, passed with warnings (plaintext credentials, an
        unverified certificate, slower than Rocket.Chat allows) or failed with a
        :class:`~provision.results.FailureClass`, the server's (scrubbed) text, a hint
        and the setting to change. Facts: ``plan``, ``address``, ``tls``,
        ``certificate_verified``, ``greeting``, ``capabilities``,
        ``capabilities_after_login``, ``idle``, ``preauth``, ``exists``, ``unseen`` (every
        unseen message in INBOX), ``notes`` (what Rocket.Chat will import, polling),
        ``confirmed_mode``.

    Network, protocol and authentication outcomes never raise; a bug does.
    """
    if opening is not None:
        rec = opening.rec
    else:
        rec = Recorder(stage=Stage.IMAP, deadline=deadline, step_timeout=options.step_timeout)
    run = ImapRun(rec, inbox.imap, options, then=then, opening=opening)
    try:
        with _LOG_FILTER.guarding(inbox.imap.password):
            await run.run()
    except ProbeFailed as exc:
        rec.result.fail_with(exc.failure)
    return rec.finish()
