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


PROVIDERS: tuple[Provider, ...] = (
    Provider(
        name="Google Workspace / Gmail",
        mx_suffixes=("google.com", "googlemail.com"),
        servers=(
            (Protocol.SMTP, "smtp.gmail.com", 465, Transport.TLS),
            (Protocol.SMTP, "smtp.gmail.com", 587, Transport.STARTTLS),
            (Protocol.IMAP, "imap.gmail.com", 993, Transport.TLS),
        ),
        note="Google accepts only an app password (2-step verification on) from Rocket.Chat",
    ),
    Provider(
        name="Microsoft 365",
        mx_suffixes=("mail.protection.outlook.com",),
        servers=(
            (Protocol.SMTP, "smtp.office365.com", 587, Transport.STARTTLS),
            (Protocol.IMAP, "outlook.office365.com", 993, Transport.TLS),
        ),
        note=(
            "Microsoft 365 needs SMTP AUTH and IMAP basic authentication enabled for the "
            "mailbox; Rocket.Chat has no OAuth2"
        ),
    ),
    Provider(
        name="Fastmail",
        mx_suffixes=("messagingengine.com",),
        servers=(
            (Protocol.SMTP, "smtp.fastmail.com", 465, Transport.TLS),
            (Protocol.IMAP, "imap.fastmail.com", 993, Transport.TLS),
        ),
        note="Fastmail needs an app password",
    ),
    Provider(
        name="Zoho Mail",
        mx_suffixes=("zoho.com",),
        servers=(
            (Protocol.SMTP, "smtp.zoho.com", 465, Transport.TLS),
            (Protocol.IMAP, "imap.zoho.com", 993, Transport.TLS),
        ),
        note="Zoho needs IMAP access enabled; accounts in other regions use smtp.zoho.<region>",
    ),
    Provider(
        name="Zoho Mail (EU)",
        mx_suffixes=("zoho.eu",),
        servers=(
            (Protocol.SMTP, "smtp.zoho.eu", 465, Transport.TLS),
            (Protocol.IMAP, "imap.zoho.eu", 993, Transport.TLS),
        ),
        note="Zoho needs IMAP access enabled",
    ),
    Provider(
        name="Yahoo",
        mx_suffixes=("yahoodns.net",),
        servers=(
            (Protocol.SMTP, "smtp.mail.yahoo.com", 465, Transport.TLS),
            (Protocol.IMAP, "imap.mail.yahoo.com", 993, Transport.TLS),
        ),
        note="Yahoo needs an app password",
    ),
    Provider(
        name="iCloud Mail",
        mx_suffixes=("mail.icloud.com",),
        servers=(
            (Protocol.SMTP, "smtp.mail.me.com", 587, Transport.STARTTLS),
            (Protocol.IMAP, "imap.mail.me.com", 993, Transport.TLS),
        ),
        note="iCloud needs an app-specific password",
    ),
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
