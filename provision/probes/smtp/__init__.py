"""SMTP probe: log in exactly as Rocket.Chat's nodemailer transport would, then QUIT.

Rocket.Chat builds its transport as ``nodemailer.createTransport({host, port, secure,
auth: {user, pass}})`` and nothing else (spec §3.1), so the probe walks nodemailer's
``smtp-connection`` state machine one timed step at a time::

    resolve -> connect -> [tls] -> greeting -> capabilities (EHLO, HELO fallback)
            -> [starttls -> capabilities] -> auth (one attempt) -> quit

* ``secure: true``: TLS from the first byte (465 style). ``secure: false``: plaintext,
  then STARTTLS whenever EHLO advertises it (nodemailer upgrades unless ``ignoreTLS``,
  which Rocket.Chat never sets); a failed upgrade fails the send.
* Certificates are verified against the system store plus ``--ca-file``, host name
  checked against ``smtp.server``, TLS >= 1.2 (:func:`provision.tls.verifying_context`).
* AUTH only if EHLO advertises it, with the first of PLAIN, LOGIN, CRAM-MD5 the server
  offers (nodemailer's ``_supportedAuth`` order), exactly once: aiosmtplib's ``login()``
  would try the next mechanism after a 535 (doubling lock-out counters), nodemailer
  never does.
* MAIL, RCPT and DATA are never sent, unless asked: ``--envelope`` adds ``MAIL FROM`` and
  ``RCPT TO`` the inbox address, then ``RSET`` (still no DATA).

``session`` runs the steps, ``classify`` turns what went wrong into a failure, and
``connection`` is the wire. On a TLS-mode mismatch or a certificate failure a second,
credential-free connection finds out what the port really speaks or fetches the
certificate facts. Server text is scrubbed of the password (and of its base64 AUTH
forms) before it reaches the result.
"""

from __future__ import annotations

from provision.models import Inbox, ProbeOptions
from provision.probes._ahead import Opening
from provision.probes.smtp.connection import NODEMAILER_MECHANISMS
from provision.probes.smtp.session import SmtpProbe, nodemailer_hostname, secret_forms
from provision.results import StageResult

__all__ = ["NODEMAILER_MECHANISMS", "nodemailer_hostname", "probe_smtp", "secret_forms"]


async def probe_smtp(
    inbox: Inbox, options: ProbeOptions, *, deadline: float, opening: Opening | None = None
) -> StageResult:
    """Log in to ``inbox.smtp`` the way Rocket.Chat would, and report every step.

    Args:
        inbox: the inbox whose ``smtp`` settings are probed.
        options: step cap, CA file, EHLO name and verification switch.
        deadline: event-loop time (``loop.time()``) by which the whole run must end.
        opening: the stage's resolve and connect, already under way (``probes._ahead``).

    Returns:
        The ``smtp`` stage: passed, passed with warnings, or failed with a
        :class:`~provision.results.FailureClass`, message, hint and field. Network,
        protocol and authentication outcomes never raise.
    """
    probe = SmtpProbe(inbox.smtp, options, deadline, email=inbox.email, opening=opening)
    return await probe.run()
