"""The envelope's reply rules: a refused ``MAIL FROM``/``RCPT TO``/``DATA`` of the inbox
address (``--envelope``, ``--round-trip``) -> the failure that says what to change.
"""

from __future__ import annotations

from provision.probes.smtp.classify import one_line
from provision.results import Failure, FailureClass

__all__ = ["envelope_failure"]

_F = FailureClass

# What a refusal of the inbox address means, by the reply's text and its enhanced status
# code (RFC 3463), whichever command drew it: Postfix's reject_sender_login_mismatch
# answers at RCPT TO ("553 5.7.1 <a@b>: Sender address rejected: not owned by user x"),
# since smtpd_delay_reject defers every restriction to RCPT.
_SENDER_WORDS = (
    "sender address rejected",
    "not owned by",
    "sendasdenied",
    "send as",
    "send-as",
    "not allowed to send",
    "not authorized to send",
    "not permitted to send",
    "sender not allowed",
    "sender mismatch",
    "login mismatch",
)
_RELAY_WORDS = ("relay", "relaying")
_RECIPIENT_WORDS = (
    "user unknown",
    "unknown user",
    "unknown recipient",
    "recipient unknown",
    "no such user",
    "mailbox unavailable",
    "mailbox not found",
    "does not exist",
)
_SENDER_STATUS = ("5.1.7", "5.1.8", "5.7.60")
_RECIPIENT_STATUS = ("5.1.1", "5.1.10", "5.2.1", "5.1.6")


def envelope_failure(command: str, code: int, text: str, *, email: str, username: str) -> Failure:
    """A refused ``MAIL FROM``/``RCPT TO`` of the inbox address -> what to change.

    Args:
        command: ``MAIL FROM``, ``RCPT TO`` or ``DATA`` (for the message, and a last resort
            when neither the text nor the code says more).
        code: the reply code.
        text: the reply text.
        email: the inbox address (sender and recipient).
        username: ``smtp.username``, the login the address was tried with.
    """
    reply = f"{code} {one_line(text)}"
    if command == "DATA":
        said = f"the message from {email} to itself was refused after DATA: {reply}"
    else:
        said = f"{command}:<{email}> refused: {reply}"
    low = reply.lower()
    if 400 <= code < 500:
        return Failure(
            _F.TRANSIENT,
            f"{said} (temporary)",
            "greylisting, a rate limit or a policy service that is down: retry later",
            "smtp.server",
        )
    if any(word in low for word in _SENDER_WORDS) or _status_in(low, _SENDER_STATUS):
        return _sender_refused(said, email, username)
    if any(word in low for word in _RELAY_WORDS):
        return Failure(
            _F.RELAY_REFUSED,
            said,
            f"the server neither takes mail for {email} nor relays it for {username}: use "
            "the SMTP server and account of this address (a submission port, 587 or 465), "
            "or allow this login to relay",
            "smtp.username",
        )
    if any(word in low for word in _RECIPIENT_WORDS) or _status_in(low, _RECIPIENT_STATUS):
        return Failure(
            _F.RECIPIENT_UNKNOWN,
            said,
            f"the server knows no mailbox {email}: mail to the inbox would bounce; check "
            "email (the address customers write to) against the mailbox's real address",
            "email",
        )
    if command.startswith("MAIL"):  # nothing in the reply says more: MAIL names the sender
        return _sender_refused(said, email, username)
    if command == "DATA":
        return Failure(
            _F.SENDER_REFUSED,
            said,
            "the server took the envelope but refused the message itself (a send-as policy "
            "checked after DATA, or a content filter); its reply says which",
            "email",
        )
    return Failure(
        _F.RELAY_REFUSED,
        said,
        f"the server refused {email} as a recipient for {username}; its reply says why",
        "email",
    )


def _sender_refused(said: str, email: str, username: str) -> Failure:
    return Failure(
        _F.SENDER_REFUSED,
        said,
        f"Rocket.Chat sends every reply From: {email}, and the server does not let "
        f"{username} send as it: log in as the account that owns {email}, or grant "
        f"{username} the right to send as it (Microsoft 365: Send As; Postfix: "
        "smtpd_sender_login_maps)",
        "smtp.username",
    )


def _status_in(low: str, statuses: tuple[str, ...]) -> bool:
    words = low.replace("<", " ").replace(">", " ").split()
    return any(status in words for status in statuses)
