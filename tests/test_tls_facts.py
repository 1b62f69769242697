"""Certificate facts: a verified session's ``getpeercert()`` and the DER parsed with
``cryptography`` give the same facts, over real TLS sessions on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provision.models import ImapSettings, Inbox, ProbeOptions, Secret, SmtpSettings
from provision.probes.imap import probe_imap
from provision.sandbox.ca import SandboxCA
from provision.sandbox.imapd import start_imap_server
from provision.tls_facts import _NotExact, cert_facts, der_facts, peercert_facts

_Session = tuple[bytes, dict[str, Any]]


async def _session(server: ssl.SSLContext, client: ssl.SSLContext) -> _Session:
    """One verified TLS session to a server on 127.0.0.1: the DER and ``getpeercert()``."""

    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost"
        )
        seen = writer.get_extra_info("ssl_object")
        der, peercert = seen.getpeercert(binary_form=True), seen.getpeercert()
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()
    assert der
    assert peercert  # verified: OpenSSL described the certificate
    return der, peercert


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


def _self_signed(
    name: x509.Name, tmp_path: Path, *, san_critical: bool = False
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed ``localhost`` certificate with ``name``: (server, trusting client)."""
    key = ec.generate_private_key(ec.SECP256R1())
    san = [
        x509.DNSName("localhost"),
        x509.DNSName("mail.example.com"),
        x509.RFC822Name("postmaster@example.com"),  # not a name the facts list
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2060, 6, 30, 12, 34, 56, tzinfo=dt.UTC))  # GeneralizedTime
        .add_extension(x509.SubjectAlternativeName(san), critical=san_critical)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_pem, key_pem)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_pem))
    return server, client


def _rdn(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in attributes])


@pytest.mark.parametrize(
    ("identities", "names"),
    [
        (("localhost",), ["localhost"]),
        (
            ("localhost", "127.0.0.1", "::1", "mail.example.com"),
            ["localhost", "mail.example.com", "127.0.0.1", "::1"],  # DNS names first
        ),
    ],
)
async def test_trustme_certificates_give_the_same_facts_either_way(
    identities: tuple[str, ...], names: list[str]
) -> None:
    ca = trustme.CA(organization_name="facts CA", organization_unit_name="unit, with comma")
    leaf = ca.issue_cert(
        *identities, organization_name="Example Mail", organization_unit_name="ops"
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server)

    der, peercert = await _session(server, _trusting(ca))

    facts = peercert_facts(peercert, der)
    assert facts == der_facts(der)
    assert facts["names"] == names
    assert facts["self_signed"] is False
    assert cert_facts(der, peercert) == facts


async def test_unusual_names_give_the_same_facts_either_way(tmp_path: Path) -> None:
    """RFC 4514 escapes, a multi-valued RDN, e-mail and unknown attributes, IPv6, 2060."""
    name = x509.Name(
        [
            _rdn((NameOID.COUNTRY_NAME, "DE")),
            _rdn((NameOID.ORGANIZATION_NAME, ' #Mail, "Ops" + <Co>; \\ ')),
            _rdn((NameOID.ORGANIZATIONAL_UNIT_NAME, "a"), (NameOID.COMMON_NAME, "b")),
            _rdn((NameOID.EMAIL_ADDRESS, "ops@example.com")),
            _rdn((x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "custom=value")),
            _rdn((NameOID.COMMON_NAME, "mail.example.com")),
        ]
    )
    server, client = _self_signed(name, tmp_path)

    der, peercert = await _session(server, client)

    facts = peercert_facts(peercert, der)
    assert facts == der_facts(der)
    assert facts["names"] == ["localhost", "mail.example.com", "127.0.0.1", "2001:db8::1"]
    assert facts["self_signed"] is True
    assert facts["not_after"] == "2060-06-30T12:34:56+00:00"


async def test_an_empty_subject_gives_the_same_facts_either_way(tmp_path: Path) -> None:
    """RFC 5280 allows an empty subject when the names are in a critical SAN."""
    server, client = _self_signed(x509.Name([]), tmp_path, san_critical=True)

    der, peercert = await _session(server, client)

    facts = peercert_facts(peercert, der)
    assert facts == der_facts(der)
    assert facts["subject"] == ""
    assert facts["self_signed"] is True


async def test_a_name_the_dict_cannot_render_exactly_falls_back_to_the_der(
    tmp_path: Path,
) -> None:
    """OpenSSL knows ``pseudonym`` by its long name only: the DER decides how it reads."""
    name = x509.Name(
        [_rdn((NameOID.PSEUDONYM, "mailer")), _rdn((NameOID.COMMON_NAME, "localhost"))]
    )
    server, client = _self_signed(name, tmp_path)

    der, peercert = await _session(server, client)

    with pytest.raises(_NotExact):
        peercert_facts(peercert, der)
    assert cert_facts(der, peercert) == der_facts(der)
    assert cert_facts(der, peercert)["subject"] == "CN=localhost,2.5.4.65=mailer"


def _inbox(port: int) -> Inbox:
    smtp = SmtpSettings(
        server="smtp.invalid", port=465, username="u", password=Secret("x"), secure=True
    )
    imap = ImapSettings(
        server="localhost", port=port, username="support", password=Secret("pw-3"), secure=True
    )
    return Inbox(name="facts", email="support@example.com", smtp=smtp, imap=imap)


async def test_imap_facts_are_the_same_verified_or_not(
    sandbox_ca: SandboxCA, ca_file: Path
) -> None:
    """IMAP's own session is unverified: described from the check's ``getpeercert()`` when
    the certificate verifies, from the DER when it does not; the facts are the same."""
    server = await start_imap_server(
        implicit_tls=True, tls_context=sandbox_ca.server_context(), user="support", password="pw-3"
    )
    try:
        deadline = asyncio.get_running_loop().time() + 10
        verified = await probe_imap(
            _inbox(server.port), ProbeOptions(ca_file=ca_file), deadline=deadline
        )
        unverified = await probe_imap(_inbox(server.port), ProbeOptions(), deadline=deadline)
    finally:
        await server.close()

    assert verified.facts["certificate_verified"] is True
    assert unverified.facts["certificate_verified"] is False
    described = verified.facts["tls"]["certificate"]
    assert described == unverified.facts["tls"]["certificate"]
    assert described["names"] == ["localhost", "127.0.0.1", "::1"]
    assert described["issuer"].endswith("O=provision sandbox CA")
