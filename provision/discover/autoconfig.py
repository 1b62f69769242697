"""The domain's own autoconfig file (Thunderbird's ``config-v1.1.xml`` format).

Asked in Thunderbird's order, HTTPS only: ``https://autoconfig.<domain>/mail/config-v1.1.xml``,
then ``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml``; the first valid
file wins. The host name is resolved with discovery's resolver (so ``--nameserver``
applies) and the request goes to that address with the name as Host and TLS server
name, certificates verified against the system store plus ``--ca-file``. A reply is
read up to :data:`MAX_BYTES`; a document with a DTD is refused before parsing (the
format needs none, and refusing it rules out entity expansion).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provision.discover.candidates import Candidate, Origin, Protocol, Transport
from provision.discover.dns import Resolver

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_BYTES", "Attempt", "AutoconfigResult", "fetch_autoconfig", "parse_config"]

#: Largest reply read; Mozilla's ISPDB files are a few kilobytes.
MAX_BYTES = 128 * 1024

_SOCKET_TYPES = {"SSL": Transport.TLS, "STARTTLS": Transport.STARTTLS, "plain": Transport.PLAIN}
_PROTOCOLS = {"imap": Protocol.IMAP, "smtp": Protocol.SMTP}  # pop3, exchange: not usable


@dataclass(frozen=True, slots=True)
class Attempt:
    """One URL asked and what came of it."""

    url: str
    outcome: str


@dataclass(frozen=True, slots=True)
class AutoconfigResult:
    """The candidates of the first valid file, and every URL tried."""

    candidates: list[Candidate]
    attempts: list[Attempt]


def _urls(domain: str) -> list[tuple[str, str]]:
    return [
        (f"autoconfig.{domain}", "/mail/config-v1.1.xml"),
        (domain, "/.well-known/autoconfig/mail/config-v1.1.xml"),
    ]


async def fetch_autoconfig(
    address: str,
    *,
    resolver: Resolver,
    ca_file: Path | None = None,
    port: int = 443,
) -> AutoconfigResult:
    """Fetch and parse the domain's autoconfig file.

    Args:
        address: the inbox address (its domain is asked; placeholders use it).
        resolver: resolves the web host names; its step cap and deadline bound each request.
        ca_file: extra CAs trusted for the HTTPS certificate.
        port: the HTTPS port (443; tests serve elsewhere).

    Returns:
        Candidates in file order (never raises for network or content problems).
    """
    import httpx

    from provision.tls import verifying_context

    domain = address.rpartition("@")[2].lower()
    attempts: list[Attempt] = []
    context = verifying_context(ca_file)
    async with httpx.AsyncClient(verify=context, trust_env=False) as client:
        for host, path in _urls(domain):
            url = f"https://{host}{'' if port == 443 else f':{port}'}{path}"
            found = await resolver.addresses(host)
            if not found.found:
                attempts.append(Attempt(url, f"{host}: {found.message or found.status}"))
                continue
            ip = found.records[0]
            target = f"[{ip}]" if ":" in ip else ip
            cap = max(0.0, min(resolver.step_timeout, resolver.deadline - time.monotonic()))
            try:
                body = await _get(client, f"https://{target}:{port}{path}", host, cap)
            except _Refused as exc:
                attempts.append(Attempt(url, str(exc)))
                continue
            except httpx.HTTPError as exc:
                attempts.append(Attempt(url, _http_error(exc)))
                continue
            try:
                candidates = parse_config(body, address=address, url=url)
            except ValueError as exc:
                attempts.append(Attempt(url, f"not a usable autoconfig file: {exc}"))
                continue
            attempts.append(Attempt(url, f"{len(candidates)} servers"))
            return AutoconfigResult(candidates, attempts)
    return AutoconfigResult([], attempts)


class _Refused(Exception):
    """The reply is not a document to parse (status, size)."""


async def _get(client: httpx.AsyncClient, url: str, host: str, cap: float) -> bytes:
    if cap <= 0:
        raise _Refused("the overall deadline ran out")
    async with client.stream(
        "GET",
        url,
        headers={"Host": host, "Accept": "application/xml, text/xml"},
        extensions={"sni_hostname": host},
        timeout=cap,
    ) as response:
        if response.status_code != 200:
            raise _Refused(f"HTTP {response.status_code}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BYTES:
                raise _Refused(f"the reply is larger than {MAX_BYTES // 1024} KiB")
            chunks.append(chunk)
        return b"".join(chunks)


def _http_error(exc: Exception) -> str:
    import ssl

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate rejected: {cause.verify_message}"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def parse_config(body: bytes, *, address: str, url: str) -> list[Candidate]:
    """The IMAP and SMTP servers of a ``config-v1.1.xml`` document, in file order.

    Raises:
        ValueError: not XML, a DTD, or no ``emailProvider``.
    """
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ValueError("it declares a DTD")
    try:
        # No DTD (refused above) means no entities to expand; ElementTree never
        # fetches external resources.
        root = ET.fromstring(body)  # noqa: S314
    except ET.ParseError as exc:
        raise ValueError(f"not XML ({exc})") from None
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        raise ValueError("no clientConfig/emailProvider")
    candidates: list[Candidate] = []
    for element in provider:
        if element.tag not in ("incomingServer", "outgoingServer"):
            continue
        candidate = _server(element, address=address, url=url)
        if candidate is not None:
            candidates.append(candidate)
    return candidates


def _server(element: ET.Element, *, address: str, url: str) -> Candidate | None:
    protocol = _PROTOCOLS.get(element.get("type", ""))
    host = (element.findtext("hostname") or "").strip().rstrip(".")
    port_text = (element.findtext("port") or "").strip()
    transport = _SOCKET_TYPES.get((element.findtext("socketType") or "").strip())
    if protocol is None or transport is None or not _hostname_ok(host):
        return None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return None
    methods = [m.text.strip() for m in element.findall("authentication") if m.text]
    notes: tuple[str, ...] = ()
    if methods and not any(m.startswith("password-") for m in methods):
        notes = (f"the file offers only {', '.join(methods)}; Rocket.Chat sends a password",)
    return Candidate(
        protocol=protocol,
        host=host.lower(),
        port=int(port_text),
        transport=transport,
        origin=Origin.AUTOCONFIG,
        detail=url,
        username=_username(element.findtext("username"), address),
        notes=notes,
    )


def _hostname_ok(host: str) -> bool:
    labels = host.split(".")
    return (
        0 < len(host) <= 253
        and "%" not in host
        and all(0 < len(lb) <= 63 and lb.replace("-", "").isalnum() for lb in labels)
    )


def _username(template: str | None, address: str) -> str | None:
    if not template or not template.strip():
        return None
    local, _, domain = address.partition("@")
    return (
        template.strip()
        .replace("%EMAILADDRESS%", address)
        .replace("%EMAILLOCALPART%", local)
        .replace("%EMAILDOMAIN%", domain)
    )
