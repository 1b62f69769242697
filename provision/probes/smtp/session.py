"""The SMTP stage's steps, in nodemailer's order, and the credential-free follow-up checks.

Failures are decided by :mod:`.classify`; a step that fails raises
:class:`~provision.probes.failure.ProbeFailed`, which :meth:`SmtpProbe.run` records.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from aiosmtplib import SMTPException, SMTPResponse, SMTPResponseException, SMTPStatus

from provision import tls
from provision.models import ProbeOptions, SmtpSettings
from provision.probes import _net
from provision.probes._ahead import Opening, connected
from provision.probes._certs import expiry_finding
from provision.probes._net import AddrInfo
from provision.probes._scrub import scrub_stage
from provision.probes._steps import Recorder, StepInfo, StepTimeout, early_mode_check_after
from provision.probes.failure import ProbeFailed
from provision.probes.smtp.classify import (
    Classifier,
    FollowUp,
    capability_lines,
    describe,
    first_line,
    follow_up,
    reply_text,
)
from provision.probes.smtp.connection import AUTHENTICATORS, NODEMAILER_MECHANISMS, Connection
from provision.probes.smtp.envelope_replies import envelope_failure
from provision.results import Failure, Stage, StageResult, Status, Step

__all__ = ["SmtpProbe", "nodemailer_hostname", "secret_forms"]

_T = TypeVar("_T")

_PLAN = {True: "implicit TLS", False: "plaintext, then STARTTLS if offered"}
# Exceptions that are outcomes, not bugs: our step caps, socket and TLS errors, and
# everything aiosmtplib raises for a reply or a lost connection.
_OUTCOMES = (StepTimeout, OSError, SMTPException)


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


@dataclass(slots=True)
class Diagnosis:
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
            return f"{self.greeting.code} {first_line(self.greeting.message)}".strip()
        return self.error or "no answer"


class SmtpProbe:
    """One run of the SMTP stage. Steps are methods; a failure ends it via ProbeFailed."""

    def __init__(
        self,
        settings: SmtpSettings,
        options: ProbeOptions,
        deadline: float,
        *,
        email: str | None = None,
        message: bytes | None = None,
        opening: Opening | None = None,
    ) -> None:
        self.cfg = settings
        #: The resolve and connect steps, when ``probe_inbox`` began them ahead.
        self.opening = opening
        #: The inbox address: sender and recipient of the envelope check (``--envelope``).
        self.email = email
        #: A message to send from ``email`` to itself (``--round-trip``); never by default.
        self.message = message
        #: Event-loop time at which the server accepted ``message`` (its DATA reply).
        self.sent_at: float | None = None
        self.options = options
        self.rec = (
            opening.rec
            if opening is not None
            else Recorder(stage=Stage.SMTP, deadline=deadline, step_timeout=options.step_timeout)
        )
        self.facts = self.rec.result.facts
        self.secrets = secret_forms(settings.username, settings.password.reveal())
        self.ehlo_name = options.ehlo_name or nodemailer_hostname()
        self.why = Classifier(settings, self.ehlo_name)
        self.address: AddrInfo | None = None
        self.conn: Connection | None = None
        self.early_check: asyncio.Future[Diagnosis] | None = None

    # -- the session ---------------------------------------------------------------

    async def run(self) -> StageResult:
        self.facts["plan"] = _PLAN[self.cfg.secure]
        self.facts["sni"] = None if _is_ip(self.cfg.server) else self.cfg.server
        self.facts["ehlo_name"] = self.ehlo_name
        # Reading the CA store takes ~15 ms: start it now, beside connect and EHLO.
        tls.warm_probe_context(self.options.ca_file, verify=self.options.smtp_verify)
        if not self.options.smtp_verify:
            self.rec.result.warn(self.why.finding("smtp-verify-off"))
        try:
            await self._session()
        except ProbeFailed as stop:
            self.rec.result.fail_with(stop.failure)
        finally:
            if self.early_check is not None:
                await _cancelled(self.early_check)
            if self.conn is not None:
                await self.conn.abort()
        scrub_stage(self.rec.result, *self.secrets)
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
        if self.email is not None and self.message is not None:
            await self._send(self.email, self.message)
        elif self.email is not None and self.options.envelope:
            await self._envelope(self.email)
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
            head = bytes(self.conn.protocol.head) if self.conn is not None else b""
            failure = self.why.classify(step, exc, head=head)
        then = follow_up(step, failure, secure=self.cfg.secure)
        raise ProbeFailed(await self._follow_up(then, failure))

    async def _connect(self) -> Connection:
        server, port = self.cfg.server, self.cfg.port
        sock, _ = await connected(self.opening, self.rec, server, port, prefix="smtp")
        try:
            peer = sock.getpeername()
        except OSError as exc:  # reset between connect() and now
            sock.close()
            raise ProbeFailed(self.why.dropped(Step.CONNECT, exc)) from None
        self.address = (socket.AddressFamily(sock.family), peer)
        self.facts["address"] = _net.format_address(peer)
        self.conn = self._new_connection(sock)
        return self.conn

    def _new_connection(self, sock: socket.socket) -> Connection:
        return Connection(
            sock,
            server=self.cfg.server,
            ehlo_name=self.ehlo_name,
            handshake_timeout=self.options.step_timeout + 1.0,
        )

    async def _context(self) -> ssl.SSLContext:
        return await tls.probe_context(self.options.ca_file, verify=self.options.smtp_verify)

    @property
    def _live(self) -> Connection:
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
        self.facts["greeting"] = info.detail = reply_text(reply)
        if reply.code != SMTPStatus.ready:
            # nodemailer: anything but 220 is "Invalid greeting from server".
            raise ProbeFailed(self.why.reply(Step.GREETING, reply.code, reply.message))

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
                raise ProbeFailed(self._implicit_tls_confirmed(diag))
            return await read
        finally:
            await _cancelled(read)

    async def _ehlo(self, info: StepInfo) -> None:
        info.detail = f"EHLO {self.ehlo_name}"
        reply = await self._live.smtp.ehlo(timeout=None)
        capabilities = capability_lines(reply.message)
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
        expiring = expiry_finding(
            facts,
            self.options,
            server=self.cfg.server,
            field="smtp.server",
            consequence="Rocket.Chat's sends fail as soon as it expires",
        )
        if expiring is not None:
            self.rec.result.warn(expiring)

    async def _auth(self) -> None:
        smtp = self._live.smtp
        encrypted = self._live.ssl_object is not None
        if not smtp.supports_extension("auth"):
            # nodemailer would send without authenticating (``allowsAuth`` is false).
            self._cannot_auth(self.why.auth_not_advertised(encrypted=encrypted))
        offered = [m.upper() for m in smtp.server_auth_methods]
        self.facts["auth_mechanisms"] = offered
        common = [m for m in NODEMAILER_MECHANISMS if m in offered]
        if not self.cfg.username or not self.cfg.password:
            self._cannot_auth(self.why.missing_credentials((common or ["PLAIN"])[0]))
        if not common:
            self._cannot_auth(self.why.no_common_mechanism(offered))
        self.why.mechanism = self.facts["auth_mechanism"] = common[0]
        if not encrypted:
            self.rec.result.warn(self.why.finding("plaintext-credentials"))
        await self._step(Step.AUTH, self._authenticate)

    def _cannot_auth(self, failure: Failure) -> NoReturn:
        """End before AUTH is sent: what the capabilities (or settings) rule out."""
        self.rec.skip(Step.AUTH, f"not attempted: {failure.cls.value}")
        raise ProbeFailed(failure)

    async def _authenticate(self, info: StepInfo) -> None:
        mechanism = self.why.mechanism
        assert mechanism is not None
        info.detail = f"AUTH {mechanism}"
        login = AUTHENTICATORS[mechanism]
        reply = await login(self._live.smtp, self.cfg.username, self.cfg.password.reveal())
        info.detail = f"AUTH {mechanism}: {reply_text(reply)}"

    # -- the envelope: may this login send as the inbox address? -----------------------

    async def _envelope(self, email: str) -> None:
        """``MAIL FROM`` and ``RCPT TO`` the inbox address, then ``RSET``: nothing is sent."""
        await self._envelope_command(Step.MAIL_FROM, email)
        await self._envelope_command(Step.RCPT_TO, email)
        await self._rset()
        self.facts.setdefault("notes", []).append(
            f"{self.cfg.username} may send as {email}, and {email} is a recipient "
            "(MAIL FROM and RCPT TO accepted; nothing was sent)"
        )

    async def _send(self, email: str, message: bytes) -> None:
        """The round trip's message: MAIL FROM and RCPT TO the inbox address, then DATA."""
        await self._envelope_command(Step.MAIL_FROM, email)
        await self._envelope_command(Step.RCPT_TO, email)
        await self._envelope_command(Step.DATA, email, message)
        self.sent_at = asyncio.get_running_loop().time()

    async def _envelope_command(self, step: Step, email: str, message: bytes = b"") -> None:
        """One command of the envelope; a refusal is classified by its code and text."""
        command = {Step.MAIL_FROM: "MAIL FROM", Step.RCPT_TO: "RCPT TO"}.get(step, "DATA")
        shown = f"{command}:<{email}>" if step is not Step.DATA else f"DATA ({len(message)} bytes)"

        async def body(info: StepInfo) -> None:
            smtp = self._live.smtp
            info.detail = shown
            try:
                if step is Step.MAIL_FROM:
                    reply = await smtp.mail(email, timeout=None)
                elif step is Step.RCPT_TO:
                    reply = await smtp.rcpt(email, timeout=None)
                else:
                    reply = await smtp.data(message, timeout=None)
            except SMTPResponseException as exc:
                if exc.code <= 0:
                    raise
                info.detail = f"{shown}: {exc.code} {first_line(exc.message)}"
                raise ProbeFailed(
                    envelope_failure(
                        command, exc.code, exc.message, email=email, username=self.cfg.username
                    )
                ) from None
            info.detail = f"{shown}: {reply_text(reply)}"

        await self._step(step, body)

    async def _rset(self) -> None:
        """RSET ends the envelope; a server that refuses it has still answered MAIL and RCPT."""
        try:
            async with self.rec.step(Step.RSET) as info:
                try:
                    info.detail = reply_text(await self._live.smtp.rset(timeout=None))
                except (SMTPException, OSError) as exc:
                    info.status = Status.WARNING
                    info.detail = f"no clean RSET ({describe(exc)}); QUIT ends the envelope"
        except StepTimeout:
            pass  # QUIT follows, and run() aborts the connection if that stalls too.

    async def _quit(self) -> None:
        """QUIT and close at once; the 221 is not awaited. Nothing here fails the stage.

        RFC 5321 §4.1.1.10 says the client SHOULD wait for the 221; the probe has
        nothing left to learn from it (every checked reply, and after DATA the 250,
        has been read), and every pipeline would pay its round trip.
        """
        try:
            async with self.rec.step(Step.QUIT) as info:
                if await self._live.quit_and_close():
                    info.detail = "QUIT sent; the reply is not awaited"
                else:
                    info.status = Status.WARNING
                    info.detail = "QUIT not sent: the server had closed the connection"
        except StepTimeout:
            pass  # Logged in already; run() aborts the connection.

    # -- follow-up checks on a second, credential-free connection --------------------

    async def _follow_up(self, then: FollowUp | None, failure: Failure) -> Failure:
        if then is FollowUp.CONFIRM_IMPLICIT_TLS:
            return await self._confirm_implicit_tls(failure)
        if then is FollowUp.CONFIRM_PLAINTEXT:
            return await self._confirm_plaintext(failure)
        if then is FollowUp.CERT_FACTS:
            return await self._cert_facts(failure)
        if then is FollowUp.HELO_FALLBACK:
            return await self._helo_fallback(failure)
        return failure

    async def _confirm_implicit_tls(self, failure: Failure) -> Failure:
        """Plaintext got no greeting: does the port answer a TLS handshake with 220?"""
        if self.early_check is not None:
            diag = await self.early_check
        else:
            diag = await self._diagnose(tls_first=True, starttls=False)
        self._record_mode_check("TLS handshake (verification off), then greeting", diag)
        if not diag.greeted:
            return failure
        return self._implicit_tls_confirmed(diag)

    def _implicit_tls_confirmed(self, diag: Diagnosis) -> Failure:
        self.facts["confirmed_mode"] = "implicit-tls"
        return self.why.implicit_tls_confirmed(diag.outcome())

    async def _confirm_plaintext(self, failure: Failure) -> Failure:
        """TLS failed as if the peer spoke plaintext: does it greet a plaintext client?"""
        diag = await self._diagnose(tls_first=False, starttls=False)
        self._record_mode_check("plaintext greeting and EHLO", diag)
        if not diag.greeted:
            return failure
        self.facts["confirmed_mode"] = "plaintext"
        return self.why.plaintext_confirmed(failure, diag.outcome(), starttls=diag.starttls)

    async def _cert_facts(self, failure: Failure) -> Failure:
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
        return self.why.certificate_names(failure, diag.tls.get("certificate", {}).get("names"))

    async def _helo_fallback(self, failure: Failure) -> Failure:
        """nodemailer answers a refused EHLO with HELO; without EHLO there is no AUTH."""
        smtp = self._live.smtp
        if not smtp.is_connected:
            return failure
        try:
            async with self.rec.step(Step.CAPABILITIES) as info:
                info.detail = f"HELO {self.ehlo_name} (fallback after EHLO was refused)"
                reply = await smtp.helo(timeout=None)
                info.detail = f"HELO accepted: {reply_text(reply)}"
        except _OUTCOMES as exc:
            self.facts["helo_fallback"] = f"refused too ({describe(exc)})"
            return failure
        self.facts["helo_fallback"] = reply_text(reply)
        return self.why.helo_accepted(failure)

    async def _diagnose(self, *, tls_first: bool, starttls: bool) -> Diagnosis:
        """A credential-free session on the same address, within one step cap.

        Args:
            tls_first: start with a TLS handshake (verification off, same SNI).
            starttls: after the greeting, EHLO and upgrade with STARTTLS if offered.
        """
        loop = asyncio.get_running_loop()
        diag = Diagnosis()
        if self.address is None or self.rec.remaining() <= 0:
            diag.error = "not checked: the overall deadline is spent"
            return diag
        rec = Recorder(
            stage=Stage.SMTP,
            deadline=min(self.rec.deadline, loop.time() + self.options.step_timeout),
            step_timeout=self.options.step_timeout,
        )
        context = await tls.probe_context(self.options.ca_file, verify=False)
        conn: Connection | None = None
        try:
            sock = await _net.connect(
                rec, [self.address], host=self.cfg.server, port=self.cfg.port, prefix="smtp"
            )
            conn = self._new_connection(sock)
            await _diagnostic_session(rec, conn, diag, context, tls_first, starttls)
        except (*_OUTCOMES, ProbeFailed) as exc:
            diag.error = describe(exc)
        finally:
            if conn is not None:
                await conn.abort()
        diag.steps = [s.to_json() for s in rec.result.steps]
        return diag

    def _record_mode_check(self, tried: str, diag: Diagnosis) -> None:
        self.facts["confirmed_mode"] = None
        self.facts["mode_check"] = {
            "tried": f"{tried}, no credentials sent",
            "outcome": diag.outcome(),
            "capabilities": diag.capabilities,
            "steps": diag.steps,
        }


async def _diagnostic_session(
    rec: Recorder,
    conn: Connection,
    diag: Diagnosis,
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
    diag.capabilities = capability_lines(reply.message)
    diag.starttls = conn.smtp.supports_extension("starttls")
    if starttls and diag.starttls:
        async with rec.step(Step.STARTTLS):
            await conn.starttls(context)
        diag.tls = tls.session_facts(conn.ssl_object)


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` unless it is done, and wait until it is."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
