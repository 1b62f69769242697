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
* MAIL, RCPT and DATA are never sent.

Failures are classified in one place (:meth:`_SmtpProbe._classify` and the reply-code
table :meth:`_SmtpProbe._classify_reply`) from exception types, reply codes and
capabilities, following probe-anchors.md §3. On a TLS-mode mismatch or a certificate
failure a second, credential-free connection finds out what the port really speaks or
fetches the certificate facts. Server text is scrubbed of the password (and of its
base64 AUTH forms) before it reaches the result.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPException,
    SMTPResponse,
    SMTPResponseException,
    SMTPStatus,
)
from aiosmtplib.protocol import SMTPProtocol

from provision import tls
from provision.models import Inbox, ProbeOptions, SmtpSettings
from provision.probes import _net
from provision.probes._net import AddrInfo, ConnectFailure
from provision.probes._providers import provider_hint
from provision.probes._scrub import scrub
from provision.probes._steps import Recorder, StepInfo, StepTimeout, early_mode_check_after
from provision.results import FailureClass, Finding, Stage, StageResult, Status, Step

__all__ = ["NODEMAILER_MECHANISMS", "nodemailer_hostname", "probe_smtp", "secret_forms"]

#: SASL mechanisms nodemailer can use with a user name and password, in its order of
#: preference (``_actionEHLO`` fills ``_supportedAuth`` in this order, ``login()``
#: takes the first).
NODEMAILER_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

_EXPIRY_WARNING_DAYS = 14
_HEAD_BYTES = 512  # first bytes kept to tell TLS, POP3, IMAP or HTTP from SMTP
_CLOSE_WAIT = 1.0  # seconds to wait for a connection to close before aborting it
_F = FailureClass
_T = TypeVar("_T")

_PLAN = {True: "implicit TLS", False: "plaintext, then STARTTLS if offered"}
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")  # TLS alert / handshake record headers
_OTHER_SERVICES = (
    (b"+OK", "a POP3 server"),
    (b"* OK", "an IMAP server"),
    (b"* PREAUTH", "an IMAP server"),
    (b"* BYE", "an IMAP server"),
    (b"HTTP/", "an HTTP server"),
    (b"SSH-", "an SSH server"),
)
# Exceptions that are outcomes, not bugs: our step caps, socket and TLS errors, and
# everything aiosmtplib raises for a reply or a lost connection.
_OUTCOMES = (StepTimeout, OSError, SMTPException)


async def probe_smtp(inbox: Inbox, options: ProbeOptions, *, deadline: float) -> StageResult:
    """Log in to ``inbox.smtp`` the way Rocket.Chat would, and report every step.

    Args:
        inbox: the inbox whose ``smtp`` settings are probed.
        options: step cap, CA file, EHLO name and verification switch.
        deadline: event-loop time (``loop.time()``) by which the whole run must end.

    Returns:
        The ``smtp`` stage: passed, passed with warnings, or failed with a
        :class:`~provision.results.FailureClass`, message, hint and field. Network,
        protocol and authentication outcomes never raise.
    """
    return await _SmtpProbe(inbox.smtp, options, deadline).run()


def nodemailer_hostname() -> str:
    """The EHLO name nodemailer sends by default (``SMTPConnection._getHostname``).

    The machine's host name if it contains a dot, an IPv4 host name in brackets,
    otherwise the literal ``[127.0.0.1]``.
    """
    name = socket.gethostname()
    if "." not in name:
        return "[127.0.0.1]"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        return f"[{name}]"
    return name


def secret_forms(username: str, password: str) -> tuple[str, ...]:
    """The password as it may come back in server text: raw and as AUTH payloads.

    AUTH PLAIN sends ``base64("\\0user\\0pass")`` (nodemailer leaves the authorization
    identity empty), AUTH LOGIN sends ``base64("pass")``; a server that echoes the
    command line would otherwise leak them.
    """
    if not password:
        return ()
    user, secret = username.encode(), password.encode()
    payloads = (secret, b"\0" + user + b"\0" + secret, user + b"\0" + secret)
    return (password, *(base64.b64encode(p).decode("ascii") for p in payloads))


class _FollowUp(enum.Enum):
    """A credential-free check that refines a failure before it is reported."""

    CONFIRM_IMPLICIT_TLS = "confirm-implicit-tls"
    CONFIRM_PLAINTEXT = "confirm-plaintext"
    CERT_FACTS = "cert-facts"
    HELO_FALLBACK = "helo-fallback"


@dataclass(slots=True)
class _Failure:
    failure: FailureClass
    message: str
    hint: str
    field: str | None
    then: _FollowUp | None = None


class _Stop(Exception):
    """Ends the session with a classified failure."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _TrackedSocket(socket.socket):
    """A socket that tells when it has been closed, by us or by its transport.

    Waiting for this rather than for the protocol's ``connection_lost`` also covers a
    failed STARTTLS handshake, after which asyncio closes the connection without
    telling the application protocol. Waiting at all is what keeps "unclosed
    transport" ResourceWarnings away: a TLS transport closes only after the peer's
    close_notify, possibly after ``asyncio.run`` has already returned.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.setblocking(False)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def close(self) -> None:
        super().close()
        if not self.closed.done():
            self.closed.set_result(None)


class _ProbeProtocol(SMTPProtocol):
    """aiosmtplib's protocol, also keeping the first bytes received for diagnosis."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.head = bytearray()

    def data_received(self, data: bytes) -> None:
        if len(self.head) < _HEAD_BYTES:
            self.head += data[: _HEAD_BYTES - len(self.head)]
        super().data_received(data)


class _Connection:
    """One SMTP connection on a socket from :func:`_net.connect`, driven step by step.

    aiosmtplib's ``SMTP.connect`` folds the TLS handshake and the greeting into one
    call; here the transport is made by hand so that each gets its own step, then the
    ``SMTP`` client is attached for EHLO, STARTTLS, AUTH and QUIT. aiosmtplib's own
    timeouts are off (``None``): the :class:`Recorder` caps every step with the smaller
    of the step cap and the time left before the deadline. Only the TLS handshake
    timeouts are set, a second above the step cap, so that the step's cap decides.
    """

    def __init__(
        self, sock: socket.socket, *, server: str, ehlo_name: str, handshake_timeout: float
    ) -> None:
        self.sock = _TrackedSocket(sock)
        self.protocol = _ProbeProtocol(asyncio.get_running_loop())
        self.smtp = SMTP(hostname=server, local_hostname=ehlo_name, timeout=None, start_tls=False)
        self._server = server
        self._handshake_timeout = handshake_timeout
        self._transports: list[asyncio.Transport] = []

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The live TLS session, if the connection is encrypted."""
        transport = self.smtp.transport
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        return obj if isinstance(obj, ssl.SSLObject) else None

    async def wrap(self, context: ssl.SSLContext | None) -> None:
        """Make the transport: plaintext, or TLS from the first byte with ``context``.

        ``server_hostname`` is ``smtp.server`` as Node does; Python sends no SNI for an
        IP literal and then checks the IP address against the certificate.
        """
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {}
        if context is not None:
            options = {
                "ssl": context,
                "server_hostname": self._server,
                # Above the step cap, so that the step's own timeout decides.
                "ssl_handshake_timeout": self._handshake_timeout,
                "ssl_shutdown_timeout": self._handshake_timeout,
            }
        transport, _ = await loop.create_connection(
            lambda: self.protocol, sock=self.sock, **options
        )
        self._transports.append(transport)
        self.smtp.protocol = self.protocol
        self.smtp.transport = transport
        self.smtp.loop = loop

    async def read_greeting(self) -> SMTPResponse:
        """Wait for the server's first reply (the step's cap bounds the wait)."""
        return await self.protocol.read_response(timeout=None)

    async def starttls(self, context: ssl.SSLContext) -> SMTPResponse:
        """Send STARTTLS and upgrade (RFC 3207); aiosmtplib then forgets the EHLO state."""
        reply = await self.smtp.starttls(
            server_hostname=self._server, tls_context=context, timeout=self._handshake_timeout
        )
        if isinstance(self.smtp.transport, asyncio.Transport):
            self._transports.append(self.smtp.transport)
        return reply

    async def close(self, *, graceful: bool, wait: float = _CLOSE_WAIT) -> None:
        """Close (or abort) the connection and wait until its socket is really closed."""
        if self.sock.closed.done():
            return
        if not self._transports:
            self.sock.close()
            return
        top = self._transports[-1]
        if graceful:
            top.close()
        else:
            top.abort()
        if not await self._closed_within(wait):
            for transport in reversed(self._transports):
                transport.abort()
            await self._closed_within(wait)

    async def _closed_within(self, seconds: float) -> bool:
        done, _ = await asyncio.wait([self.sock.closed], timeout=seconds)
        return bool(done)


@dataclass(slots=True)
class _Diagnosis:
    """What a credential-free diagnostic connection saw."""

    greeting: SMTPResponse | None = None
    capabilities: list[str] = field(default_factory=list)
    starttls: bool = False
    tls: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def greeted(self) -> bool:
        return self.greeting is not None and self.greeting.code == SMTPStatus.ready

    def outcome(self) -> str:
        if self.greeting is not None:
            return f"{self.greeting.code} {_first_line(self.greeting.message)}".strip()
        return self.error or "no answer"


class _SmtpProbe:
    """One run of the SMTP stage. Steps are methods; failures end it via :class:`_Stop`."""

    def __init__(self, settings: SmtpSettings, options: ProbeOptions, deadline: float) -> None:
        self.cfg = settings
        self.options = options
        self.rec = Recorder(stage=Stage.SMTP, deadline=deadline, step_timeout=options.step_timeout)
        self.facts = self.rec.result.facts
        self.secrets = secret_forms(settings.username, settings.password.reveal())
        self.ehlo_name = options.ehlo_name or nodemailer_hostname()
        self.address: AddrInfo | None = None
        self.conn: _Connection | None = None
        self.mechanism: str | None = None
        self.early_check: asyncio.Future[_Diagnosis] | None = None

    # -- the session ---------------------------------------------------------------

    async def run(self) -> StageResult:
        self.facts["plan"] = _PLAN[self.cfg.secure]
        self.facts["sni"] = None if _is_ip(self.cfg.server) else self.cfg.server
        self.facts["ehlo_name"] = self.ehlo_name
        # Reading the CA store takes ~15 ms: start it now, beside connect and EHLO.
        tls.warm_probe_context(self.options.ca_file, verify=self.options.smtp_verify)
        if not self.options.smtp_verify:
            self.rec.result.warn(
                Finding(
                    code="smtp-verify-off",
                    message="SMTP certificate verification is turned off for this probe; "
                    "Rocket.Chat always verifies, so a bad certificate would still break sending",
                    hint="drop --smtp-no-verify once the certificate is fixed",
                    field="smtp.server",
                )
            )
        try:
            await self._session()
        except _Stop as stop:
            f = stop.failure
            self.rec.result.fail(f.failure, f.message, hint=f.hint, field=f.field)
        finally:
            if self.early_check is not None:
                await _cancelled(self.early_check)
            if self.conn is not None:
                await self.conn.close(graceful=False)
        _scrub_stage(self.rec.result, self.secrets)
        return self.rec.finish()

    async def _session(self) -> None:
        conn = await self._connect()
        if self.cfg.secure:
            await self._step(Step.TLS, self._implicit_tls)
        else:
            await conn.wrap(None)
        await self._step(Step.GREETING, self._greeting)
        await self._step(Step.CAPABILITIES, self._ehlo)
        if not self.cfg.secure:
            await self._maybe_starttls()
        await self._auth()
        await self._quit()

    async def _step(
        self,
        step: Step,
        body: Callable[[StepInfo], Awaitable[_T]],
    ) -> _T:
        """Run one recorded step; classify what goes wrong and run its follow-up check."""
        try:
            async with self.rec.step(step) as info:
                return await body(info)
        except _OUTCOMES as exc:
            failure = self._classify(step, exc)
        raise _Stop(await self._follow_up(failure))

    async def _connect(self) -> _Connection:
        server, port = self.cfg.server, self.cfg.port
        try:
            addresses = await _net.resolve(self.rec, server, port, prefix="smtp")
            sock = await _net.connect(self.rec, addresses, host=server, port=port, prefix="smtp")
        except ConnectFailure as exc:
            raise _Stop(_Failure(exc.failure, exc.message, exc.hint, exc.field)) from None
        try:
            peer = sock.getpeername()
        except OSError as exc:  # reset between connect() and now
            sock.close()
            raise _Stop(self._dropped(Step.CONNECT, exc)) from None
        self.address = (socket.AddressFamily(sock.family), peer)
        self.facts["address"] = _format_address(peer)
        self.conn = self._new_connection(sock)
        return self.conn

    def _new_connection(self, sock: socket.socket) -> _Connection:
        return _Connection(
            sock,
            server=self.cfg.server,
            ehlo_name=self.ehlo_name,
            handshake_timeout=self.options.step_timeout + 1.0,
        )

    async def _context(self) -> ssl.SSLContext:
        return await tls.probe_context(self.options.ca_file, verify=self.options.smtp_verify)

    @property
    def _live(self) -> _Connection:
        assert self.conn is not None, "no connection yet"
        return self.conn

    async def _implicit_tls(self, info: StepInfo) -> None:
        info.detail = self._handshake_detail()
        await self._live.wrap(await self._context())
        self._record_tls(info)

    async def _greeting(self, info: StepInfo) -> None:
        if self.cfg.secure:
            reply = await self._live.read_greeting()
        else:
            reply = await self._greeting_or_implicit_tls()
        self.facts["greeting"] = info.detail = _reply_text(reply)
        if reply.code != SMTPStatus.ready:
            # nodemailer: anything but 220 is "Invalid greeting from server".
            raise _Stop(self._classify_reply(Step.GREETING, reply.code, reply.message))

    async def _greeting_or_implicit_tls(self) -> SMTPResponse:
        """Wait for the greeting; after a silence, ask the same port in TLS meanwhile.

        Whichever answers first decides: the greeting (the server is only slow), or
        a TLS session that greets with 220 (the port speaks TLS from the first byte).
        If the step cap ends the wait first, the check goes on and the follow-up of
        the greeting timeout uses its answer (see :meth:`_confirm_implicit_tls`).
        """
        read = asyncio.ensure_future(self._live.read_greeting())
        try:
            done, _ = await asyncio.wait(
                {read}, timeout=early_mode_check_after(self.options.step_timeout)
            )
            if done:
                return read.result()
            check = self.early_check = asyncio.ensure_future(
                self._diagnose(tls_first=True, starttls=False)
            )
            await asyncio.wait({read, check}, return_when=asyncio.FIRST_COMPLETED)
            if read.done():
                await _cancelled(check)
                return read.result()
            diag = check.result()
            if diag.greeted:
                self._record_mode_check("TLS handshake (verification off), then greeting", diag)
                raise _Stop(self._implicit_tls_confirmed(diag))
            return await read
        finally:
            await _cancelled(read)

    async def _ehlo(self, info: StepInfo) -> None:
        info.detail = f"EHLO {self.ehlo_name}"
        reply = await self._live.smtp.ehlo(timeout=None)
        capabilities = _capability_lines(reply.message)
        self.facts["capabilities"] = capabilities
        info.detail = ", ".join(capabilities) or "no extensions"

    async def _maybe_starttls(self) -> None:
        if not self._live.smtp.supports_extension("starttls"):
            self.rec.skip(Step.STARTTLS, "not offered by the server: the session stays plaintext")
            return
        self.facts["capabilities_before_starttls"] = self.facts.pop("capabilities", [])
        await self._step(Step.STARTTLS, self._starttls)
        # RFC 3207 §4.2: forget what EHLO said before TLS and ask again.
        await self._step(Step.CAPABILITIES, self._ehlo)

    async def _starttls(self, info: StepInfo) -> None:
        info.detail = "STARTTLS, then " + self._handshake_detail()
        await self._live.starttls(await self._context())
        self._record_tls(info)

    def _handshake_detail(self) -> str:
        checked = "verified" if self.options.smtp_verify else "NOT verified"
        return f"TLS handshake, certificate {checked} for {self.cfg.server}"

    def _record_tls(self, info: StepInfo) -> None:
        facts = tls.session_facts(self._live.ssl_object)
        facts["verified"] = self.options.smtp_verify
        self.facts["tls"] = facts
        info.detail = " ".join(str(facts[k]) for k in ("version", "cipher") if k in facts)
        days = facts.get("certificate", {}).get("days_left")
        if days is not None and days < _EXPIRY_WARNING_DAYS:
            self.rec.result.warn(
                Finding(
                    code="cert-expiring",
                    message=f"the certificate of {self.cfg.server} expires in {days} days "
                    f"({facts['certificate']['not_after']})",
                    hint="renew it: Rocket.Chat's sends fail as soon as it expires",
                    field="smtp.server",
                )
            )

    async def _auth(self) -> None:
        smtp = self._live.smtp
        if not smtp.supports_extension("auth"):
            # nodemailer would send without authenticating (``allowsAuth`` is false).
            self._cannot_auth(self._auth_not_advertised())
        offered = [m.upper() for m in smtp.server_auth_methods]
        self.facts["auth_mechanisms"] = offered
        common = [m for m in NODEMAILER_MECHANISMS if m in offered]
        if not self.cfg.username or not self.cfg.password:
            self._cannot_auth(self._missing_credentials((common or ["PLAIN"])[0]))
        if not common:
            self._cannot_auth(self._no_common_mechanism(offered))
        self.mechanism = self.facts["auth_mechanism"] = common[0]
        if self._live.ssl_object is None:
            self._warn_plaintext_credentials()
        await self._step(Step.AUTH, self._authenticate)

    def _cannot_auth(self, failure: _Failure) -> NoReturn:
        """End before AUTH is sent: what the capabilities (or settings) rule out."""
        self.rec.skip(Step.AUTH, f"not attempted: {failure.failure.value}")
        raise _Stop(failure)

    async def _authenticate(self, info: StepInfo) -> None:
        assert self.mechanism is not None
        info.detail = f"AUTH {self.mechanism}"
        login = _AUTHENTICATORS[self.mechanism]
        reply = await login(self._live.smtp, self.cfg.username, self.cfg.password.reveal())
        info.detail = f"AUTH {self.mechanism}: {_reply_text(reply)}"

    async def _quit(self) -> None:
        """QUIT, then wait for the connection to close. A failure here fails nothing."""
        conn = self._live
        try:
            async with self.rec.step(Step.QUIT) as info:
                try:
                    info.detail = _reply_text(await conn.smtp.quit(timeout=None))
                except (SMTPException, OSError) as exc:
                    info.status = Status.WARNING
                    info.detail = f"no clean QUIT ({_describe(exc)}); connection closed anyway"
                await conn.close(graceful=True)
        except StepTimeout:
            pass  # Logged in already; run() aborts the connection.

    def _warn_plaintext_credentials(self) -> None:
        self.rec.result.warn(
            Finding(
                code="plaintext-credentials",
                message="smtp.secure is false and the server offers no STARTTLS: the password "
                "crosses the network in clear text, exactly as Rocket.Chat would send it",
                hint="use port 465 with smtp.secure: true, or enable STARTTLS on the server",
                field="smtp.secure",
            )
        )

    # -- classification (probe-anchors.md §3) -----------------------------------------

    def _classify(self, step: Step, exc: BaseException) -> _Failure:
        """Map an exception raised during ``step`` to a failure, by type and reply code."""
        if isinstance(exc, StepTimeout) and exc.deadline:
            return _Failure(
                _F.DEADLINE,
                f"the overall deadline ran out during the {step.value} step",
                "raise the overall --timeout, or probe fewer inboxes at once",
                None,
            )
        if step is Step.GREETING:
            return self._bad_greeting(exc)
        if isinstance(exc, StepTimeout):
            return self._step_timeout(step, exc)
        if isinstance(exc, SMTPResponseException) and exc.code > 0:
            return self._classify_reply(step, exc.code, exc.message)
        if step in (Step.TLS, Step.STARTTLS):
            found = tls.classify_tls_error(exc, server=self.cfg.server)
            if found is not None:
                return self._tls_failure(step, found)
        if isinstance(exc, SMTPResponseException):  # code -1: not an SMTP reply at all
            return _Failure(
                _F.PROTOCOL_ERROR,
                f"the server's answer at the {step.value} step is not SMTP: {exc.message}",
                f"check smtp.server and smtp.port: {self._where} does not speak SMTP",
                "smtp.port",
            )
        return self._dropped(step, exc)

    def _classify_reply(self, step: Step, code: int, text: str) -> _Failure:
        """Map an SMTP reply code at ``step`` to a failure (RFC 5321 §4.2, RFC 4954 §6)."""
        reply = f"{code} {_one_line(text)}"
        if step is Step.AUTH:
            return self._auth_reply(code, reply)
        if 400 <= code < 500:  # 421 included: the server closes the session
            if step is Step.STARTTLS and code == SMTPStatus.tls_not_available:
                return self._starttls_refused(reply)
            return _Failure(
                _F.TRANSIENT,
                f"the server refused the {step.value} step for now: {reply}",
                "temporary (too many connections, greylisting or maintenance): retry later",
                "smtp.server",
            )
        if step is Step.GREETING and 500 <= code < 600:
            return _Failure(
                _F.REJECTED_AT_GREETING,
                f"the server refused the connection in its greeting: {reply}",
                "the server refuses clients from this address (block list or access policy); "
                "check with the mail provider, or probe from the Rocket.Chat host's network",
                "smtp.server",
            )
        if step is Step.CAPABILITIES and 500 <= code < 600:
            return _Failure(
                _F.EHLO_REFUSED,
                f"the server refused EHLO {self.ehlo_name}: {reply}",
                "the server rejects the client's name (container host names are not FQDNs); "
                "pass a fully-qualified name with --ehlo-name, and give the Rocket.Chat host "
                "a resolvable FQDN (nodemailer sends its host name)",
                None,
                then=_FollowUp.HELO_FALLBACK,
            )
        if step is Step.STARTTLS and 500 <= code < 600:
            return self._starttls_refused(reply)
        return _Failure(
            _F.PROTOCOL_ERROR,
            f"unexpected reply at the {step.value} step: {reply}",
            f"check smtp.server and smtp.port: {self._where} does not speak SMTP",
            "smtp.port",
        )

    def _auth_reply(self, code: int, reply: str) -> _Failure:
        """The answer to the one AUTH attempt; provider patterns first (Gmail, M365)."""
        mech = self.mechanism or "PLAIN"
        known = provider_hint(protocol="smtp", host=self.cfg.server, reply=reply)
        if known is not None:
            return _Failure(known.failure, f"AUTH {mech} refused: {reply}", known.hint, known.field)
        if "too many" in reply.lower():
            return _Failure(
                _F.THROTTLED,
                f"AUTH {mech} refused: {reply}",
                "the account or this address is rate-limited after failed logins: wait before "
                "retrying, check smtp.password, and do not retry in a loop",
                "smtp.password",
            )
        if code in (SMTPStatus.access_denied, 538):
            # 530 5.7.0 "Must issue a STARTTLS command first", 538 5.7.11 (RFC 4954 §6).
            return _Failure(
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
            return _Failure(
                _F.NO_COMMON_MECHANISM,
                f"the server refused AUTH {mech} although it advertised it: {reply}",
                "enable PLAIN or LOGIN for this account on the server; Rocket.Chat "
                "(nodemailer) can only use PLAIN, LOGIN or CRAM-MD5",
                "smtp.server",
            )
        if 400 <= code < 500:
            return _Failure(
                _F.TRANSIENT,
                f"temporary authentication failure: {reply}",
                "the server's authentication backend is unavailable; retry later",
                "smtp.server",
            )
        if 500 <= code < 600:
            return _Failure(
                _F.AUTH_FAILED,
                f"the server rejected the credentials: {reply}",
                f"check smtp.username ({self._username_advice()}) and smtp.password; the probe "
                "made one attempt, as Rocket.Chat does, to avoid lock-outs",
                "smtp.password",
            )
        return _Failure(
            _F.PROTOCOL_ERROR,
            f"unexpected reply during AUTH {mech}: {reply}",
            "the server does not follow the AUTH exchange (RFC 4954); check smtp.server",
            "smtp.server",
        )

    def _bad_greeting(self, exc: BaseException) -> _Failure:
        """No usable greeting: tell silence, TLS bytes, another protocol and garbage apart."""
        head = bytes(self._live.protocol.head)
        for prefix, service in _OTHER_SERVICES:
            if head.startswith(prefix):
                return _Failure(
                    _F.WRONG_SERVICE,
                    f"{service} answered on {self._where}, not SMTP: {_printable(head)}",
                    "smtp.port points at another service; SMTP submission is usually 587 "
                    "(smtp.secure: false) or 465 (smtp.secure: true)",
                    "smtp.port",
                )
        timed_out = isinstance(exc, StepTimeout)
        probe_tls = None if self.cfg.secure else _FollowUp.CONFIRM_IMPLICIT_TLS
        if head.startswith(_TLS_RECORDS) and not self.cfg.secure:
            return _Failure(
                _F.PLAINTEXT_ON_TLS_PORT,
                f"{self._where} answered the plaintext connection with TLS data",
                f"port {self.cfg.port} expects TLS from the first byte: set smtp.secure: true",
                "smtp.secure",
                then=probe_tls,
            )
        if not head and timed_out:
            return _Failure(
                _F.SLOW_GREETING,
                f"no greeting from {self._where} within {_cap(exc):.1f} s",
                "the server delays its banner (greet pause, tarpit) or is not an SMTP server: "
                "raise --step-timeout, and check smtp.server and smtp.port",
                "smtp.port",
                then=probe_tls,
            )
        if not head:
            return _Failure(
                _F.RESET,
                f"{self._where} closed the connection before sending a greeting",
                "the server refuses this client (access list, connection limit) or is not an "
                "SMTP server; check smtp.server and smtp.port",
                "smtp.port",
                then=probe_tls,
            )
        if timed_out:
            what = f"sent {len(head)} bytes but never ended its greeting line"
        elif isinstance(exc, SMTPResponseException):
            what = "sent a greeting that is not SMTP"
        else:
            what = "closed the connection in the middle of its greeting"
        return _Failure(
            _F.PROTOCOL_ERROR,
            f"{self._where} {what}: {_printable(head)}",
            "this is not an SMTP server (or a broken one); check smtp.server and smtp.port",
            "smtp.port",
        )

    def _step_timeout(self, step: Step, exc: StepTimeout) -> _Failure:
        if step is Step.AUTH:
            # Exchange Online answers a refused AUTH with silence (windmill PR #10620):
            # a timeout exactly here is about credentials, not the network.
            known = provider_hint(protocol="smtp", host=self.cfg.server, reply="", timed_out=True)
            message = f"no answer to AUTH {self.mechanism} within {exc.cap:.1f} s"
            if known is not None:
                return _Failure(known.failure, message, known.hint, known.field)
            return _Failure(
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
        return _Failure(
            _F.TIMEOUT, f"{what} from {self._where} within {exc.cap:.1f} s", hint, field
        )

    def _dropped(self, step: Step, exc: BaseException) -> _Failure:
        """The server closed or reset the connection (or it broke) during ``step``."""
        detail = _describe(exc)
        if step is Step.AUTH:
            return _Failure(
                _F.PROTOCOL_ERROR,
                f"the server closed the connection in answer to AUTH {self.mechanism} ({detail})",
                "servers drop the connection on refused credentials or by policy (too many "
                "failures, blocked client): check smtp.username and smtp.password, then the "
                "server's log",
                "smtp.password",
            )
        if step is Step.CONNECT:
            return _Failure(
                _F.RESET,
                f"{self._where} reset the connection right after accepting it ({detail})",
                "the server or a middlebox refuses this client; check smtp.server and smtp.port",
                "smtp.port",
            )
        if step in (Step.TLS, Step.STARTTLS):
            return _Failure(
                _F.RESET,
                f"the server closed the connection during the {step.value} handshake ({detail})",
                "the server or a middlebox refused the TLS handshake (SNI, client certificate, "
                "TLS policy); check smtp.port and smtp.secure",
                "smtp.port" if step is Step.TLS else "smtp.server",
            )
        return _Failure(
            _F.PROTOCOL_ERROR,
            f"the server closed the connection at the {step.value} step ({detail})",
            "the server refuses this client after its greeting (policy, EHLO name); check "
            "--ehlo-name and the server's log",
            "smtp.server",
        )

    def _tls_failure(self, step: Step, found: tls.TlsFailure) -> _Failure:
        cls = found.failure
        if cls is _F.TLS_ON_PLAINTEXT_PORT and step is Step.STARTTLS:
            return _Failure(
                _F.TLS_ERROR,
                f"the server accepted STARTTLS, then did not speak TLS ({found.message})",
                "the server's STARTTLS is broken: fix it, or use port 465 with smtp.secure: true",
                "smtp.server",
            )
        if cls is _F.TLS_ON_PLAINTEXT_PORT:
            return _Failure(
                cls,
                f"{self._where} does not speak TLS from the first byte ({found.message})",
                f"port {self.cfg.port} starts in plaintext: set smtp.secure: false, or use "
                "port 465 with smtp.secure: true",
                "smtp.secure",
                then=_FollowUp.CONFIRM_PLAINTEXT,
            )
        if cls is _F.RESET:
            return self._dropped(step, ConnectionResetError(found.message))
        hints = {
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
        then = _FollowUp.CERT_FACTS if cls.value.startswith("cert-") else None
        hint = hints.get(cls, "check the server's TLS configuration")
        return _Failure(cls, found.message, hint, "smtp.server", then=then)

    def _auth_not_advertised(self) -> _Failure:
        if self._live.ssl_object is None:
            return _Failure(
                _F.AUTH_NOT_ADVERTISED,
                f"{self._where} advertises no AUTH on this plaintext session and offers no "
                "STARTTLS: Rocket.Chat would send without authenticating",
                "servers usually offer AUTH only over TLS: use port 465 with smtp.secure: true, "
                "or 587 (STARTTLS) with smtp.secure: false; port 25 is for server-to-server mail",
                "smtp.port",
            )
        return _Failure(
            _F.AUTH_NOT_ADVERTISED,
            f"{self._where} advertises no AUTH even over TLS: Rocket.Chat would send without "
            "authenticating",
            "this port takes no authenticated submissions (an MX port?); use the submission "
            "port 587 (smtp.secure: false) or 465 (smtp.secure: true)",
            "smtp.port",
        )

    def _missing_credentials(self, mechanism: str) -> _Failure:
        field = "smtp.username" if not self.cfg.username else "smtp.password"
        return _Failure(
            _F.AUTH_FAILED,
            f'Missing credentials for "{mechanism}" (nodemailer\'s error: the server requires '
            f"AUTH and {field} is empty)",
            "set both smtp.username and smtp.password",
            field,
        )

    def _no_common_mechanism(self, offered: list[str]) -> _Failure:
        return _Failure(
            _F.NO_COMMON_MECHANISM,
            f"the server offers AUTH {' '.join(offered) or '(none)'}; Rocket.Chat (nodemailer) "
            f"can only use {', '.join(NODEMAILER_MECHANISMS)}",
            "enable PLAIN or LOGIN on the server for this port; Rocket.Chat has no OAuth2 for SMTP",
            "smtp.server",
        )

    def _starttls_refused(self, reply: str) -> _Failure:
        return _Failure(
            _F.STARTTLS_REFUSED,
            f"the server advertised STARTTLS but refused it: {reply}",
            "Rocket.Chat fails the same way (nodemailer does not fall back to plaintext): fix "
            "the server's TLS setup, or use port 465 with smtp.secure: true",
            "smtp.secure",
        )

    def _username_advice(self) -> str:
        if "@" in self.cfg.username:
            return "some servers want only the local part, not the full address"
        return "most providers want the full email address, not the local part"

    @property
    def _where(self) -> str:
        return f"{self.cfg.server}:{self.cfg.port}"

    # -- follow-up checks on a second, credential-free connection --------------------

    async def _follow_up(self, failure: _Failure) -> _Failure:
        if failure.then is _FollowUp.CONFIRM_IMPLICIT_TLS:
            return await self._confirm_implicit_tls(failure)
        if failure.then is _FollowUp.CONFIRM_PLAINTEXT:
            return await self._confirm_plaintext(failure)
        if failure.then is _FollowUp.CERT_FACTS:
            return await self._cert_facts(failure)
        if failure.then is _FollowUp.HELO_FALLBACK:
            return await self._helo_fallback(failure)
        return failure

    async def _confirm_implicit_tls(self, failure: _Failure) -> _Failure:
        """Plaintext got no greeting: does the port answer a TLS handshake with 220?"""
        if self.early_check is not None:
            diag = await self.early_check
        else:
            diag = await self._diagnose(tls_first=True, starttls=False)
        self._record_mode_check("TLS handshake (verification off), then greeting", diag)
        if not diag.greeted:
            return failure
        return self._implicit_tls_confirmed(diag)

    def _implicit_tls_confirmed(self, diag: _Diagnosis) -> _Failure:
        self.facts["confirmed_mode"] = "implicit-tls"
        return _Failure(
            _F.PLAINTEXT_ON_TLS_PORT,
            f"{self._where} speaks TLS from the first byte; a plaintext client gets no greeting "
            f"(with TLS it answered {diag.outcome()})",
            f"port {self.cfg.port} speaks TLS from the first byte: set smtp.secure: true",
            "smtp.secure",
        )

    async def _confirm_plaintext(self, failure: _Failure) -> _Failure:
        """TLS failed as if the peer spoke plaintext: does it greet a plaintext client?"""
        diag = await self._diagnose(tls_first=False, starttls=False)
        self._record_mode_check("plaintext greeting and EHLO", diag)
        if not diag.greeted:
            return failure
        self.facts["confirmed_mode"] = "plaintext"
        port = self.cfg.port
        if diag.starttls:
            hint = (
                f"port {port} speaks plaintext first (STARTTLS): set smtp.secure: false "
                "(Rocket.Chat then upgrades with STARTTLS)"
            )
        else:
            hint = (
                f"port {port} speaks plaintext and offers no STARTTLS: smtp.secure: false would "
                "send the password in clear; prefer port 465 with smtp.secure: true"
            )
        message = f"{failure.message}; in plaintext it answered {diag.outcome()}"
        return _Failure(failure.failure, message, hint, "smtp.secure")

    async def _cert_facts(self, failure: _Failure) -> _Failure:
        """Fetch the rejected certificate on a second handshake without verification."""
        diag = await self._diagnose(tls_first=self.cfg.secure, starttls=not self.cfg.secure)
        if diag.tls:
            self.facts["tls"] = {
                **diag.tls,
                "verified": False,
                "fetched_by": "a second handshake without verification (no credentials sent)",
            }
        else:
            self.facts["tls"] = {"verified": False, "fetch_error": diag.error}
        names = diag.tls.get("certificate", {}).get("names")
        if failure.failure is _F.CERT_HOSTNAME and names:
            failure.hint = (
                f"the certificate covers {', '.join(names)}: use one of these as smtp.server, "
                "or have the certificate reissued for it"
            )
        return failure

    async def _helo_fallback(self, failure: _Failure) -> _Failure:
        """nodemailer answers a refused EHLO with HELO; without EHLO there is no AUTH."""
        smtp = self._live.smtp
        if not smtp.is_connected:
            return failure
        try:
            async with self.rec.step(Step.CAPABILITIES) as info:
                info.detail = f"HELO {self.ehlo_name} (fallback after EHLO was refused)"
                reply = await smtp.helo(timeout=None)
                info.detail = f"HELO accepted: {_reply_text(reply)}"
        except _OUTCOMES as exc:
            self.facts["helo_fallback"] = f"refused too ({_describe(exc)})"
            return failure
        self.facts["helo_fallback"] = _reply_text(reply)
        failure.message += "; HELO was accepted, but without EHLO there is no AUTH"
        return failure

    async def _diagnose(self, *, tls_first: bool, starttls: bool) -> _Diagnosis:
        """A credential-free session on the same address, within one step cap.

        Args:
            tls_first: start with a TLS handshake (verification off, same SNI).
            starttls: after the greeting, EHLO and upgrade with STARTTLS if offered.
        """
        loop = asyncio.get_running_loop()
        diag = _Diagnosis()
        if self.address is None or self.rec.remaining() <= 0:
            diag.error = "not checked: the overall deadline is spent"
            return diag
        rec = Recorder(
            stage=Stage.SMTP,
            deadline=min(self.rec.deadline, loop.time() + self.options.step_timeout),
            step_timeout=self.options.step_timeout,
        )
        context = await tls.probe_context(self.options.ca_file, verify=False)
        conn: _Connection | None = None
        try:
            sock = await _net.connect(
                rec, [self.address], host=self.cfg.server, port=self.cfg.port, prefix="smtp"
            )
            conn = self._new_connection(sock)
            await self._diagnostic_session(rec, conn, diag, context, tls_first, starttls)
        except (*_OUTCOMES, ConnectFailure) as exc:
            diag.error = _describe(exc)
        finally:
            if conn is not None:
                await conn.close(graceful=False)
        diag.steps = [s.to_json() for s in rec.result.steps]
        return diag

    @staticmethod
    async def _diagnostic_session(
        rec: Recorder,
        conn: _Connection,
        diag: _Diagnosis,
        context: ssl.SSLContext,
        tls_first: bool,
        starttls: bool,
    ) -> None:
        if tls_first:
            async with rec.step(Step.TLS):
                await conn.wrap(context)
            diag.tls = tls.session_facts(conn.ssl_object)
        else:
            await conn.wrap(None)
        async with rec.step(Step.GREETING):
            diag.greeting = await conn.read_greeting()
        if not diag.greeted or tls_first:
            return
        async with rec.step(Step.CAPABILITIES):
            reply = await conn.smtp.ehlo(timeout=None)
        diag.capabilities = _capability_lines(reply.message)
        diag.starttls = conn.smtp.supports_extension("starttls")
        if starttls and diag.starttls:
            async with rec.step(Step.STARTTLS):
                await conn.starttls(context)
            diag.tls = tls.session_facts(conn.ssl_object)

    def _record_mode_check(self, tried: str, diag: _Diagnosis) -> None:
        self.facts["confirmed_mode"] = None
        self.facts["mode_check"] = {
            "tried": f"{tried}, no credentials sent",
            "outcome": diag.outcome(),
            "capabilities": diag.capabilities,
            "steps": diag.steps,
        }


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` unless it is done, and wait until it is."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})


async def _auth_plain(smtp: SMTP, username: str, password: str) -> SMTPResponse:
    """``AUTH PLAIN base64("\\0user\\0pass")``, as nodemailer sends it."""
    return await smtp.auth_plain(username, password, timeout=None)


async def _auth_login(smtp: SMTP, username: str, password: str) -> SMTPResponse:
    """nodemailer's LOGIN: ``AUTH LOGIN`` alone, then user and password, each after a 334.

    aiosmtplib's ``auth_login`` puts the user name on the AUTH line (initial response);
    nodemailer does not, and a few servers treat the two forms differently.
    """
    reply = await smtp.execute_command(b"AUTH", b"LOGIN", timeout=None)
    for answer in (username, password):
        if reply.code != SMTPStatus.auth_continue:
            raise SMTPAuthenticationError(reply.code, reply.message)
        reply = await smtp.execute_command(base64.b64encode(answer.encode()), timeout=None)
    if reply.code != SMTPStatus.auth_successful:
        raise SMTPAuthenticationError(reply.code, reply.message)
    return reply


async def _auth_crammd5(smtp: SMTP, username: str, password: str) -> SMTPResponse:
    """``AUTH CRAM-MD5``: the HMAC-MD5 of the server's challenge, keyed by the password."""
    return await smtp.auth_crammd5(username, password, timeout=None)


_AUTHENTICATORS: dict[str, Callable[[SMTP, str, str], Awaitable[SMTPResponse]]] = {
    "PLAIN": _auth_plain,
    "LOGIN": _auth_login,
    "CRAM-MD5": _auth_crammd5,
}


def _capability_lines(ehlo_message: str) -> list[str]:
    """EHLO keywords with their parameters; the first line is the server's name."""
    return [line.strip() for line in ehlo_message.split("\n")[1:] if line.strip()]


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.split("\n") if part.strip())


def _reply_text(reply: SMTPResponse) -> str:
    return f"{reply.code} {_first_line(reply.message)}".strip()


def _printable(data: bytes, limit: int = 80) -> str:
    """Bytes as readable text: the first line, non-printables escaped, shortened."""
    line = data.split(b"\n", 1)[0][:limit]
    text = line.decode("ascii", "backslashreplace").rstrip("\r")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return repr(text + ("..." if len(data) > len(line) + 2 else ""))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectFailure):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cap(exc: BaseException) -> float:
    return exc.cap if isinstance(exc, StepTimeout) else 0.0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _format_address(sockaddr: tuple[Any, ...]) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _scrub_stage(result: StageResult, secrets: tuple[str, ...]) -> None:
    """Mask the password (and its AUTH forms) in everything the result will show."""
    if result.message is not None:
        result.message = scrub(result.message, *secrets)
    for step in result.steps:
        if step.detail is not None:
            step.detail = scrub(step.detail, *secrets)
    for finding in result.warnings:
        finding.message = scrub(finding.message, *secrets)
    scrubbed = _scrub_json(result.facts, secrets)
    result.facts.clear()
    result.facts.update(scrubbed)


def _scrub_json(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return scrub(value, *secrets)
    if isinstance(value, list):
        return [_scrub_json(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_json(v, secrets) for k, v in value.items()}
    return value
