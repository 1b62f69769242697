"""The IMAP stage's steps, as node-imap takes them, and the credential-free second looks.

Failures are decided by :mod:`.classify`, the certificate check is :mod:`.certificate`;
a step that fails raises :class:`~provision.probes.failure.ProbeFailed`, which
``probe_imap`` records.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioimaplib

from provision import tls
from provision.models import ImapSettings, ProbeOptions, Secret
from provision.probes import _net
from provision.probes._ahead import Opening, connected
from provision.probes._scrub import scrub
from provision.probes._steps import Recorder, StepTimeout, early_mode_check_after
from provision.probes.failure import ProbeFailed
from provision.probes.imap import second_look
from provision.probes.imap.certificate import CertificateCheck
from provision.probes.imap.classify import (
    COUNT_SINCE,
    RC_AUTH_TIMEOUT,
    RC_CONNECT_TIMEOUT,
    UNSENDABLE,
    capabilities_in,
    capability_code,
    closed_failure,
    exists_in,
    imap_date,
    import_notes,
    line_text,
    login_disabled,
    login_failure,
    plaintext_finding,
    read_only,
    response_code,
    search_failure,
    search_hits,
    select_failure,
    show_greeting,
    slow_finding,
    timeout_failure,
    unsendable_credentials,
)
from provision.probes.imap.connection import (
    Client,
    Greeting,
    ImapProtocol,
    settle,
    shutdown,
    wait_closed,
)
from provision.results import Failure, FailureClass, Step

__all__ = ["PLAN_PLAINTEXT", "PLAN_TLS", "ImapRun"]

#: The plan printed for ``imap.secure: true`` (spec §3.2).
PLAN_TLS = "implicit TLS, certificate not verified, no SNI (as node-imap)"
#: The plan printed for ``imap.secure: false`` (spec §3.2).
PLAN_PLAINTEXT = "plaintext, never STARTTLS (as node-imap)"


class ImapRun:
    """One probe of one inbox's IMAP settings; each method is one step."""

    def __init__(
        self,
        rec: Recorder,
        imap: ImapSettings,
        options: ProbeOptions,
        *,
        then: Callable[[ImapRun], Awaitable[None]] | None = None,
        opening: Opening | None = None,
    ) -> None:
        self.rec = rec
        #: The resolve and connect steps, when ``probe_inbox`` began them ahead.
        self.opening = opening
        #: More work in the selected INBOX before LOGOUT (the round trip's search and delete).
        self.then = then
        self.imap = imap
        self.options = options
        self.facts = rec.result.facts
        self.loop = asyncio.get_running_loop()
        self.client: Client | None = None
        self.sock: socket.socket | None = None
        self.peer: tuple[int, Any] | None = None
        #: The check of the session's certificate, made once its TLS handshake is done.
        self.certificate: CertificateCheck | None = None
        self.early_confirm: asyncio.Task[Greeting | None] | None = None
        self.auth_clock = 0.0

    # ---- flow

    async def run(self) -> None:
        imap = self.imap
        self.facts["plan"] = PLAN_TLS if imap.secure else PLAN_PLAINTEXT
        if not imap.secure:
            self.rec.result.warn(plaintext_finding(imap))
        else:  # for the certificate check; reading the CA store takes ~15 ms
            tls.warm_probe_context(self.options.ca_file)
        self.sock, started = await connected(
            self.opening, self.rec, imap.server, imap.port, prefix="imap"
        )
        try:
            self.peer = (self.sock.family, self.sock.getpeername())
        except OSError as exc:  # reset between accept and now
            self.sock.close()
            raise ProbeFailed(
                Failure(
                    FailureClass.RESET,
                    f"the connection was reset right after it was accepted ({exc.strerror})",
                    f"check imap.server and imap.port ({imap.port})",
                    "imap.port",
                )
            ) from None
        self.facts["address"] = _net.format_address(self.peer[1])
        try:
            await self._open()
            self._check_time("connect", self.loop.time() - started, RC_CONNECT_TIMEOUT)
            self.auth_clock = self.loop.time()
            greeting = await self._greeting()
            capabilities = await self._capabilities(greeting)
            if greeting.preauth:
                self.rec.skip(Step.AUTH, "PREAUTH: already authenticated, LOGIN not sent")
            else:
                await self._login(capabilities)
            await self._mailbox()
            if self.then is not None:
                await self.then(self)
            await self._quit()
        finally:
            if self.early_confirm is not None and not self.early_confirm.done():
                self.early_confirm.cancel()
                await asyncio.wait({self.early_confirm})
            await self._close()
            if self.certificate is not None:
                await self.certificate.finish()

    async def _open(self) -> None:
        """Start aioimaplib on our socket; the ``tls`` step when ``secure``."""
        assert self.sock is not None
        ctx = tls.imap_context() if self.imap.secure else None
        self.client = Client(self.sock, ctx)
        if ctx is None:
            await self.client.connected()
            return
        try:
            async with self.rec.step(Step.TLS) as info:
                await self.client.connected()
                ssl_object = self._transport().get_extra_info("ssl_object")
                facts = tls.session_facts(ssl_object, certificate=False)
                info.detail = (
                    f"{facts.get('version')} {facts.get('cipher')}, "
                    "certificate not verified, no SNI"
                )
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ProbeFailed(await second_look.tls_failure(self, exc)) from None
        self.facts["tls"] = facts
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        assert self.peer is not None
        self.certificate = CertificateCheck(self.rec, self.imap, self.options, self.peer, der)

    async def _greeting(self) -> Greeting:
        proto = self._proto()
        try:
            async with self.rec.step(Step.GREETING) as info:
                if self.imap.secure:
                    greeting = await proto.greeting
                else:
                    greeting = await self._greeting_or_implicit_tls(proto.greeting)
                info.detail = show_greeting(greeting, self.imap.password)
                if not greeting.ok:
                    raise _BadGreeting(greeting)
        except _BadGreeting as bad:
            raise ProbeFailed(await second_look.greeting_failure(self, bad.greeting)) from None
        except StepTimeout as exc:
            raise ProbeFailed(
                await second_look.greeting_timeout(self, exc, bytes(proto.buffer.data))
            ) from None
        self.facts["greeting"] = show_greeting(greeting, self.imap.password)
        if greeting.preauth:
            self.facts["preauth"] = True
        return greeting

    async def _greeting_or_implicit_tls(self, greeting: asyncio.Future[Greeting]) -> Greeting:
        """Wait for the greeting; after a silence, ask the same port in TLS meanwhile.

        A plaintext client on an implicit-TLS port waits forever (the server waits
        for a ClientHello). Whichever answers first decides; if the step cap ends
        the wait, the timeout's follow-up uses the check's answer.
        """
        done, _ = await asyncio.wait(
            {greeting}, timeout=early_mode_check_after(self.options.step_timeout)
        )
        if done:
            return greeting.result()
        check = asyncio.create_task(second_look.other_mode_greeting(self, secure=True))
        self.early_confirm = check
        pending: set[asyncio.Future[Any]] = {greeting, check}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if greeting.done():
            return greeting.result()
        confirm = check.result()
        if confirm is not None and confirm.kind == "line":
            raise ProbeFailed(
                second_look.mismatch(
                    self,
                    FailureClass.PLAINTEXT_ON_TLS_PORT,
                    "no greeting in plaintext, while a TLS client was greeted",
                    confirm,
                    in_tls=True,
                )
            )
        return await greeting

    async def _capabilities(self, greeting: Greeting) -> list[str]:
        """CAPABILITY, unless the greeting carried it (RFC 3501 §7.1 response code)."""
        caps = capability_code(line_text(greeting.data))
        try:
            async with self.rec.step(Step.CAPABILITIES) as info:
                if caps is None:
                    caps = await self._capability_command()
                    info.detail = "CAPABILITY"
                else:
                    info.detail = "from the greeting"
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None
        self.facts["capabilities"] = caps
        self.facts["idle"] = "IDLE" in caps
        return caps

    async def _login(self, capabilities: list[str]) -> None:
        """LOGIN with quoted user and password, as node-imap (never AUTHENTICATE)."""
        imap = self.imap
        if "LOGINDISABLED" in capabilities:
            # RFC 3501 §6.2.3: a client MUST NOT send LOGIN while LOGINDISABLED is
            # advertised; node-imap stops with "Logging in is disabled on this server".
            self.rec.skip(Step.AUTH, "LOGINDISABLED advertised: LOGIN not sent")
            raise ProbeFailed(login_disabled(imap))
        if UNSENDABLE.search(imap.username) or UNSENDABLE.search(imap.password.reveal()):
            self.rec.skip(Step.AUTH, "credentials contain CR, LF or NUL: LOGIN not sent")
            raise ProbeFailed(unsendable_credentials())
        command = aioimaplib.Command(
            "LOGIN",
            self._proto().new_tag(),
            aioimaplib.quoted(imap.username),
            aioimaplib.quoted(imap.password.reveal()),
            loop=self.loop,
        )
        try:
            async with self.rec.step(Step.AUTH) as info:
                response = await self._command(command, Step.AUTH, masked=imap.password)
                info.detail = f"{response.result} {self._reply(response)}"
                if response.result != "OK":
                    raise ProbeFailed(login_failure(response.result, response.lines, imap))
                self._proto().state = aioimaplib.AUTH
                self._check_time("auth", self.loop.time() - self.auth_clock, RC_AUTH_TIMEOUT)
                await self._after_login(response.lines)
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None

    async def _after_login(self, lines: Sequence[bytes]) -> None:
        """Post-login capabilities, as node-imap fetches them when LOGIN's reply lacks them."""
        caps = capabilities_in(lines)
        if caps is None:
            caps = await self._capability_command()
        self.facts["capabilities_after_login"] = caps
        self.facts["idle"] = "IDLE" in caps

    async def _mailbox(self) -> None:
        """``SELECT "INBOX"`` read-write, then Rocket.Chat's ``SEARCH UNSEEN SINCE`` (spec §3.2).

        Rocket.Chat searches ``SINCE _createdAt``; the probe gives that day when it is known
        (``audit``), else the epoch, so the one search checks node-imap's criteria and date
        form (day not zero-padded) and counts the unseen mail an operator asks about.
        """
        since = imap_date(self.options.unseen_since or COUNT_SINCE)
        try:
            async with self.rec.step(Step.MAILBOX) as info:
                select_command = self._new("SELECT", aioimaplib.quoted("INBOX"))
                search_command = self._search(since)
                self._pipeline(select_command, search_command)
                select = await self._answer(select_command, Step.MAILBOX)
                if select.result != "OK":
                    raise ProbeFailed(select_failure(select.result, select.lines, self.imap))
                if response_code(line_text(select.lines[-1])) == "READ-ONLY":
                    raise ProbeFailed(read_only(self._reply(select)))
                self._proto().state = aioimaplib.SELECTED
                exists = exists_in(select.lines)
                if exists is not None:
                    self.facts["exists"] = exists
                search = await self._answer(search_command, Step.MAILBOX)
                if search.result != "OK":
                    raise ProbeFailed(search_failure(search.result, self._reply(search), since))
                unseen = search_hits(search.lines)
                self.facts["unseen"] = unseen
                info.detail = (
                    f"INBOX read-write, {exists if exists is not None else '?'} messages, "
                    f"{unseen} unseen"
                )
                self.facts["notes"] = import_notes(
                    unseen, idle=self.facts.get("idle"), since=self.options.unseen_since
                )
        except StepTimeout as exc:
            raise ProbeFailed(self._timeout(exc)) from None

    def _search(self, since: str) -> Any:
        """node-imap's search: no CHARSET for ASCII criteria, day not zero-padded.

        From the epoch, every unseen message is a hit: where the server offers ESEARCH
        (RFC 4731) it answers with the count alone, so a mailbox with 200,000 unseen
        messages stays within the reply caps of :mod:`.connection`.
        """
        if "ESEARCH" not in self.capabilities:
            return self._new("SEARCH", "UNSEEN", "SINCE", since)
        return aioimaplib.Command(
            "SEARCH",
            self._proto().new_tag(),
            "RETURN",
            "(COUNT)",
            "UNSEEN",
            "SINCE",
            since,
            untagged_resp_name="ESEARCH",
            loop=self.loop,
        )

    async def _quit(self) -> None:
        """LOGOUT, and close at once: the server's BYE and OK are not awaited.

        RFC 3501 §6.1.3 has the server answer LOGOUT, then close. Nothing in that
        answer is checked (Rocket.Chat never logs out) and every pipeline would pay
        its round trip; the server reads LOGOUT before the end of the connection.
        """
        try:
            async with self.rec.step(Step.QUIT) as info:
                assert self.client is not None
                if self.client.write_and_close(str(self._new("LOGOUT"))):
                    info.detail = "LOGOUT sent; the reply is not awaited"
                else:
                    info.detail = "LOGOUT not sent: the server had closed the connection"
                if not await wait_closed(self._proto().closed):
                    info.detail = f"{info.detail}; the connection did not close"
        except StepTimeout:
            pass

    async def _close(self) -> None:
        """Close the connection and wait until it is gone (no ResourceWarning)."""
        if self.client is None:
            if self.sock is not None:
                self.sock.close()
            return
        if self._proto().transport is not None:
            await shutdown(self._transport(), self._proto().closed)
        elif self.sock is not None:
            await settle(self.sock)

    # ---- commands

    @property
    def capabilities(self) -> list[str]:
        """What the server offers now (after login, when it said so again)."""
        caps = self.facts.get("capabilities_after_login") or self.facts.get("capabilities")
        return list(caps or [])

    async def execute(self, step: Step, name: str, *args: str, uid: bool = False) -> Any:
        """One more command in the selected INBOX; its response (``result``, ``lines``).

        Raises:
            ProbeFailed: the connection closed or the reply could not be parsed.
        """
        untagged = "FETCH" if name == "STORE" else name
        command = aioimaplib.Command(
            name,
            self._proto().new_tag(),
            *args,
            prefix="UID" if uid else None,
            untagged_resp_name=untagged,
            loop=self.loop,
        )
        return await self._command(command, step)

    def reply(self, response: Any) -> str:
        """The tagged line of a response, scrubbed for showing."""
        return self._reply(response)

    def _proto(self) -> ImapProtocol:
        assert self.client is not None
        proto: ImapProtocol = self.client.protocol
        return proto

    def _transport(self) -> asyncio.Transport:
        transport: asyncio.Transport = self._proto().transport
        return transport

    def _new(self, name: str, *args: str) -> Any:
        return aioimaplib.Command(name, self._proto().new_tag(), *args, loop=self.loop)

    def _reply(self, response: Any) -> str:
        lines: list[bytes] = list(response.lines)
        return scrub(line_text(lines[-1]) if lines else "", self.imap.password)

    async def _command(self, command: Any, step: Step, *, masked: Secret | None = None) -> Any:
        """Send one command and wait for its tagged reply, or for the connection to end.

        Raises:
            ProbeFailed: the connection closed or the reply could not be parsed.
        """
        proto = self._proto()
        if proto.closed.done():
            raise ProbeFailed(closed_failure(step, self.imap, lines=[], error=proto.error))
        # aioimaplib masks ``scrub`` in its "Sending" debug line: give it the escaped
        # form that is actually on the wire.
        mask = aioimaplib.quoted(masked.reveal())[1:-1] if masked else None
        return await self._settled(command, proto.execute(command, scrub=mask), step)

    def _pipeline(self, select: Any, search: Any) -> None:
        """Send SELECT and SEARCH in one write: one round trip instead of two.

        RFC 3501 §5.5 allows it, and the server answers in order: SELECT's untagged
        data and tagged reply, then SEARCH's. aioimaplib would hold SEARCH back until
        SELECT (a synchronous command) is answered, so both are registered here as its
        ``execute`` registers them: SELECT as the pending synchronous command (which
        collects the untagged lines), SEARCH by its untagged name and matched by its
        tag. If SELECT fails or opens read-only, SEARCH's answer is left unused.
        """
        proto = self._proto()
        if proto.closed.done():
            raise ProbeFailed(closed_failure(Step.MAILBOX, self.imap, lines=[], error=proto.error))
        proto.pending_sync_command = select
        proto.pending_async_commands[search.untagged_resp_name] = search
        proto.send(f"{select}\r\n{search}")

    async def _answer(self, command: Any, step: Step) -> Any:
        """The reply of a command :meth:`_pipeline` sent, or ProbeFailed if the connection ends."""
        return await self._settled(command, _response(command), step)

    async def _settled(self, command: Any, reply: Awaitable[Any], step: Step) -> Any:
        """Wait for ``reply`` (``command``'s response) or for the connection to end first.

        Raises:
            ProbeFailed: the connection closed or the reply could not be parsed.
        """
        proto = self._proto()
        task = asyncio.ensure_future(reply)
        try:
            await asyncio.wait({task, proto.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            lines = [bytes(line) for line in command.response.lines]
            raise ProbeFailed(closed_failure(step, self.imap, lines=lines, error=proto.error))
        return task.result()

    async def _capability_command(self) -> list[str]:
        response = await self._command(self._new("CAPABILITY"), Step.CAPABILITIES)
        if response.result != "OK":
            raise ProbeFailed(
                Failure(
                    FailureClass.PROTOCOL_ERROR,
                    f"CAPABILITY refused: {response.result} {self._reply(response)}",
                    "the server does not behave like an IMAP server; check imap.port",
                    "imap.port",
                )
            )
        return capabilities_in(response.lines, untagged_bare=True) or []

    # ---- classification helpers bound to this run

    def _timeout(self, exc: StepTimeout) -> Failure:
        return timeout_failure(exc, self.imap)

    def _check_time(self, what: str, elapsed: float, limit: float) -> None:
        if elapsed > limit:
            self.rec.result.warn(slow_finding(what, elapsed, limit))


async def _response(command: Any) -> Any:
    """A sent command's response, once its tagged reply has come."""
    await command.wait()
    return command.response


class _BadGreeting(Exception):
    """The first line is not an IMAP greeting; classified after the step is recorded."""

    def __init__(self, greeting: Greeting) -> None:
        super().__init__(greeting.kind)
        self.greeting = greeting
