"""Scripted SMTP servers that each get one thing wrong (aiosmtplib's ``tests/smtpd.py`` idea).

A :class:`Script` says what the server sends first and how it answers each command verb;
everything else answers like a minimal submission server. Sentinels make misbehaviour
deterministic without sleeping (more in :mod:`tests.servers.faults`: resets, floods,
trickles, per-call replies, a working STARTTLS): :data:`SILENT` waits on an event that
is only set when the server closes (the client's short step cap decides), :data:`DROP`
closes at once, :data:`BROKEN_TLS` answers ``220`` to STARTTLS and then garbage to the
ClientHello, and :class:`Delayed` sends its bytes only when released (a banner later than
any cap).

The server records every command it receives in ``commands`` (AUTH reduced to
``AUTH <mechanism>``, never the credentials).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from dataclasses import dataclass, field
from typing import Final

from tests.servers import faults
from tests.servers.faults import DROP, SILENT, Connection, PerCall, Sentinel

#: Answer STARTTLS with 220, wait for the ClientHello, answer it with plaintext garbage.
BROKEN_TLS: Final = Sentinel("BROKEN_TLS")


@dataclass(frozen=True)
class Delayed:
    """Bytes sent only once the server is released (at close): later than any cap."""

    data: bytes


Reply = faults.Reply | Delayed

EHLO_AUTH = b"250-scripted.test\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n"
EHLO_STARTTLS = b"250-scripted.test\r\n250-STARTTLS\r\n250 HELP\r\n"
EHLO_BARE = b"250-scripted.test\r\n250-8BITMIME\r\n250 HELP\r\n"

#: Answers of a minimal well-behaved submission server (PLAIN and LOGIN, no STARTTLS).
DEFAULT_REPLIES: dict[str, Reply] = {
    "EHLO": EHLO_AUTH,
    "HELO": b"250 scripted.test\r\n",
    "AUTH": b"235 2.7.0 Authentication successful\r\n",
    "STARTTLS": b"454 4.7.0 TLS not available\r\n",
    "NOOP": b"250 OK\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}

GREETING = b"220 scripted.test ESMTP ready\r\n"


@dataclass(frozen=True)
class Script:
    """How a scripted server behaves.

    Attributes:
        greeting: bytes sent on connect (may lack a line end), or a sentinel.
        replies: per verb, bytes (``{args}`` is the raw argument, ``{decoded}`` its last
            word base64-decoded), a fault, or a :class:`~tests.servers.faults.PerCall`;
            unlisted verbs get :data:`DEFAULT_REPLIES`.
        close_after_greeting: close right after the greeting.
    """

    greeting: Reply = GREETING
    replies: dict[str, Reply | PerCall] = field(default_factory=dict)
    close_after_greeting: bool = False


def _auth(reply: bytes) -> dict[str, Reply]:
    return {"AUTH": reply}


#: The catalogue used by the tests; each name says what goes wrong.
SCRIPTS: dict[str, Script] = {
    "healthy": Script(),
    "silent-banner": Script(greeting=SILENT),
    "slow-banner": Script(greeting=Delayed(GREETING)),
    "banner-never-ends": Script(greeting=b"220-scripted.test " + b"x" * 3000),
    "banner-flood": Script(greeting=b"220-" + b"x" * 40_000),
    "tls-alert-banner": Script(greeting=b"\x15\x03\x01\x00\x02\x02\x46", close_after_greeting=True),
    "closes-at-once": Script(greeting=DROP),
    "garbage-banner": Script(greeting=b"hello there, friend\r\n"),
    "pop3-banner": Script(greeting=b"+OK Dovecot ready.\r\n"),
    "imap-banner": Script(greeting=b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"),
    "http-banner": Script(greeting=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
    "554-banner": Script(
        greeting=b"554 5.7.1 Service unavailable; client blocked using zen.spamhaus.org\r\n",
        close_after_greeting=True,
    ),
    "421-banner": Script(
        greeting=b"421 4.3.2 Too many connections, try again later\r\n",
        close_after_greeting=True,
    ),
    "ehlo-refused": Script(
        replies={"EHLO": b"501 5.5.4 Invalid EHLO/HELO domain\r\n", "HELO": b"250 ok\r\n"}
    ),
    "ehlo-and-helo-refused": Script(
        replies={
            "EHLO": b"501 5.5.4 Invalid EHLO/HELO domain\r\n",
            "HELO": b"501 5.5.4 Invalid EHLO/HELO domain\r\n",
        }
    ),
    "ehlo-421": Script(replies={"EHLO": b"421 4.7.0 Try again later, closing connection\r\n"}),
    "ehlo-silent": Script(replies={"EHLO": SILENT}),
    "starttls-refused": Script(
        replies={"EHLO": EHLO_STARTTLS, "STARTTLS": b"454 4.7.0 TLS not available\r\n"}
    ),
    "starttls-broken": Script(replies={"EHLO": EHLO_STARTTLS, "STARTTLS": BROKEN_TLS}),
    "starttls-drop": Script(replies={"EHLO": EHLO_STARTTLS, "STARTTLS": DROP}),
    "no-auth": Script(replies={"EHLO": EHLO_BARE}),
    "530-at-auth": Script(replies=_auth(b"530 5.7.0 Must issue a STARTTLS command first\r\n")),
    "only-oauth-mechanisms": Script(
        replies={"EHLO": b"250-scripted.test\r\n250-AUTH XOAUTH2 GSSAPI\r\n250 HELP\r\n"}
    ),
    "504-at-auth": Script(replies=_auth(b"504 5.5.4 Unrecognized authentication type\r\n")),
    "534-gmail": Script(
        replies=_auth(
            b"534-5.7.9 Application-specific password required. Learn more at\r\n"
            b"534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor\r\n"
        )
    ),
    "535-m365": Script(
        replies=_auth(
            b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
            b"for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.\r\n"
        )
    ),
    # Exchange Online's other 5.7.139 reasons and its final answer (probe-anchors.md §7).
    "535-m365-mailbox": Script(
        replies=_auth(
            b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
            b"for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.\r\n"
        )
    ),
    "535-m365-criteria": Script(
        replies=_auth(
            b"535 5.7.139 Authentication unsuccessful, the request did not meet the criteria "
            b"to be authenticated successfully. Contact your administrator.\r\n"
        )
    ),
    "535-m365-basic-auth": Script(
        replies=_auth(
            b"535 5.7.139 Authentication unsuccessful, basic authentication is disabled.\r\n"
        )
    ),
    "535-m365-security-defaults": Script(
        replies=_auth(
            b"535 5.7.139 Authentication unsuccessful, user is locked by your organization's "
            b"security defaults policy. Contact your administrator.\r\n"
        )
    ),
    "535-m365-wrong-password": Script(
        replies=_auth(
            b"535 5.7.139 Authentication unsuccessful, the user credentials were incorrect.\r\n"
        )
    ),
    "535-m365-5.7.3": Script(replies=_auth(b"535 5.7.3 Authentication unsuccessful\r\n")),
    "550-m365-basic-auth-retired": Script(
        replies=_auth(
            b"550 5.7.30 Basic authentication is not supported for Client Submission.\r\n"
        )
    ),
    "535": Script(replies=_auth(b"535 5.7.8 Authentication credentials invalid\r\n")),
    "535-echoes-credentials": Script(
        replies=_auth(b"535 5.7.8 Authentication failed for {args} ({decoded})\r\n")
    ),
    "454-too-many": Script(replies=_auth(b"454 4.7.0 Too many login attempts, slow down\r\n")),
    "454-temporary": Script(replies=_auth(b"454 4.7.0 Temporary authentication failure\r\n")),
    "drop-at-auth": Script(replies={"AUTH": DROP}),
    "silence-at-auth": Script(replies={"AUTH": SILENT}),
    "garbage-at-auth": Script(replies=_auth(b"what do you mean?\r\n")),
    "quit-silent": Script(replies={"QUIT": SILENT}),
}


@dataclass(eq=False)
class ScriptedSmtpServer(faults.ScriptedServer):
    """A listening scripted server; use :func:`start_scripted_server`."""

    script: Script
    port: int = 0
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def verbs(self) -> list[str]:
        """The command verbs received, in order."""
        return [c.split(" ", 1)[0] for c in self.commands]

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.script
        conn = Connection(reader, writer, self._release)
        if not await self._send(conn, script.greeting, b""):
            return
        if script.close_after_greeting:
            return
        calls: dict[str, int] = {}
        while True:
            line = await reader.readline()
            if not line:
                return
            verb_bytes, _, args = line.rstrip(b"\r\n").partition(b" ")
            verb = verb_bytes.decode("ascii", "replace").upper()
            shown = args.split(b" ", 1)[0] if verb == "AUTH" else args
            self.commands.append(f"{verb} {shown.decode('ascii', 'replace')}".strip())
            default = DEFAULT_REPLIES.get(verb, b"502 5.5.2 Command not recognized\r\n")
            reply = script.replies.get(verb, default)
            if isinstance(reply, PerCall):
                reply = reply.nth(calls.get(verb, 0))
            calls[verb] = calls.get(verb, 0) + 1
            if not await self._send(conn, reply, args) or verb == "QUIT":
                return

    async def _send(self, conn: Connection, reply: Reply, args: bytes) -> bool:
        """Send one scripted reply; ``False`` when the conversation is over."""
        reader, writer = conn.reader, conn.writer
        if reply is BROKEN_TLS:
            writer.write(b"220 2.0.0 Ready to start TLS\r\n")
            await writer.drain()
            await reader.read(1)  # the ClientHello has started to arrive
            writer.write(b"this is not TLS\r\n")
            await writer.drain()
            await reader.read()  # until the client gives up
            return False
        if isinstance(reply, Delayed):
            await self._release.wait()
            reply = reply.data
        assert not isinstance(reply, Delayed)
        return await faults.perform(
            reply,
            conn,
            lambda data: data.replace(b"{args}", args).replace(b"{decoded}", _decoded(args)),
        )


def _decoded(args: bytes) -> bytes:
    """The last word of ``args`` base64-decoded (NULs shown as spaces), or nothing."""
    try:
        return base64.b64decode(args.split(b" ")[-1], validate=True).replace(b"\0", b" ")
    except (binascii.Error, ValueError):
        return b""


async def start_scripted_server(
    script: Script | str, *, tls_context: ssl.SSLContext | None = None
) -> ScriptedSmtpServer:
    """Listen on 127.0.0.1 (TLS from the first byte when ``tls_context`` is given)."""
    if isinstance(script, str):
        script = SCRIPTS[script]
    server = ScriptedSmtpServer(script)
    await server.listen(tls_context)
    return server
