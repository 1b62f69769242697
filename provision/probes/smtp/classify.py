"""SMTP outcomes -> :class:`~provision.results.Failure` and findings (probe-anchors.md §3).

Decided from exception types, reply codes (RFC 5321 §4.2, RFC 4954 §6) and the first
bytes a server sent, never from library exception text; provider wording (Gmail,
Microsoft 365) is ``_providers``' job. :func:`follow_up` names the credential-free
check that refines a failure before it is reported.
"""

from __future__ import annotations

import dataclasses
import enum

from aiosmtplib import SMTPResponse, SMTPResponseException, SMTPStatus

from provision.models import SmtpSettings
from provision.probes._providers import provider_failure
from provision.probes._steps import StepTimeout
from provision.probes.failure import ProbeFailed
from provision.probes.smtp.connection import NODEMAILER_MECHANISMS
from provision.results import Failure, FailureClass, Finding, Step
from provision.tls_failures import classify_tls_error

__all__ = [
    "Classifier",
    "FollowUp",
    "capability_lines",
    "describe",
    "first_line",
    "one_line",
    "follow_up",
    "reply_text",
]

_F = FailureClass
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")  # TLS alert / handshake record headers
_OTHER_SERVICES = (
    (b"+OK", "a POP3 server"),
    (b"* OK", "an IMAP server"),
    (b"* PREAUTH", "an IMAP server"),
    (b"* BYE", "an IMAP server"),
    (b"HTTP/", "an HTTP server"),
    (b"SSH-", "an SSH server"),
)
_TLS_HINTS = {
    _F.CERT_UNTRUSTED: "Rocket.Chat verifies SMTP certificates against Node's CA store "
    "(plus NODE_EXTRA_CA_CERTS) and has no switch to skip that (issue #23132): install a "
    "certificate from a public CA, or trust the issuing CA on the Rocket.Chat host and "
    "pass it here with --ca-file",
    _F.CERT_EXPIRED: "renew the server's certificate (dates in facts.tls); if it is not "
    "yet valid, check this runner's clock",
    _F.CERT_HOSTNAME: "use one of the names the certificate covers as smtp.server, or "
    "have the certificate reissued for it",
    _F.CERT_STRICT: "reissue the certificate with RFC 5280-clean extensions",
    _F.TLS_PROTOCOL: "the server offers only TLS versions or ciphers that Rocket.Chat "
    "(Node, TLS >= 1.2) refuses; update the server's TLS configuration",
}
_STARTTLS_REFUSED_HINT = (
    "Rocket.Chat fails the same way (nodemailer does not fall back to plaintext): fix "
    "the server's TLS setup, or use port 465 with smtp.secure: true"
)
# code -> (message, hint, field) of the findings whose text depends on nothing.
_FIXED_FINDINGS = {
    "smtp-verify-off": (
        "SMTP certificate verification is turned off for this probe; "
        "Rocket.Chat always verifies, so a bad certificate would still break sending",
        "drop --smtp-no-verify once the certificate is fixed",
        "smtp.server",
    ),
    "plaintext-credentials": (
        "smtp.secure is false and the server offers no STARTTLS: the password "
        "crosses the network in clear text, exactly as Rocket.Chat would send it",
        "use port 465 with smtp.secure: true, or enable STARTTLS on the server",
        "smtp.secure",
    ),
}
# Failures at the greeting of a plaintext session that a TLS handshake may explain.
_SILENT_GREETINGS = frozenset({_F.PLAINTEXT_ON_TLS_PORT, _F.SLOW_GREETING, _F.RESET})


class FollowUp(enum.Enum):
    """A credential-free check that refines a failure before it is reported."""

    CONFIRM_IMPLICIT_TLS = "confirm-implicit-tls"
    CONFIRM_PLAINTEXT = "confirm-plaintext"
    CERT_FACTS = "cert-facts"
    HELO_FALLBACK = "helo-fallback"


def follow_up(step: Step, failure: Failure, *, secure: bool) -> FollowUp | None:
    """The check to run for a failure that :meth:`Classifier.classify` found at ``step``."""
    cls = failure.cls
    if step is Step.GREETING and not secure and cls in _SILENT_GREETINGS:
        return FollowUp.CONFIRM_IMPLICIT_TLS
    if step is Step.CAPABILITIES and cls is _F.EHLO_REFUSED:
        return FollowUp.HELO_FALLBACK
    if step is Step.TLS and cls is _F.TLS_ON_PLAINTEXT_PORT:
        return FollowUp.CONFIRM_PLAINTEXT
    if step in (Step.TLS, Step.STARTTLS) and cls.value.startswith("cert-"):
        return FollowUp.CERT_FACTS
    return None


class Classifier:
    """Failures of one SMTP stage; ``mechanism`` is set once AUTH has chosen one."""

    def __init__(self, settings: SmtpSettings, ehlo_name: str) -> None:
        self.cfg = settings
        self.ehlo_name = ehlo_name
        self.mechanism: str | None = None

    @property
    def where(self) -> str:
        return f"{self.cfg.server}:{self.cfg.port}"

    def classify(self, step: Step, exc: BaseException, *, head: bytes) -> Failure:
        """Map an exception raised during ``step`` to a failure, by type and reply code.

        Args:
            step: the step that failed.
            exc: what it raised.
            head: the first bytes the server sent on this connection.
        """
        if isinstance(exc, StepTimeout) and exc.deadline:
            return Failure(
                _F.DEADLINE,
                f"the overall deadline ran out during the {step.value} step",
                "raise the overall --timeout, or probe fewer inboxes at once",
                None,
            )
        if step is Step.GREETING:
            return self._bad_greeting(exc, head)
        if isinstance(exc, StepTimeout):
            return self._step_timeout(step, exc)
        if isinstance(exc, SMTPResponseException) and exc.code > 0:
            return self.reply(step, exc.code, exc.message)
        if step in (Step.TLS, Step.STARTTLS):
            found = classify_tls_error(exc, server=self.cfg.server)
            if found is not None:
                return self._tls_failure(step, found)
        if isinstance(exc, SMTPResponseException):  # code -1: not an SMTP reply at all
            return Failure(
                _F.PROTOCOL_ERROR,
                f"the server's answer at the {step.value} step is not SMTP: {exc.message}",
                f"check smtp.server and smtp.port: {self.where} does not speak SMTP",
                "smtp.port",
            )
        return self.dropped(step, exc)

    def reply(self, step: Step, code: int, text: str) -> Failure:
        """Map an SMTP reply code at ``step`` to a failure (RFC 5321 §4.2, RFC 4954 §6)."""
        reply = f"{code} {one_line(text)}"
        if step is Step.AUTH:
            return self._auth_reply(code, reply)
        if 400 <= code < 500:  # 421 included: the server closes the session
            if step is Step.STARTTLS and code == SMTPStatus.tls_not_available:
                return self._starttls_refused(reply)
            return Failure(
                _F.TRANSIENT,
                f"the server refused the {step.value} step for now: {reply}",
                "temporary (too many connections, greylisting or maintenance): retry later",
                "smtp.server",
            )
        if 500 <= code < 600:
            if step is Step.GREETING:
                return Failure(
                    _F.REJECTED_AT_GREETING,
                    f"the server refused the connection in its greeting: {reply}",
                    "the server refuses clients from this address (block list or access "
                    "policy); check with the mail provider, or probe from the Rocket.Chat "
                    "host's network",
                    "smtp.server",
                )
            if step is Step.CAPABILITIES:
                return Failure(
                    _F.EHLO_REFUSED,
                    f"the server refused EHLO {self.ehlo_name}: {reply}",
                    "the server rejects the client's name (container host names are not "
                    "FQDNs); pass a fully-qualified name with --ehlo-name, and give the "
                    "Rocket.Chat host a resolvable FQDN (nodemailer sends its host name)",
                    None,
                )
            if step is Step.STARTTLS:
                return self._starttls_refused(reply)
        return Failure(
            _F.PROTOCOL_ERROR,
            f"unexpected reply at the {step.value} step: {reply}",
            f"check smtp.server and smtp.port: {self.where} does not speak SMTP",
            "smtp.port",
        )

    def _auth_reply(self, code: int, reply: str) -> Failure:
        """The answer to the one AUTH attempt; provider patterns first (Gmail, M365)."""
        mech = self.mechanism or "PLAIN"
        message = f"AUTH {mech} refused: {reply}"
        known = provider_failure(
            protocol="smtp", host=self.cfg.server, reply=reply, message=message
        )
        if known is not None:
            return known
        if "too many" in reply.lower():
            return Failure(
                _F.THROTTLED,
                message,
                "the account or this address is rate-limited after failed logins: wait before "
                "retrying, check smtp.password, and do not retry in a loop",
                "smtp.password",
            )
        if code in (SMTPStatus.access_denied, 538):
            # 530 5.7.0 "Must issue a STARTTLS command first", 538 5.7.11 (RFC 4954 §6).
            return Failure(
                _F.TLS_REQUIRED,
                f"the server refuses AUTH without TLS: {reply}",
                "use port 465 with smtp.secure: true, or a port that advertises STARTTLS "
                "(587) with smtp.secure: false; Rocket.Chat upgrades only when STARTTLS is "
                "advertised",
                "smtp.secure",
            )
        if code in (500, 502, 503, SMTPStatus.parameter_not_implemented, 534):
            # 500/502 AUTH unknown or not implemented, 503 not enabled (Postfix "503 5.5.1
            # Error: authentication not enabled"), although EHLO advertised it: not about
            # the credentials. 504 5.5.4 mechanism not supported; 534 5.7.9 too weak.
            return Failure(
                _F.NO_COMMON_MECHANISM,
                f"the server refused AUTH {mech} although it advertised it: {reply}",
                "enable PLAIN or LOGIN for this account on the server; Rocket.Chat "
                "(nodemailer) can only use PLAIN, LOGIN or CRAM-MD5",
                "smtp.server",
            )
        if 400 <= code < 500:
            return Failure(
                _F.TRANSIENT,
                f"temporary authentication failure: {reply}",
                "the server's authentication backend is unavailable; retry later",
                "smtp.server",
            )
        if 500 <= code < 600:
            return Failure(
                _F.AUTH_FAILED,
                f"the server rejected the credentials: {reply}",
                f"check smtp.username ({self._username_advice()}) and smtp.password; the probe "
                "made one attempt, as Rocket.Chat does, to avoid lock-outs",
                "smtp.password",
            )
        message = f"unexpected reply during AUTH {mech}: {reply}"
        hint = "the server does not follow the AUTH exchange (RFC 4954); check smtp.server"
        return Failure(_F.PROTOCOL_ERROR, message, hint, "smtp.server")

    def _bad_greeting(self, exc: BaseException, head: bytes) -> Failure:
        """No usable greeting: tell silence, TLS bytes, another protocol and garbage apart."""
        for prefix, service in _OTHER_SERVICES:
            if head.startswith(prefix):
                return Failure(
                    _F.WRONG_SERVICE,
                    f"{service} answered on {self.where}, not SMTP: {_printable(head)}",
                    "smtp.port points at another service; SMTP submission is usually 587 "
                    "(smtp.secure: false) or 465 (smtp.secure: true)",
                    "smtp.port",
                )
        timed_out = isinstance(exc, StepTimeout)
        if head.startswith(_TLS_RECORDS) and not self.cfg.secure:
            return Failure(
                _F.PLAINTEXT_ON_TLS_PORT,
                f"{self.where} answered the plaintext connection with TLS data",
                f"port {self.cfg.port} expects TLS from the first byte: set smtp.secure: true",
                "smtp.secure",
            )
        if not head and timed_out:
            return Failure(
                _F.SLOW_GREETING,
                f"no greeting from {self.where} within {_cap(exc):.1f} s",
                "the server delays its banner (greet pause, tarpit) or is not an SMTP server: "
                "raise --step-timeout, and check smtp.server and smtp.port",
                "smtp.port",
            )
        if not head:
            return Failure(
                _F.RESET,
                f"{self.where} closed the connection before sending a greeting",
                "the server refuses this client (access list, connection limit) or is not an "
                "SMTP server; check smtp.server and smtp.port",
                "smtp.port",
            )
        if timed_out:
            what = f"sent {len(head)} bytes but never ended its greeting line"
        elif isinstance(exc, SMTPResponseException):
            what = "sent a greeting that is not SMTP"
        else:
            what = "closed the connection in the middle of its greeting"
        return Failure(
            _F.PROTOCOL_ERROR,
            f"{self.where} {what}: {_printable(head)}",
            "this is not an SMTP server (or a broken one); check smtp.server and smtp.port",
            "smtp.port",
        )

    def _step_timeout(self, step: Step, exc: StepTimeout) -> Failure:
        if step is Step.AUTH:
            # Exchange Online answers a refused AUTH with silence (windmill PR #10620):
            # a timeout exactly here is about credentials, not the network.
            message = f"no answer to AUTH {self.mechanism} within {exc.cap:.1f} s"
            known = provider_failure(
                protocol="smtp", host=self.cfg.server, reply="", message=message, timed_out=True
            )
            if known is not None:
                return known
            return Failure(
                _F.AUTH_FAILED,
                message + ": the credentials were probably rejected",
                "some servers (Exchange Online among them) answer refused credentials with "
                f"silence; check smtp.username ({self._username_advice()}) and smtp.password",
                "smtp.password",
            )
        if step is Step.TLS:
            what, hint = "no TLS handshake answer", "check smtp.port and smtp.secure"
        elif step is Step.CAPABILITIES:
            what, hint = (
                "no answer to EHLO",
                "the server stalls after its greeting; check smtp.server",
            )
        elif step is Step.STARTTLS:
            what = "STARTTLS did not complete"
            hint = "the TLS upgrade stalls: check the server, or use 465 with smtp.secure: true"
        else:
            what, hint = f"no answer at the {step.value} step", "check smtp.server and smtp.port"
        field = "smtp.port" if step is Step.TLS else "smtp.server"
        return Failure(_F.TIMEOUT, f"{what} from {self.where} within {exc.cap:.1f} s", hint, field)

    def dropped(self, step: Step, exc: BaseException) -> Failure:
        """The server closed or reset the connection (or it broke) during ``step``."""
        detail = describe(exc)
        if step is Step.AUTH:
            return Failure(
                _F.PROTOCOL_ERROR,
                f"the server closed the connection in answer to AUTH {self.mechanism} ({detail})",
                "servers drop the connection on refused credentials or by policy (too many "
                "failures, blocked client): check smtp.username and smtp.password, then the "
                "server's log",
                "smtp.password",
            )
        if step is Step.CONNECT:
            return Failure(
                _F.RESET,
                f"{self.where} reset the connection right after accepting it ({detail})",
                "the server or a middlebox refuses this client; check smtp.server and smtp.port",
                "smtp.port",
            )
        if step in (Step.TLS, Step.STARTTLS):
            return Failure(
                _F.RESET,
                f"the server closed the connection during the {step.value} handshake ({detail})",
                "the server or a middlebox refused the TLS handshake (SNI, client certificate, "
                "TLS policy); check smtp.port and smtp.secure",
                "smtp.port" if step is Step.TLS else "smtp.server",
            )
        return Failure(
            _F.PROTOCOL_ERROR,
            f"the server closed the connection at the {step.value} step ({detail})",
            "the server refuses this client after its greeting (policy, EHLO name); check "
            "--ehlo-name and the server's log",
            "smtp.server",
        )

    def _tls_failure(self, step: Step, found: Failure) -> Failure:
        cls = found.cls
        if cls is _F.TLS_ON_PLAINTEXT_PORT and step is Step.STARTTLS:
            return Failure(
                _F.TLS_ERROR,
                f"the server accepted STARTTLS, then did not speak TLS ({found.message})",
                "the server's STARTTLS is broken: fix it, or use port 465 with smtp.secure: true",
                "smtp.server",
            )
        if cls is _F.TLS_ON_PLAINTEXT_PORT:
            return Failure(
                cls,
                f"{self.where} does not speak TLS from the first byte ({found.message})",
                f"port {self.cfg.port} starts in plaintext: set smtp.secure: false, or use "
                "port 465 with smtp.secure: true",
                "smtp.secure",
            )
        if cls is _F.RESET:
            return self.dropped(step, ConnectionResetError(found.message))
        hint = _TLS_HINTS.get(cls, "check the server's TLS configuration")
        return Failure(cls, found.message, hint, "smtp.server")

    # -- before AUTH: what the capabilities (or settings) rule out ---------------------

    def auth_not_advertised(self, *, encrypted: bool) -> Failure:
        if not encrypted:
            return Failure(
                _F.AUTH_NOT_ADVERTISED,
                f"{self.where} advertises no AUTH on this plaintext session and offers no "
                "STARTTLS: Rocket.Chat would send without authenticating",
                "servers usually offer AUTH only over TLS: use port 465 with smtp.secure: true, "
                "or 587 (STARTTLS) with smtp.secure: false; port 25 is for server-to-server mail",
                "smtp.port",
            )
        return Failure(
            _F.AUTH_NOT_ADVERTISED,
            f"{self.where} advertises no AUTH even over TLS: Rocket.Chat would send without "
            "authenticating",
            "this port takes no authenticated submissions (an MX port?); use the submission "
            "port 587 (smtp.secure: false) or 465 (smtp.secure: true)",
            "smtp.port",
        )

    def missing_credentials(self, mechanism: str) -> Failure:
        field = "smtp.username" if not self.cfg.username else "smtp.password"
        return Failure(
            _F.AUTH_FAILED,
            f'Missing credentials for "{mechanism}" (nodemailer\'s error: the server requires '
            f"AUTH and {field} is empty)",
            "set both smtp.username and smtp.password",
            field,
        )

    @staticmethod
    def no_common_mechanism(offered: list[str]) -> Failure:
        return Failure(
            _F.NO_COMMON_MECHANISM,
            f"the server offers AUTH {' '.join(offered) or '(none)'}; Rocket.Chat (nodemailer) "
            f"can only use {', '.join(NODEMAILER_MECHANISMS)}",
            "enable PLAIN or LOGIN on the server for this port; Rocket.Chat has no OAuth2 for SMTP",
            "smtp.server",
        )

    @staticmethod
    def _starttls_refused(reply: str) -> Failure:
        message = f"the server advertised STARTTLS but refused it: {reply}"
        return Failure(_F.STARTTLS_REFUSED, message, _STARTTLS_REFUSED_HINT, "smtp.secure")

    def _username_advice(self) -> str:
        if "@" in self.cfg.username:
            return "some servers want only the local part, not the full address"
        return "most providers want the full email address, not the local part"

    # -- what the follow-up checks found ----------------------------------------------

    def implicit_tls_confirmed(self, outcome: str) -> Failure:
        """Plaintext got no greeting, TLS on the same port was greeted with ``outcome``."""
        return Failure(
            _F.PLAINTEXT_ON_TLS_PORT,
            f"{self.where} speaks TLS from the first byte; a plaintext client gets no greeting "
            f"(with TLS it answered {outcome})",
            f"port {self.cfg.port} speaks TLS from the first byte: set smtp.secure: true",
            "smtp.secure",
        )

    def plaintext_confirmed(self, failure: Failure, outcome: str, *, starttls: bool) -> Failure:
        """TLS failed, a plaintext client on the same port was greeted with ``outcome``."""
        port = self.cfg.port
        if starttls:
            hint = (
                f"port {port} speaks plaintext first (STARTTLS): set smtp.secure: false "
                "(Rocket.Chat then upgrades with STARTTLS)"
            )
        else:
            hint = (
                f"port {port} speaks plaintext and offers no STARTTLS: smtp.secure: false would "
                "send the password in clear; prefer port 465 with smtp.secure: true"
            )
        message = f"{failure.message}; in plaintext it answered {outcome}"
        return Failure(failure.cls, message, hint, "smtp.secure")

    @staticmethod
    def certificate_names(failure: Failure, names: list[str] | None) -> Failure:
        """A host-name mismatch, told which names the fetched certificate covers."""
        if failure.cls is not _F.CERT_HOSTNAME or not names:
            return failure
        return dataclasses.replace(
            failure,
            hint=f"the certificate covers {', '.join(names)}: use one of these as smtp.server, "
            "or have the certificate reissued for it",
        )

    @staticmethod
    def helo_accepted(failure: Failure) -> Failure:
        return dataclasses.replace(
            failure,
            message=failure.message + "; HELO was accepted, but without EHLO there is no AUTH",
        )

    # -- findings -----------------------------------------------------------------------

    @staticmethod
    def finding(code: str) -> Finding:
        """A fixed finding (``smtp-verify-off``, ``plaintext-credentials``), new each time."""
        message, hint, field = _FIXED_FINDINGS[code]
        return Finding(code=code, message=message, hint=hint, field=field)


# -- server text --------------------------------------------------------------------


def capability_lines(ehlo_message: str) -> list[str]:
    """EHLO keywords with their parameters; the first line is the server's name."""
    return [line.strip() for line in ehlo_message.split("\n")[1:] if line.strip()]


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def one_line(text: str) -> str:
    """Reply text with its lines joined by single spaces."""
    return " ".join(part.strip() for part in text.split("\n") if part.strip())


def reply_text(reply: SMTPResponse) -> str:
    return f"{reply.code} {first_line(reply.message)}".strip()


def _printable(data: bytes, limit: int = 80) -> str:
    """Bytes as readable text: the first line, non-printables escaped, shortened."""
    line = data.split(b"\n", 1)[0][:limit]
    text = line.decode("ascii", "backslashreplace").rstrip("\r")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return repr(text + ("..." if len(data) > len(line) + 2 else ""))


def describe(exc: BaseException) -> str:
    if isinstance(exc, ProbeFailed):
        return exc.failure.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cap(exc: BaseException) -> float:
    return exc.cap if isinstance(exc, StepTimeout) else 0.0
