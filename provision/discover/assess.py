"""A credential-free look at each candidate, judged with Rocket.Chat's ``secure`` semantics.

Per candidate: resolve, connect, TLS (from the first byte, or by STARTTLS where
Rocket.Chat would use it), greeting, capabilities, then QUIT/LOGOUT. Nothing is
authenticated. The verdict follows spec §3 (rocketchat-email-inbox.md):

* SMTP (nodemailer): ``secure: true`` is TLS from the first byte; ``secure: false``
  upgrades with STARTTLS when offered. Certificates are verified either way, so an
  untrusted certificate makes the candidate unusable. AUTH must offer PLAIN, LOGIN or
  CRAM-MD5 (after TLS); without STARTTLS the password goes in clear (usable, insecure).
* IMAP (node-imap): ``secure: true`` is TLS from the first byte, certificate not
  checked (a bad one is noted); ``secure: false`` is plaintext and never STARTTLS, so a
  server that advertises ``LOGINDISABLED`` there is unusable, and one that does not
  takes the password in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from provision.discover.candidates import Candidate, Protocol, Transport
from provision.discover.dns import Resolver

__all__ = ["Assessment", "Verdict", "assess", "assess_all"]

#: Mechanisms nodemailer uses, in its order of preference (spec §3.1).
NODEMAILER_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

_MAX_LINES = 100  # a greeting or capability reply longer than this is not a mail server
_PARALLEL = 8


class Verdict(StrEnum):
    """Whether Rocket.Chat can use a candidate."""

    USABLE = "usable"
    INSECURE = "usable-insecure"  #: works, but the password travels in clear
    UNUSABLE = "unusable"


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """What the credential-free connection showed.

    Attributes:
        candidate: the candidate looked at.
        verdict: usable, usable but insecure, or unusable.
        secure: Rocket.Chat's ``secure`` value for this port, when usable.
        reason: why it is unusable or insecure (empty when simply usable).
        notes: other findings (an IMAP certificate Rocket.Chat would not check, a
            source that named the wrong TLS mode).
        speaks: how the port actually spoke.
        addresses: the addresses the host name resolved to.
        greeting: the server's first line.
        capabilities: EHLO keywords (SMTP, after TLS) or CAPABILITY atoms (IMAP).
        mechanisms: AUTH mechanisms offered.
        login_disabled: IMAP ``LOGINDISABLED`` was advertised.
        tls: negotiated version, cipher and certificate facts.
        elapsed_ms: time spent on the candidate.
    """

    candidate: Candidate
    verdict: Verdict
    secure: bool | None = None
    reason: str = ""
    notes: tuple[str, ...] = ()
    speaks: Transport | None = None
    addresses: tuple[str, ...] = ()
    greeting: str = ""
    capabilities: tuple[str, ...] = ()
    mechanisms: tuple[str, ...] = ()
    login_disabled: bool = False
    tls: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0

    @property
    def usable(self) -> bool:
        """Rocket.Chat can log in here (perhaps insecurely)."""
        return self.verdict is not Verdict.UNUSABLE


class _Stop(Exception):
    """End the assessment with this verdict."""

    def __init__(self, reason: str, *, tls_mismatch: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls_mismatch = tls_mismatch


async def assess_all(
    candidates: Sequence[Candidate],
    *,
    resolver: Resolver,
    ca_file: Path | None = None,
    ehlo_name: str | None = None,
) -> list[Assessment]:
    """Assess every candidate, a few at a time, results in candidate order."""
    gate = asyncio.Semaphore(_PARALLEL)

    async def one(candidate: Candidate) -> Assessment:
        async with gate:
            return await assess(candidate, resolver=resolver, ca_file=ca_file, ehlo_name=ehlo_name)

    return list(await asyncio.gather(*(one(c) for c in candidates)))


async def assess(
    candidate: Candidate,
    *,
    resolver: Resolver,
    ca_file: Path | None = None,
    ehlo_name: str | None = None,
) -> Assessment:
    """Look at one candidate without credentials. Never raises for network outcomes."""
    started = time.monotonic()
    found = await resolver.addresses(candidate.host)
    if not found.found:
        return Assessment(
            candidate=candidate,
            verdict=Verdict.UNUSABLE,
            reason=f"{candidate.host} does not resolve ({found.message or found.status})",
            elapsed_ms=_ms(started),
        )
    session = _Session(candidate, resolver, ca_file, ehlo_name or socket.gethostname())
    try:
        result = await session.run(found.records)
    except _Stop as stop:
        if stop.tls_mismatch and candidate.transport is Transport.TLS:
            # The source said TLS, the port speaks plaintext: judge it as plaintext.
            retry = await assess(
                replace(candidate, transport=Transport.STARTTLS),
                resolver=resolver,
                ca_file=ca_file,
                ehlo_name=ehlo_name,
            )
            return replace(
                retry,
                candidate=candidate,
                notes=(f"{stop.reason}; it speaks plaintext", *retry.notes),
                elapsed_ms=_ms(started),
            )
        result = session.assessment(Verdict.UNUSABLE, reason=stop.reason)
    finally:
        await session.close()
    return replace(result, addresses=found.records, elapsed_ms=_ms(started))


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


class _Session:
    """One credential-free connection and what it showed."""

    def __init__(
        self, candidate: Candidate, resolver: Resolver, ca_file: Path | None, ehlo_name: str
    ) -> None:
        self.candidate = candidate
        self.resolver = resolver
        self.ca_file = ca_file
        self.ehlo_name = ehlo_name
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.speaks: Transport | None = None
        self.greeting = ""
        self.capabilities: tuple[str, ...] = ()
        self.mechanisms: tuple[str, ...] = ()
        self.login_disabled = False
        self.tls: dict[str, Any] = {}
        self.notes: list[str] = []

    @property
    def where(self) -> str:
        return f"{self.candidate.host}:{self.candidate.port}"

    def assessment(
        self, verdict: Verdict, *, secure: bool | None = None, reason: str = ""
    ) -> Assessment:
        return Assessment(
            candidate=self.candidate,
            verdict=verdict,
            secure=secure,
            reason=reason,
            notes=tuple(self.notes),
            speaks=self.speaks,
            greeting=self.greeting,
            capabilities=self.capabilities,
            mechanisms=self.mechanisms,
            login_disabled=self.login_disabled,
            tls=self.tls,
        )

    def _cap(self) -> float:
        return max(0.0, min(self.resolver.step_timeout, self.resolver.deadline - time.monotonic()))

    async def run(self, addresses: Sequence[str]) -> Assessment:
        implicit = self.candidate.transport is Transport.TLS
        await self._connect(addresses, implicit=implicit)
        if self.candidate.protocol is Protocol.SMTP:
            return await self._smtp()
        return await self._imap()

    # -- connection -----------------------------------------------------------------

    async def _context(self, *, verify: bool) -> ssl.SSLContext:
        from provision.tls import imap_context, probe_context

        return await probe_context(self.ca_file) if verify else imap_context()

    async def _connect(self, addresses: Sequence[str], *, implicit: bool) -> None:
        context = await self._context(verify=True) if implicit else None
        failures: list[str] = []
        for address in addresses:
            try:
                await self._open(address, context)
            except ssl.SSLCertVerificationError as exc:
                if self.candidate.protocol is Protocol.SMTP:
                    raise _Stop(_cert_reason(exc, self.candidate.host)) from None
                # node-imap does not verify and sends no SNI: connect as it does.
                self.notes.append(
                    f"{_cert_reason(exc, self.candidate.host)} (Rocket.Chat does not check "
                    "IMAP certificates, but anyone on the path could read the password)"
                )
                await self._open(address, await self._context(verify=False), sni=False)
            except ssl.SSLError as exc:
                raise _Stop(
                    f"{self.where} did not answer TLS from the first byte ({exc.reason or exc})",
                    tls_mismatch=True,
                ) from None
            except TimeoutError:
                failures.append(f"{address}: no answer")
                continue
            except OSError as exc:
                failures.append(f"{address}: {exc.strerror or exc}")
                continue
            self.speaks = Transport.TLS if implicit else Transport.PLAIN
            return
        raise _Stop(f"cannot connect to {self.where} ({'; '.join(failures)})")

    async def _open(
        self, address: str, context: ssl.SSLContext | None, *, sni: bool = True
    ) -> None:
        async with asyncio.timeout(self._cap()):
            self.reader, self.writer = await asyncio.open_connection(
                address,
                self.candidate.port,
                ssl=context,
                server_hostname=(self.candidate.host if sni else None) if context else None,
            )
        self._tls_facts()

    def _tls_facts(self) -> None:
        from provision.tls import session_facts

        assert self.writer is not None
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls = session_facts(ssl_object)

    async def _starttls(self) -> None:
        assert self.writer is not None
        context = await self._context(verify=True)
        try:
            async with asyncio.timeout(self._cap()):
                await self.writer.start_tls(context, server_hostname=self.candidate.host)
        except ssl.SSLCertVerificationError as exc:
            raise _Stop(
                f"{_cert_reason(exc, self.candidate.host)} during STARTTLS: nodemailer "
                "upgrades whenever STARTTLS is offered and verifies the certificate"
            ) from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise _Stop(f"STARTTLS failed at {self.where} ({type(exc).__name__})") from None
        self.speaks = Transport.STARTTLS
        self._tls_facts()

    async def _line(self) -> str:
        assert self.reader is not None
        try:
            async with asyncio.timeout(self._cap()):
                raw = await self.reader.readline()
        except TimeoutError:
            hint = (
                "; the port may speak TLS from the first byte"
                if self.speaks is Transport.PLAIN
                else ""
            )
            raise _Stop(f"{self.where} sent nothing within the step cap{hint}") from None
        except (OSError, ValueError) as exc:  # ValueError: a line over the reader's limit
            raise _Stop(f"{self.where} broke the connection ({type(exc).__name__})") from None
        if not raw:
            raise _Stop(f"{self.where} closed the connection")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def _send(self, line: str) -> None:
        assert self.writer is not None
        self.writer.write(line.encode("ascii") + b"\r\n")
        try:
            async with asyncio.timeout(self._cap()):
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise _Stop(f"{self.where} broke the connection ({type(exc).__name__})") from None

    async def close(self) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)

    # -- SMTP -----------------------------------------------------------------------

    async def _smtp_reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        for _ in range(_MAX_LINES):
            line = await self._line()
            if len(line) < 3 or not line[:3].isdigit():
                raise _Stop(f"{self.where} does not speak SMTP ({line[:60]!r})")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines
        raise _Stop(f"{self.where} sent an endless reply")

    async def _ehlo(self) -> None:
        await self._send(f"EHLO {self.ehlo_name}")
        code, lines = await self._smtp_reply()
        if code != 250:
            raise _Stop(f"{self.where} refused EHLO ({code} {lines[0] if lines else ''})")
        self.capabilities = tuple(line.split(" ", 1)[0].upper() for line in lines[1:])
        mechanisms: list[str] = []
        for line in lines[1:]:
            words = line.replace("=", " ", 1).split()
            if words and words[0].upper() == "AUTH":
                mechanisms += [w.upper() for w in words[1:] if w.upper() not in mechanisms]
        self.mechanisms = tuple(mechanisms)

    async def _smtp(self) -> Assessment:
        code, lines = await self._smtp_reply()
        self.greeting = f"{code} {lines[0] if lines else ''}".strip()
        if code != 220:
            raise _Stop(f"{self.where} greets with {self.greeting!r}, not 220")
        await self._ehlo()
        if self.speaks is Transport.PLAIN and "STARTTLS" in self.capabilities:
            await self._send("STARTTLS")
            code, lines = await self._smtp_reply()
            if code != 220:
                raise _Stop(
                    f"{self.where} offers STARTTLS but refused it ({code}); nodemailer fails"
                )
            await self._starttls()
            await self._ehlo()
        with contextlib.suppress(_Stop):
            await self._send("QUIT")
            await self._smtp_reply()
        usable = [m for m in NODEMAILER_MECHANISMS if m in self.mechanisms]
        if not self.mechanisms:
            return self.assessment(
                Verdict.UNUSABLE,
                reason="no AUTH offered: Rocket.Chat would send without logging in "
                "(a submission server offers AUTH)",
            )
        if not usable:
            return self.assessment(
                Verdict.UNUSABLE,
                reason=f"AUTH offers {', '.join(self.mechanisms)}; Rocket.Chat (nodemailer) "
                "needs PLAIN, LOGIN or CRAM-MD5",
            )
        secure = self.speaks is Transport.TLS
        if self.speaks is Transport.PLAIN:
            return self.assessment(
                Verdict.INSECURE,
                secure=False,
                reason="no TLS at all: the password would travel in clear",
            )
        return self.assessment(Verdict.USABLE, secure=secure)

    # -- IMAP -----------------------------------------------------------------------

    def _imap_capabilities(self, text: str) -> None:
        atoms = tuple(a.upper() for a in text.split())
        self.capabilities = atoms
        self.mechanisms = tuple(a[5:] for a in atoms if a.startswith("AUTH="))
        self.login_disabled = "LOGINDISABLED" in atoms

    async def _imap(self) -> Assessment:
        self.greeting = await self._line()
        upper = self.greeting.upper()
        if upper.startswith("* BYE"):
            raise _Stop(f"{self.where} refuses connections ({self.greeting[:80]!r})")
        if not upper.startswith("* OK"):
            raise _Stop(f"{self.where} does not speak IMAP ({self.greeting[:60]!r})")
        await self._send("a1 CAPABILITY")
        for _ in range(_MAX_LINES):
            line = await self._line()
            if line.upper().startswith("* CAPABILITY "):
                self._imap_capabilities(line[len("* CAPABILITY ") :])
            elif line.startswith("a1 "):
                break
        else:
            raise _Stop(f"{self.where} sent an endless reply")
        if not line.upper().startswith("A1 OK"):
            raise _Stop(f"{self.where} refused CAPABILITY ({line[:80]!r})")
        with contextlib.suppress(_Stop):
            await self._send("a2 LOGOUT")
            for _ in range(_MAX_LINES):
                if (await self._line()).startswith("a2 "):
                    break
        if self.speaks is Transport.TLS:
            if self.login_disabled:
                return self.assessment(
                    Verdict.UNUSABLE, reason="LOGINDISABLED even over TLS: LOGIN is refused"
                )
            return self.assessment(Verdict.USABLE, secure=True)
        if self.login_disabled:
            return self.assessment(
                Verdict.UNUSABLE,
                reason="plaintext with LOGINDISABLED: the server takes logins only after "
                "STARTTLS, which Rocket.Chat never sends for IMAP (secure: false is "
                "plaintext); use the server's TLS port (usually 993, secure: true)",
            )
        starttls = (
            " (it offers STARTTLS, which Rocket.Chat never uses)"
            if ("STARTTLS" in self.capabilities)
            else ""
        )
        return self.assessment(
            Verdict.INSECURE,
            secure=False,
            reason=f"plaintext: the password would travel in clear{starttls}",
        )


def _cert_reason(exc: ssl.SSLCertVerificationError, host: str) -> str:
    return f"certificate of {host} rejected ({exc.verify_message or exc.reason})"
