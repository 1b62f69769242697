"""IMAP replies -> :class:`~provision.results.Failure` and findings (probe-anchors.md §3).

Every failure class is decided here from types, tagged results (OK/NO/BAD) and bracketed
response codes (RFC 3501 §7.1, RFC 5530), never from library exception text. Provider
wording (Gmail, Microsoft 365) is ``_providers``' job.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from provision.models import ImapSettings, ProbeOptions, Secret
from provision.probes._providers import provider_failure
from provision.probes._scrub import scrub
from provision.probes._steps import StepTimeout
from provision.probes.imap.connection import MAX_GREETING, Greeting, greeting_status
from provision.results import ExitCode, Failure, FailureClass, Finding, Step

__all__ = [
    "COUNT_SINCE",
    "RC_AUTH_TIMEOUT",
    "RC_CONNECT_TIMEOUT",
    "UNSENDABLE",
    "capabilities_in",
    "capability_code",
    "cert_finding",
    "classify_greeting",
    "closed_failure",
    "exists_in",
    "imap_date",
    "import_notes",
    "line_text",
    "login_disabled",
    "login_failure",
    "plaintext_finding",
    "read_only",
    "response_code",
    "search_failure",
    "search_hits",
    "search_numbers",
    "select_failure",
    "service_of",
    "show_greeting",
    "slow_finding",
    "timeout_failure",
    "tls_hint",
    "unsendable_credentials",
    "wrong_service",
]

# Rocket.Chat passes connTimeout: 10000 and keeps node-imap's authTimeout default of
# 5000 ms, counted from the (TLS) connect to a successful LOGIN (spec §3.2, issue #27268).
RC_CONNECT_TIMEOUT = 10.0
RC_AUTH_TIMEOUT = 5.0

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CODE = re.compile(r"^\s*\[([A-Za-z0-9.-]+)[^\]]*\]")
_CAPABILITY_CODE = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_EXISTS = re.compile(rb"^(\d+) EXISTS", re.IGNORECASE)
_THROTTLE_CODES = frozenset({"UNAVAILABLE", "LIMIT", "INUSE"})
_THROTTLE_TEXT = re.compile(r"too many|maximum number|rate limit", re.IGNORECASE)
UNSENDABLE = re.compile(r"[\x00\r\n]")


def line_text(line: bytes | bytearray) -> str:
    return bytes(line).decode("utf-8", "replace")


def response_code(text: str) -> str | None:
    """The bracketed response code at the start of a reply text, upper-cased."""
    match = _CODE.match(text)
    return match.group(1).upper() if match else None


def capability_code(text: str) -> list[str] | None:
    """The list in a ``[CAPABILITY ...]`` response code (RFC 3501 §7.1), upper-cased."""
    match = _CAPABILITY_CODE.search(text)
    return match.group(1).upper().split() if match else None


def capabilities_in(lines: Sequence[bytes], *, untagged_bare: bool = False) -> list[str] | None:
    """Capabilities from a command's reply lines: ``* CAPABILITY`` or ``[CAPABILITY ...]``.

    aioimaplib routes the untagged ``* CAPABILITY`` of a CAPABILITY command without its
    keyword (``untagged_bare``) and those of other commands with it.
    """
    texts = [line_text(line) for line in lines]
    if untagged_bare and len(texts) > 1:
        return " ".join(texts[:-1]).upper().split()
    for text in texts:
        if text.upper().startswith("CAPABILITY "):
            return text.upper().split()[1:]
        found = capability_code(text)
        if found is not None:
            return found
    return None


# RFC 4731 §3.1: ``* ESEARCH (TAG "A4") COUNT 3`` (aioimaplib keeps what follows ESEARCH).
_ESEARCH_COUNT = re.compile(rb"\bCOUNT (\d+)", re.IGNORECASE)


def exists_in(lines: Sequence[bytes]) -> int | None:
    for line in lines:
        match = _EXISTS.match(bytes(line))
        if match:
            return int(match.group(1))
    return None


def search_hits(lines: Sequence[bytes]) -> int:
    """The hits of a SEARCH reply: the numbers of ``* SEARCH``, or ESEARCH's ``COUNT n``."""
    for line in lines[:-1]:
        counted = _ESEARCH_COUNT.search(bytes(line))
        if counted:
            return int(counted.group(1))
    return len(search_numbers(lines))


def search_numbers(lines: Sequence[bytes]) -> list[str]:
    """The numbers (sequence numbers or UIDs) of a ``* SEARCH`` reply; the tagged line is last."""
    return [
        word.decode("ascii")
        for line in lines[:-1]
        for word in bytes(line).split()
        if word.isdigit()
    ]


#: The ``SINCE`` date of the probe's search: every message, so the hits are all unseen mail.
COUNT_SINCE = dt.date(1970, 1, 1)


def import_notes(unseen: int, *, idle: object, since: dt.date | None = None) -> list[str]:
    """What Rocket.Chat will make of this INBOX (spec §3.2), for the report's notes;
    ``since``: the stored inbox's creation day, which Rocket.Chat's search starts from."""
    noun = "message" if unseen == 1 else "messages"
    if since is None:
        first = (
            f"{unseen} unseen {noun} in INBOX; Rocket.Chat imports only mail that arrives "
            "after the inbox is created"
        )
    else:
        first = (
            f"{unseen} unseen {noun} in INBOX since {since.isoformat()}, the day Rocket.Chat "
            "created the inbox: what its search finds (older unseen mail is never imported)"
        )
    notes = [first]
    if idle is False:
        notes.append(
            "the server does not offer IDLE: Rocket.Chat falls back to polling (NOOP every 10 s)"
        )
    return notes


def imap_date(day: dt.date) -> str:
    """RFC 3501 ``date`` as node-imap writes it: ``getDate()-Mon-getFullYear()``."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def show_greeting(greeting: Greeting, password: Secret) -> str:
    if greeting.kind == "tls-record":
        return f"<TLS record {greeting.data[:5].hex(' ')}>"
    if greeting.kind == "closed" and not greeting.data:
        return "<closed without a byte>"
    return scrub(line_text(greeting.data), password)


def service_of(line: bytes) -> str | None:
    """Name the protocol of a foreign greeting (probe-anchors.md §3 row 12)."""
    text = line_text(line)
    if re.match(r"^(220|421|554)[ -]", text):
        return "an FTP server" if "FTP" in text.upper() else "an SMTP server"
    if text.startswith(("+OK", "-ERR")):
        return "a POP3 server"
    if text.startswith("HTTP/"):
        return "an HTTP server"
    if text.startswith("SSH-"):
        return "an SSH server"
    return None


def wrong_service(service: str, greeting: Greeting, imap: ImapSettings, *, how: str) -> Failure:
    shown = show_greeting(greeting, imap.password)
    where = f"port {imap.port}" + (f" {how}" if how else "")
    return Failure(
        FailureClass.WRONG_SERVICE,
        f"{service} answers on {where}, not IMAP: '{shown}'",
        f"imap.port points at {service}; IMAP is usually 993 (TLS, imap.secure: true)",
        "imap.port",
    )


def classify_greeting(greeting: Greeting, imap: ImapSettings) -> Failure:
    """A first line (or its absence) that is not ``* OK``/``* PREAUTH``."""
    shown = show_greeting(greeting, imap.password)
    if greeting.kind == "line" and greeting_status(greeting.data) == "BYE":
        return _bye_at_greeting(shown, imap)
    if greeting.kind == "line":
        service = service_of(greeting.data)
        if service is not None:
            return wrong_service(service, greeting, imap, how="over TLS" if imap.secure else "")
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the server's first line is not an IMAP greeting: '{shown}'",
            f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
            "imap.port",
        )
    if greeting.kind == "too-long":
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the greeting exceeded {MAX_GREETING} bytes without a line end ('{shown}')",
            f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
            "imap.port",
        )
    if greeting.kind == "tls-record":
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            "the server sent another TLS record inside the TLS session",
            f"check imap.port ({imap.port})",
            "imap.port",
        )
    if greeting.data:
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the server closed the connection in the middle of its greeting ('{shown}')",
            f"this is not an IMAP server; check imap.server and imap.port ({imap.port})",
            "imap.port",
        )
    after = "right after the TLS handshake" if imap.secure else "at once"
    return Failure(
        FailureClass.RESET,
        f"the server closed the connection {after}, without a greeting",
        "the server refuses this client (access rules, connection limits) or this is not "
        f"an IMAP port; check imap.server and imap.port ({imap.port})",
        "imap.port",
    )


def _bye_at_greeting(shown: str, imap: ImapSettings) -> Failure:
    """``* BYE`` instead of a greeting (probe-anchors.md §3 row 11)."""
    text = shown.split(None, 2)[2] if len(shown.split(None, 2)) > 2 else ""
    code = response_code(text)
    message = f"the server refused the connection at the greeting: '{shown}'"
    if code == "LIMIT" or _THROTTLE_TEXT.search(text):
        return Failure(
            FailureClass.THROTTLED,
            message,
            "too many connections from this address or account; retry later with back-off",
            "imap.server",
        )
    if code in _THROTTLE_CODES or re.search(r"try again|later|temporar", text, re.IGNORECASE):
        return Failure(
            FailureClass.TRANSIENT,
            message,
            "the server is temporarily unavailable; retry later",
            "imap.server",
        )
    return Failure(
        FailureClass.REJECTED_AT_GREETING,
        message,
        "the server does not accept connections from this runner (access rules or "
        f"maintenance); check imap.server ({imap.server}) with its administrator",
        "imap.server",
    )


def login_disabled(imap: ImapSettings) -> Failure:
    if not imap.secure:
        return Failure(
            FailureClass.TLS_REQUIRED,
            "the server advertises LOGINDISABLED on this plaintext connection, so LOGIN "
            'was not sent (node-imap: "Logging in is disabled on this server")',
            "Rocket.Chat cannot use IMAP STARTTLS: use port 993 with imap.secure: true",
            "imap.secure",
        )
    return Failure(
        FailureClass.NO_COMMON_MECHANISM,
        "the server advertises LOGINDISABLED even over TLS, and Rocket.Chat only uses LOGIN",
        "enable password (LOGIN) authentication for IMAP on the server; Rocket.Chat has no "
        "OAuth2 or other SASL mechanism",
        "imap.server",
    )


def unsendable_credentials() -> Failure:
    return Failure(
        FailureClass.NON_ASCII_CREDENTIALS,
        "the user name or password contains a line break or NUL, which an IMAP quoted "
        "string cannot carry (RFC 3501 §9); LOGIN was not sent",
        "remove the control character from imap.username / imap.password",
        "imap.password",
    )


def login_failure(result: str, lines: Sequence[bytes], imap: ImapSettings) -> Failure:
    """A ``NO``/``BAD`` answer to LOGIN (probe-anchors.md §3 rows 22, 24-26, 28)."""
    texts = [scrub(line_text(line), imap.password) for line in lines]
    tagged = texts[-1] if texts else ""
    reply = " / ".join(t for t in texts if t)
    message = f"LOGIN refused: {result} {reply}".rstrip()
    provider = provider_failure(protocol="imap", host=imap.server, reply=reply, message=message)
    if provider is not None:
        return provider
    code = response_code(tagged)
    if code == "PRIVACYREQUIRED" or (result == "BAD" and "invalid state" in reply.lower()):
        # Exchange answers LOGIN-in-clear with "BAD Command received in Invalid state".
        return Failure(
            FailureClass.TLS_REQUIRED,
            message,
            "the server only accepts passwords over TLS, and Rocket.Chat never uses IMAP "
            "STARTTLS: use port 993 with imap.secure: true",
            "imap.secure",
        )
    if code in _THROTTLE_CODES or _THROTTLE_TEXT.search(reply):
        return Failure(
            FailureClass.THROTTLED,
            message,
            "the server is limiting logins for this account or address (not necessarily a "
            "wrong password); wait, then retry once",
            "imap.username",
        )
    non_ascii = not (imap.username.isascii() and imap.password.reveal().isascii())
    if result == "BAD" and not non_ascii:
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            message,
            "the server rejected the LOGIN command as malformed; check imap.username",
            "imap.username",
        )
    hint = (
        "check imap.username (full address or local part: servers differ) and "
        "imap.password; not retried, to avoid a lock-out"
    )
    if non_ascii:
        hint += (
            "; the credentials contain non-ASCII characters, sent as UTF-8 in a quoted "
            "string as node-imap does, which this server may not accept"
        )
    return Failure(FailureClass.AUTH_FAILED, message, hint, "imap.password")


def select_failure(result: str, lines: Sequence[bytes], imap: ImapSettings) -> Failure:
    """``SELECT "INBOX"`` refused (probe-anchors.md §3 row 29)."""
    texts = [scrub(line_text(line), imap.password) for line in lines]
    reply = " / ".join(t for t in texts if t)
    message = f"SELECT INBOX refused: {result} {reply}".rstrip()
    provider = provider_failure(protocol="imap", host=imap.server, reply=reply, message=message)
    if provider is not None and provider.cls is FailureClass.MAILBOX:
        return provider
    code = response_code(texts[-1] if texts else "")
    if "not connected" in reply.lower():
        hint = (
            "the login works but the mailbox cannot be opened: IMAP is probably disabled "
            "for this user (Microsoft 365: 'User is authenticated but not connected')"
        )
    elif code == "NONEXISTENT":
        hint = "the account has no INBOX: create the mailbox or check imap.username"
    elif code == "NOPERM":
        hint = "the account may not open INBOX: grant it read-write access"
    else:
        hint = "the login works but INBOX cannot be opened for this account; check imap.username"
    return Failure(FailureClass.MAILBOX, message, hint, "imap.username")


def read_only(reply: str) -> Failure:
    return Failure(
        FailureClass.MAILBOX_READ_ONLY,
        f"INBOX opened read-only: {reply}",
        "Rocket.Chat must set \\Seen on fetched mail, or it imports the same messages "
        "again; give imap.username read-write access to INBOX",
        "imap.username",
    )


def search_failure(result: str, reply: str, since: str) -> Failure:
    return Failure(
        FailureClass.MAILBOX,
        f"SEARCH UNSEEN SINCE {since} refused: {result} {reply}".rstrip(),
        "Rocket.Chat finds new mail with exactly this search; the server must support "
        "SEARCH UNSEEN SINCE on INBOX",
        "imap.server",
    )


def timeout_failure(exc: StepTimeout, imap: ImapSettings) -> Failure:
    """A step without an answer (probe-anchors.md §3 row 34): name the step and the cause."""
    step = exc.step.value
    if exc.deadline:
        return Failure(
            FailureClass.DEADLINE,
            f"the overall deadline ran out during the {step} step "
            f"({exc.cap:.1f} s were left for it)",
            "raise --timeout, or probe fewer inboxes at once",
            _STEP_FIELDS.get(exc.step),
        )
    if exc.step is Step.AUTH:
        message = (
            f"no answer to LOGIN within {exc.cap:.1f} s; Rocket.Chat would give up after "
            f'{RC_AUTH_TIMEOUT:g} s ("Timed out while authenticating with server")'
        )
        provider = provider_failure(
            protocol="imap", host=imap.server, reply="", message=message, timed_out=True
        )
        if provider is not None:
            return provider
        return Failure(
            FailureClass.TIMEOUT,
            message,
            "some servers stay silent instead of refusing credentials: check imap.username "
            "and imap.password, then the server's load",
            "imap.password",
        )
    what = {
        Step.TLS: "the TLS handshake",
        Step.CAPABILITIES: "CAPABILITY",
        Step.MAILBOX: "SELECT/SEARCH",
        Step.QUIT: "LOGOUT",
    }.get(exc.step, f"the {step} step")
    hint = (
        f"the port accepts connections but does not answer TLS; check imap.port ({imap.port}) "
        "and imap.secure"
        if exc.step is Step.TLS
        else "the server stopped answering; check its load and retry"
    )
    return Failure(
        FailureClass.TIMEOUT,
        f"no answer to {what} within {exc.cap:.1f} s",
        hint,
        _STEP_FIELDS.get(exc.step),
    )


_STEP_FIELDS: dict[Step, str] = {
    Step.TLS: "imap.port",
    Step.GREETING: "imap.port",
    Step.CAPABILITIES: "imap.server",
    Step.AUTH: "imap.password",
    Step.MAILBOX: "imap.server",
    Step.QUIT: "imap.server",
}


def closed_failure(
    step: Step, imap: ImapSettings, *, lines: Sequence[bytes], error: BaseException | None
) -> Failure:
    """The server closed the connection (or sent what we cannot parse) mid-command.

    Args:
        step: the step whose command was pending.
        imap: the settings (for the password to scrub and the provider).
        lines: untagged lines received for the command before the close (a ``BYE``).
        error: the parser error that made us close, if that is what happened.
    """
    if error is not None:
        detail = scrub(f"{type(error).__name__}: {error}", imap.password)
        return Failure(
            FailureClass.PROTOCOL_ERROR,
            f"the server's reply to {_COMMAND_OF[step]} could not be parsed ({detail})",
            f"this does not look like an IMAP server; check imap.port ({imap.port})",
            "imap.port",
        )
    texts = [scrub(line_text(line), imap.password) for line in lines]
    bye = " / ".join(t for t in texts if t)
    said = f": {bye}" if bye else " without a word"
    message = f"the server closed the connection in answer to {_COMMAND_OF[step]}{said}"
    if step is Step.AUTH:
        if _THROTTLE_TEXT.search(bye) or response_code(bye.removeprefix("BYE ")) == "LIMIT":
            return Failure(
                FailureClass.THROTTLED,
                message,
                "too many connections for this account or address; Rocket.Chat opens one per "
                "instance and inbox: close other clients or raise the server's limit",
                "imap.username",
            )
        provider = provider_failure(
            protocol="imap", host=imap.server, reply=bye, message=message, timed_out=True
        )
        if provider is not None:
            return provider
        return Failure(
            FailureClass.RESET,
            message,
            "servers hang up like this on refused credentials or when IMAP is disabled for "
            "the account: check imap.username and imap.password, and the server's log",
            "imap.password",
        )
    field = "imap.username" if step is Step.MAILBOX else "imap.server"
    return Failure(
        FailureClass.RESET,
        message,
        "the server ended the session; check its log for this account",
        field,
    )


_COMMAND_OF: dict[Step, str] = {
    Step.CAPABILITIES: "CAPABILITY",
    Step.AUTH: "LOGIN",
    Step.MAILBOX: "SELECT/SEARCH",
    Step.QUIT: "LOGOUT",
    # check --round-trip
    Step.DELIVERY: "NOOP/UID SEARCH",
    Step.CLEANUP: "UID STORE/EXPUNGE",
}


def tls_hint(failure: FailureClass) -> str:
    if failure is FailureClass.TLS_PROTOCOL:
        return (
            "the server offers only old TLS versions or ciphers (Rocket.Chat's Node.js needs "
            "TLS 1.2 or later); upgrade the server's TLS configuration"
        )
    if failure is FailureClass.RESET:
        return (
            "the server closed the connection during the TLS handshake: it may not speak "
            "TLS on this port, or it refuses this client; check imap.port and imap.secure"
        )
    return "check the server's TLS configuration and imap.port"


# --------------------------------------------------------------------------- warnings


def plaintext_finding(imap: ImapSettings) -> Finding:
    return Finding(
        code="plaintext-credentials",
        message=(
            f"imap.secure is false: Rocket.Chat sends the password for {imap.username} in "
            "clear text with LOGIN (node-imap never uses STARTTLS)"
        ),
        hint="use port 993 with imap.secure: true",
        field="imap.secure",
        strict_exit=ExitCode.TLS,
    )


def slow_finding(what: str, elapsed: float, limit: float) -> Finding:
    if what == "connect":
        said = "Timed out while connecting to server"
        span = "connecting"
    else:
        said = "Timed out while authenticating with server"
        span = "from connecting to a successful LOGIN"
    return Finding(
        code="slower-than-rocketchat",
        message=(
            f"{span} took {elapsed:.1f} s; Rocket.Chat (node-imap) allows {limit:g} s and "
            f'would time out ("{said}")'
        ),
        hint="Rocket.Chat's IMAP time limits are fixed: make the server or the path to it faster",
        field="imap.server",
        strict_exit=ExitCode.TRANSIENT,
    )


def cert_finding(
    imap: ImapSettings, reason: str, tls_facts: dict[str, Any], options: ProbeOptions
) -> Finding:
    cert = tls_facts.get("certificate") or {}
    summary = ", ".join(
        part
        for part in (
            f"subject {cert['subject']}" if cert.get("subject") else "",
            f"issuer {cert['issuer']}" if cert.get("issuer") else "",
            f"names {', '.join(cert['names'])}" if cert.get("names") else "",
            f"expires {cert['not_after'][:10]}" if cert.get("not_after") else "",
            f"sha256 {cert['sha256'][:16]}…" if cert.get("sha256") else "",
        )
        if part
    )
    extra = "" if options.ca_file is None else f" (with --ca-file {options.ca_file})"
    return Finding(
        code="imap-cert-unverified",
        message=f"{reason}{extra}" + (f"; certificate: {summary}" if summary else ""),
        hint=(
            "Rocket.Chat does not verify IMAP certificates, so this works but is insecure "
            "(anyone on the path could read the password): fix the certificate of "
            f"{imap.server}, or pass --ca-file if it comes from a private CA"
        ),
        field="imap.server",
        strict_exit=ExitCode.TLS,
    )
