"""Known mail providers, recognised by the domain's MX hosts.

Host names and ports are the providers' documented client settings; the notes say
what Rocket.Chat (user name and password only, no OAuth2) needs there. The login
policy hints after a refused login live in ``provision.probes._providers``; this
table only finds the servers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from provision.discover.candidates import Candidate, Origin, Protocol, Transport

__all__ = ["PROVIDERS", "Provider", "provider_candidates", "provider_for_mx"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    """A provider: MX host suffixes that identify it, and its client servers."""

    name: str
    mx_suffixes: tuple[str, ...]
    servers: tuple[tuple[Protocol, str, int, Transport], ...]
    note: str = ""


_S, _I = Protocol.SMTP, Protocol.IMAP
_TLS, _STARTTLS = Transport.TLS, Transport.STARTTLS
_M365_NOTE = (
    "Microsoft 365 needs SMTP AUTH and IMAP basic authentication enabled for the "
    "mailbox; Rocket.Chat has no OAuth2"
)

#: name, MX suffixes, servers (protocol, host, port, transport), note
PROVIDERS: tuple[Provider, ...] = tuple(
    Provider(name=name, mx_suffixes=suffixes, servers=servers, note=note)
    for name, suffixes, servers, note in (
        (
            "Google Workspace / Gmail",
            ("google.com", "googlemail.com"),
            (
                (_S, "smtp.gmail.com", 465, _TLS),
                (_S, "smtp.gmail.com", 587, _STARTTLS),
                (_I, "imap.gmail.com", 993, _TLS),
            ),
            "Google accepts only an app password (2-step verification on) from Rocket.Chat",
        ),
        (
            "Microsoft 365",
            ("mail.protection.outlook.com",),
            ((_S, "smtp.office365.com", 587, _STARTTLS), (_I, "outlook.office365.com", 993, _TLS)),
            _M365_NOTE,
        ),
        (
            "Fastmail",
            ("messagingengine.com",),
            ((_S, "smtp.fastmail.com", 465, _TLS), (_I, "imap.fastmail.com", 993, _TLS)),
            "Fastmail needs an app password",
        ),
        (
            "Zoho Mail",
            ("zoho.com",),
            ((_S, "smtp.zoho.com", 465, _TLS), (_I, "imap.zoho.com", 993, _TLS)),
            "Zoho needs IMAP access enabled; accounts in other regions use smtp.zoho.<region>",
        ),
        (
            "Zoho Mail (EU)",
            ("zoho.eu",),
            ((_S, "smtp.zoho.eu", 465, _TLS), (_I, "imap.zoho.eu", 993, _TLS)),
            "Zoho needs IMAP access enabled",
        ),
        (
            "Yahoo",
            ("yahoodns.net",),
            ((_S, "smtp.mail.yahoo.com", 465, _TLS), (_I, "imap.mail.yahoo.com", 993, _TLS)),
            "Yahoo needs an app password",
        ),
        (
            "iCloud Mail",
            ("mail.icloud.com",),
            ((_S, "smtp.mail.me.com", 587, _STARTTLS), (_I, "imap.mail.me.com", 993, _TLS)),
            "iCloud needs an app-specific password",
        ),
    )
)


def provider_for_mx(exchange: str) -> Provider | None:
    """The provider whose MX hosts end in ``exchange``'s suffix, or ``None``."""
    host = exchange.lower().rstrip(".")
    for provider in PROVIDERS:
        if any(host == s or host.endswith("." + s) for s in provider.mx_suffixes):
            return provider
    return None


def provider_candidates(exchanges: Sequence[str]) -> list[Candidate]:
    """Candidates of the first provider recognised among the MX hosts (in MX order)."""
    for exchange in exchanges:
        provider = provider_for_mx(exchange)
        if provider is None:
            continue
        return [
            Candidate(
                protocol=protocol,
                host=host,
                port=port,
                transport=transport,
                origin=Origin.PROVIDER,
                detail=f"MX {exchange} is {provider.name}",
                notes=(provider.note,) if provider.note else (),
            )
            for protocol, host, port, transport in provider.servers
        ]
    return []
