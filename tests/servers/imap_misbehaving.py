"""Scripted IMAP servers that each get one thing wrong (aiosmtplib's ``tests/smtpd.py`` idea).

A :class:`Script` says what the server sends first and how it answers each command;
everything else answers like a minimal, well-behaved IMAP server. Two sentinels make
misbehaviour deterministic without sleeping (more in :mod:`tests.servers.faults`:
resets, floods, trickles, per-call replies): :data:`SILENT` waits on an event that is
only set at close (the client's short cap decides), :data:`DROP` closes at once.

The server records every command line it receives (``lines``, raw, so tests can check
quoting) and the command names (``commands``).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from tests.servers import faults
from tests.servers.faults import DROP, SILENT, Connection, PerCall

Reply = faults.Reply

#: Answers of a minimal well-behaved server. ``{tag}`` is replaced by the command's tag.
DEFAULT_REPLIES: dict[str, Reply] = {
    "CAPABILITY": b"* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK CAPABILITY completed\r\n",
    "LOGIN": b"{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n",
    "SELECT": (
        b"* FLAGS (\\Seen \\Answered)\r\n* 3 EXISTS\r\n* 0 RECENT\r\n"
        b"{tag} OK [READ-WRITE] SELECT completed\r\n"
    ),
    "SEARCH": b"* SEARCH 2 3\r\n{tag} OK SEARCH completed\r\n",
    "LOGOUT": b"* BYE Logging out\r\n{tag} OK LOGOUT completed\r\n",
}

GREETING = b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted server ready\r\n"


@dataclass(frozen=True)
class Script:
    """How a scripted server behaves.

    Attributes:
        greeting: bytes sent on connect (may lack a line end), or SILENT/DROP.
        replies: per command name, bytes (``{tag}`` and ``{args}`` are filled in), a
            fault or a :class:`~tests.servers.faults.PerCall`; unlisted commands get
            :data:`DEFAULT_REPLIES`.
        close_after_greeting: close right after the greeting (``* BYE`` servers).
    """

    greeting: Reply = GREETING
    replies: dict[str, Reply | PerCall] = field(default_factory=dict)
    close_after_greeting: bool = False


#: The catalogue used by the tests; each name says what goes wrong.
SCRIPTS: dict[str, Script] = {
    "healthy": Script(),
    "silent": Script(greeting=SILENT),
    "greeting-never-ends": Script(greeting=b"* OK [CAPABILITY IMAP4rev1 IDLE] still typi"),
    "greeting-flood": Script(greeting=b"* OK " + b"x" * 20_000),
    "tls-alert": Script(greeting=b"\x15\x03\x01\x00\x02\x02\x46", close_after_greeting=True),
    "closes-at-once": Script(greeting=DROP),
    "bye": Script(greeting=b"* BYE Server shutting down\r\n", close_after_greeting=True),
    "bye-unavailable": Script(
        greeting=b"* BYE [UNAVAILABLE] Try again later\r\n", close_after_greeting=True
    ),
    "smtp-banner": Script(greeting=b"220 mail.example.com ESMTP Postfix\r\n"),
    "pop3-banner": Script(greeting=b"+OK Dovecot ready.\r\n"),
    "garbage": Script(greeting=b"\x00\xfe garbage \x01\r\n"),
    "no-caps-in-greeting": Script(greeting=b"* OK ready\r\n"),
    "logindisabled-via-capability": Script(
        greeting=b"* OK ready\r\n",
        replies={
            "CAPABILITY": b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n{tag} OK done\r\n"
        },
    ),
    "preauth": Script(greeting=b"* PREAUTH [CAPABILITY IMAP4rev1] welcome back\r\n"),
    "drop-at-login": Script(replies={"LOGIN": DROP}),
    "silence-at-login": Script(replies={"LOGIN": SILENT}),
    "bye-at-login": Script(
        replies={"LOGIN": b"* BYE Maximum number of connections from user+IP exceeded\r\n"}
    ),
    "login-wrong-tag": Script(replies={"LOGIN": b"ZZ99 OK who are you\r\n"}),
    "login-echoes-password": Script(
        replies={"LOGIN": b"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials {args}\r\n"}
    ),
    "login-unavailable": Script(
        replies={"LOGIN": b"{tag} NO [UNAVAILABLE] Temporary authentication failure.\r\n"}
    ),
    "login-gmail-app-password": Script(
        replies={
            "LOGIN": (
                b"{tag} NO [ALERT] Application-specific password required: "
                b"https://support.google.com/accounts/answer/185833 (Failure)\r\n"
            )
        }
    ),
    "login-m365": Script(replies={"LOGIN": b"{tag} NO LOGIN failed.\r\n"}),
    "login-privacy-required": Script(
        replies={"LOGIN": b"{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed\r\n"}
    ),
    "login-invalid-state": Script(
        replies={"LOGIN": b"{tag} BAD Command received in Invalid state.\r\n"}
    ),
    "select-read-only": Script(
        replies={"SELECT": b"* 3 EXISTS\r\n{tag} OK [READ-ONLY] SELECT completed\r\n"}
    ),
    "select-nonexistent": Script(
        replies={"SELECT": b"{tag} NO [NONEXISTENT] Mailbox doesn't exist: INBOX\r\n"}
    ),
    "select-not-connected": Script(
        replies={"SELECT": b"{tag} NO User is authenticated but not connected.\r\n"}
    ),
    "search-bad": Script(
        replies={"SEARCH": b"{tag} BAD Error in IMAP command SEARCH: Unknown argument\r\n"}
    ),
    "logout-silent": Script(replies={"LOGOUT": SILENT}),
}


@dataclass(eq=False)
class ScriptedImapServer(faults.ScriptedServer):
    """A listening scripted server; use :func:`start_scripted_server`."""

    script: Script
    port: int = 0
    commands: list[str] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    connections: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.script
        conn = Connection(reader, writer, self._release)
        if not await self._send(conn, script.greeting, b"*", b""):
            return
        if script.close_after_greeting:
            return
        calls: dict[str, int] = {}
        while True:
            line = await reader.readline()
            if not line:
                return
            self.lines.append(line)
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            name_bytes, _, args = rest.partition(b" ")
            name = name_bytes.decode("ascii", "replace").upper()
            self.commands.append(name)
            reply = script.replies.get(name, DEFAULT_REPLIES.get(name, b"{tag} BAD unknown\r\n"))
            if isinstance(reply, PerCall):
                reply = reply.nth(calls.get(name, 0))
            calls[name] = calls.get(name, 0) + 1
            if not await self._send(conn, reply, tag, args) or name == "LOGOUT":
                return

    async def _send(self, conn: Connection, reply: Reply, tag: bytes, args: bytes) -> bool:
        """Send one scripted reply; ``False`` when the conversation is over."""
        going_on = await faults.perform(
            reply, conn, lambda data: data.replace(b"{tag}", tag).replace(b"{args}", args)
        )
        if isinstance(reply, bytes):
            return going_on and (not reply.lstrip().startswith(b"* BYE") or b"{tag}" in reply)
        return going_on


async def start_scripted_server(
    script: Script | str, *, tls_context: ssl.SSLContext | None = None
) -> ScriptedImapServer:
    """Listen on 127.0.0.1 (TLS from the first byte when ``tls_context`` is given)."""
    if isinstance(script, str):
        script = SCRIPTS[script]
    server = ScriptedImapServer(script)
    await server.listen(tls_context)
    return server
