"""Results: what a run found, as data. Rendering lives in ``provision.render``.

Shape (also the JSON schema, ``schema_version`` 1)::

    Report
      inboxes: [InboxResult]
        name, email, file, warnings: [Finding]
        stages: [StageResult]            # smtp, imap (then submit, verify for `set`;
                                         # only prune for an inbox `set --prune` deletes)
          stage, status, class, message, hint, field, elapsed_ms,
          steps: [StepResult]            # resolve, connect, tls, greeting, ...
          warnings: [Finding], facts: {...}

A failure is never an exception here: probes return a failed ``StageResult``
whose ``failure`` names a :class:`FailureClass` from the taxonomy in
``shared/spec/probe-anchors.md`` §3, and that class decides the exit code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provision.models import Inbox

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "ExitCode",
    "Failure",
    "FailureClass",
    "Finding",
    "InboxResult",
    "Report",
    "RocketChatState",
    "Stage",
    "StageResult",
    "Status",
    "Step",
    "StepResult",
]

SCHEMA_VERSION = 1


class Stage(StrEnum):
    """A stage of an inbox's run, in run order: the probes (smtp, imap), then, for
    ``set``, submit and verify."""

    SMTP = "smtp"
    IMAP = "imap"
    SUBMIT = "submit"
    VERIFY = "verify"
    #: ``check --round-trip``: a message from the inbox to itself, then removed
    ROUND_TRIP = "round-trip"
    # audit: what Rocket.Chat says of the stored inbox, then (with --against) the drift
    ROCKETCHAT = "rocketchat"
    DRIFT = "drift"
    #: ``set --prune``: the deletion of an inbox that is in none of the files
    PRUNE = "prune"


class Step(StrEnum):
    """A step inside a probe stage."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    GREETING = "greeting"
    CAPABILITIES = "capabilities"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAILBOX = "mailbox"
    # --envelope (and --round-trip's send): the inbox address as sender and recipient
    MAIL_FROM = "mail-from"
    RCPT_TO = "rcpt-to"
    RSET = "rset"
    # --round-trip: the message, its arrival over IMAP, and its removal
    DATA = "data"
    SEND = "send"
    DELIVERY = "delivery"
    CLEANUP = "cleanup"
    QUIT = "quit"


class Status(StrEnum):
    """Outcome of a step or stage."""

    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"


class Action(StrEnum):
    """What ``set`` did (or, with ``dry_run``, would do) to an inbox; JSON shows the value."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"
    # dry run
    CREATE = "create"
    UPDATE = "update"
    # a stopped run (SIGINT, SIGTERM, SIGHUP), or a write whose answer was lost
    NOT_STARTED = "not-started"  #: stopped before anything was sent for this inbox
    UNKNOWN = "unknown"  #: a write was sent, its outcome is not known: rerun (it converges)
    # set --prune (commands/prune.py): deleted, would delete, or listed without --prune
    DELETED = "deleted"
    DELETE = "delete"
    ONLY_ON_SERVER = "only-on-server"


class ExitCode(IntEnum):
    """Stable, documented exit codes (swaks-style groups)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    DNS = 10
    CONNECT = 11
    TLS = 12
    PROTOCOL = 13
    AUTH = 14
    MAILBOX = 15
    TRANSIENT = 16
    NOTHING_FOUND = 17  #: ``discover``: no usable SMTP or no usable IMAP server
    DRIFT = 18  #: ``audit``: stored inboxes differ from the files, or an address is not stored
    ROCKETCHAT = 20
    # stopped by a signal: 128 + its number (``provision.stopping``)
    STOPPED_SIGHUP = 129
    STOPPED_SIGINT = 130
    STOPPED_SIGTERM = 143


class FailureClass(StrEnum):
    """Failure taxonomy (probe-anchors.md §3); the value is what JSON shows."""

    # resolve
    DNS_NOT_FOUND = "dns-not-found"
    DNS_TEMPORARY = "dns-temporary"
    DNS_NO_ADDRESS = "dns-no-address"
    # connect
    PORT_CLOSED = "port-closed"
    CONNECT_TIMEOUT = "connect-timeout"
    ROUTE = "route"
    RESET = "reset"
    # tls mode / greeting
    TLS_ON_PLAINTEXT_PORT = "tls-on-plaintext-port"
    PLAINTEXT_ON_TLS_PORT = "plaintext-on-tls-port"
    SLOW_GREETING = "slow-greeting"
    REJECTED_AT_GREETING = "rejected-at-greeting"
    WRONG_SERVICE = "wrong-service"
    PROTOCOL_ERROR = "protocol-error"
    EHLO_REFUSED = "ehlo-refused"
    STARTTLS_NOT_OFFERED = "starttls-not-offered"
    STARTTLS_REFUSED = "starttls-refused"
    # tls / certificates
    TLS_PROTOCOL = "tls-protocol"
    TLS_ERROR = "tls-error"
    CERT_UNTRUSTED = "cert-untrusted"
    CERT_EXPIRED = "cert-expired"
    CERT_HOSTNAME = "cert-hostname"
    CERT_STRICT = "cert-strict"
    # auth
    AUTH_NOT_ADVERTISED = "auth-not-advertised"
    TLS_REQUIRED = "tls-required"
    NO_COMMON_MECHANISM = "no-common-mechanism"
    AUTH_FAILED = "auth-failed"
    APP_PASSWORD_REQUIRED = "app-password-required"  # noqa: S105 (a class name)
    BASIC_AUTH_DISABLED = "basic-auth-disabled"
    SMTP_AUTH_DISABLED = "smtp-auth-disabled"  #: Microsoft 365's per-tenant/mailbox switch
    OAUTH_REJECTED = "oauth-rejected"
    NON_ASCII_CREDENTIALS = "non-ascii-credentials"
    # mailbox / sender
    MAILBOX = "mailbox"
    MAILBOX_READ_ONLY = "mailbox-read-only"
    SENDER_REFUSED = "sender-refused"
    RELAY_REFUSED = "relay-refused"
    RECIPIENT_UNKNOWN = "recipient-unknown"
    NOT_DELIVERED = "not-delivered"
    # transient
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    TIMEOUT = "timeout"
    DEADLINE = "deadline"
    # Rocket.Chat (set)
    ROCKETCHAT = "rocketchat"
    # audit: stored inboxes differ from the files; an --email address is not stored
    DRIFT = "drift"
    NOT_STORED = "not-stored"
    # a bug in provision itself (reported, never a traceback)
    INTERNAL = "internal-error"

    @property
    def exit_code(self) -> ExitCode:
        """The exit-code group of this class."""
        return _EXIT_CODES[self]


_FC = FailureClass
_EXIT_CODES: dict[FailureClass, ExitCode] = {
    **dict.fromkeys((_FC.DNS_NOT_FOUND, _FC.DNS_NO_ADDRESS), ExitCode.DNS),
    _FC.DNS_TEMPORARY: ExitCode.TRANSIENT,
    **dict.fromkeys((_FC.PORT_CLOSED, _FC.CONNECT_TIMEOUT, _FC.ROUTE, _FC.RESET), ExitCode.CONNECT),
    **dict.fromkeys(
        (
            _FC.TLS_PROTOCOL,
            _FC.TLS_ERROR,
            _FC.CERT_UNTRUSTED,
            _FC.CERT_EXPIRED,
            _FC.CERT_HOSTNAME,
            _FC.CERT_STRICT,
        ),
        ExitCode.TLS,
    ),
    **dict.fromkeys(
        (
            _FC.TLS_ON_PLAINTEXT_PORT,
            _FC.PLAINTEXT_ON_TLS_PORT,
            _FC.SLOW_GREETING,
            _FC.REJECTED_AT_GREETING,
            _FC.WRONG_SERVICE,
            _FC.PROTOCOL_ERROR,
            _FC.EHLO_REFUSED,
            _FC.STARTTLS_NOT_OFFERED,
            _FC.STARTTLS_REFUSED,
        ),
        ExitCode.PROTOCOL,
    ),
    **dict.fromkeys(
        (
            _FC.AUTH_NOT_ADVERTISED,
            _FC.TLS_REQUIRED,
            _FC.NO_COMMON_MECHANISM,
            _FC.AUTH_FAILED,
            _FC.APP_PASSWORD_REQUIRED,
            _FC.BASIC_AUTH_DISABLED,
            _FC.SMTP_AUTH_DISABLED,
            _FC.OAUTH_REJECTED,
            _FC.NON_ASCII_CREDENTIALS,
        ),
        ExitCode.AUTH,
    ),
    **dict.fromkeys(
        (
            _FC.MAILBOX,
            _FC.MAILBOX_READ_ONLY,
            _FC.SENDER_REFUSED,
            _FC.RELAY_REFUSED,
            _FC.RECIPIENT_UNKNOWN,
            _FC.NOT_DELIVERED,
        ),
        ExitCode.MAILBOX,
    ),
    **dict.fromkeys((_FC.THROTTLED, _FC.TRANSIENT, _FC.TIMEOUT, _FC.DEADLINE), ExitCode.TRANSIENT),
    _FC.ROCKETCHAT: ExitCode.ROCKETCHAT,
    **dict.fromkeys((_FC.DRIFT, _FC.NOT_STORED), ExitCode.DRIFT),
    _FC.INTERNAL: ExitCode.INTERNAL,
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: the one shape of "what went wrong and what to change".

    Every layer that diagnoses (connect, TLS, provider rules, the SMTP and IMAP
    classifiers, Rocket.Chat's error mapping) returns one of these; a stage records it
    with :meth:`StageResult.fail_with`.
    """

    cls: FailureClass
    message: str
    hint: str | None = None
    field: str | None = None


@dataclass(slots=True, kw_only=True)
class Finding:
    """A warning: the inbox works (or would), but something should change.

    ``code`` is a stable identifier (``plaintext-credentials``, ``imap-cert-unverified``,
    ``low-max-retries``, ``slower-than-rocketchat``, ...).
    """

    code: str
    message: str
    hint: str | None = None
    field: str | None = None
    #: Exit code this warning gives under ``--strict``.
    strict_exit: ExitCode = ExitCode.TLS

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint, "field": self.field}


@dataclass(slots=True, kw_only=True)
class StepResult:
    """One timed step. ``address`` is set on connect steps (one per address tried)."""

    step: Step
    status: Status
    elapsed_ms: float
    detail: str | None = None
    address: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step.value,
            "status": self.status.value,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }
        if self.detail is not None:
            out["detail"] = self.detail
        if self.address is not None:
            out["address"] = self.address
        return out


@dataclass(slots=True, kw_only=True)
class StageResult:
    """One stage (a probe of one protocol, or a Rocket.Chat stage) of one inbox."""

    stage: Stage
    status: Status = Status.PASSED
    failure: FailureClass | None = None
    message: str | None = None
    hint: str | None = None
    field: str | None = None
    elapsed_ms: float = 0.0
    steps: list[StepResult] = dataclasses.field(default_factory=list)
    warnings: list[Finding] = dataclasses.field(default_factory=list)
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)

    def fail(
        self,
        failure: FailureClass,
        message: str,
        *,
        hint: str | None = None,
        field: str | None = None,
    ) -> StageResult:
        """Mark this stage failed (first failure wins) and return it."""
        if self.status is not Status.FAILED:
            self.status = Status.FAILED
            self.failure = failure
            self.message = message
            self.hint = hint
            self.field = field
        return self

    def fail_with(self, failure: Failure) -> StageResult:
        """:meth:`fail` with a classified :class:`Failure`."""
        return self.fail(failure.cls, failure.message, hint=failure.hint, field=failure.field)

    def warn(self, finding: Finding) -> None:
        """Record a warning; a passed stage becomes ``warning``."""
        self.warnings.append(finding)
        if self.status is Status.PASSED:
            self.status = Status.WARNING

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage.value,
            "status": self.status.value,
            "class": self.failure.value if self.failure else None,
            "message": self.message,
            "hint": self.hint,
            "field": self.field,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "steps": [s.to_json() for s in self.steps],
            "warnings": [w.to_json() for w in self.warnings],
            "facts": self.facts,
        }


@dataclass(frozen=True)
class RocketChatState:
    """What Rocket.Chat says of a stored inbox (``audit``)."""

    inbox_id: str
    active: bool
    created_at: str | None = None
    updated_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.inbox_id,
            "active": self.active,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True, kw_only=True)
class InboxResult:
    """Everything found for one inbox, stages in run order (smtp before imap).

    ``action`` and ``inbox_id`` are ``set``'s: what it did and the Rocket.Chat id
    (``None`` when nothing is stored or it is not known); ``check`` leaves them unset.
    ``rocketchat`` is ``audit``'s: the stored inbox's state, shown only when set.
    """

    name: str
    email: str
    file: str | None = None
    line: int | None = None
    stages: list[StageResult] = dataclasses.field(default_factory=list)
    warnings: list[Finding] = dataclasses.field(default_factory=list)
    action: Action | None = None
    inbox_id: str | None = None
    rocketchat: RocketChatState | None = None

    @classmethod
    def for_inbox(cls, inbox: Inbox) -> InboxResult:
        """An empty result named and placed like ``inbox``."""
        return cls(
            name=inbox.name, email=inbox.email, file=inbox.source.file, line=inbox.source.line
        )

    @property
    def extra(self) -> dict[str, Any]:
        """What ``set`` adds to the JSON: ``action`` and ``id`` (none for ``check``).

        An inbox not written (not started, or created with an unknown outcome) has no id.
        """
        out: dict[str, Any] = {}
        if self.rocketchat is not None:
            out["rocketchat"] = self.rocketchat.to_json()
        if self.action is None:
            return out
        return {**out, "action": self.action, "id": self.inbox_id}

    def status(self, *, strict: bool = False) -> Status:
        """Worst status over stages and input warnings."""
        statuses = [s.status for s in self.stages]
        if Status.FAILED in statuses:
            return Status.FAILED
        if Status.WARNING in statuses or self.warnings:
            return Status.FAILED if strict else Status.WARNING
        if statuses and all(s is Status.SKIPPED for s in statuses):
            return Status.SKIPPED
        return Status.PASSED

    def exit_code(self, *, strict: bool = False) -> ExitCode:
        """Exit code decided by the first failing stage (smtp before imap).

        Drift (exit 18) yields to every other failure and to ``--strict`` warnings.
        """
        drift = False
        for stage in self.stages:
            if stage.status is Status.FAILED and stage.failure is not None:
                code = stage.failure.exit_code
                if code is not ExitCode.DRIFT:
                    return code
                drift = True
        if strict:
            for finding in self.warnings:
                return finding.strict_exit
            for stage in self.stages:
                for finding in stage.warnings:
                    return finding.strict_exit
        return ExitCode.DRIFT if drift else ExitCode.OK

    def to_json(self, *, strict: bool = False) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "file": self.file,
            "line": self.line,
            "status": self.status(strict=strict).value,
            "warnings": [w.to_json() for w in self.warnings],
            "stages": [s.to_json() for s in self.stages],
            **self.extra,
        }


@dataclass(slots=True, kw_only=True)
class Report:
    """A whole run: every inbox in input order."""

    command: str
    inboxes: list[InboxResult] = dataclasses.field(default_factory=list)
    strict: bool = False
    elapsed_ms: float = 0.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def stopped_by(self) -> str | None:
        """The signal that stopped the run (``settings.stopped_by``: ``"SIGTERM"``), or ``None``."""
        value = self.settings.get("stopped_by")
        return value if isinstance(value, str) else None

    @property
    def exit_code(self) -> ExitCode:
        """The stopping signal's code, else the first failing inbox in input order decides;
        drift (18) only when nothing else failed."""
        if self.stopped_by is not None:
            return ExitCode[f"STOPPED_{self.stopped_by}"]
        drift = False
        for inbox in self.inboxes:
            code = inbox.exit_code(strict=self.strict)
            if code is ExitCode.DRIFT:
                drift = True
            elif code is not ExitCode.OK:
                return code
        return ExitCode.DRIFT if drift else ExitCode.OK

    @property
    def ok(self) -> bool:
        return self.exit_code is ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "ok": self.ok,
            "exit_code": int(self.exit_code),
            "strict": self.strict,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "settings": self.settings,
            "inboxes": [i.to_json(strict=self.strict) for i in self.inboxes],
        }
