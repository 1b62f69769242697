"""The facts of a server certificate: subject, issuer, names, validity, fingerprint.

Two sources give the same facts (same keys, same strings):

* a verified session's ``getpeercert()``: OpenSSL already decoded the certificate, so
  describing it costs microseconds and no import;
* the DER bytes, parsed with ``cryptography`` (about 30 ms to import): only for
  certificates nobody verified (IMAP's own session, as node-imap, and the second
  handshakes that fetch a rejected certificate) and for the rare names the dict form
  cannot render exactly as ``cryptography`` does.

Names are RFC 4514 strings as ``cryptography``'s ``Name.rfc4514_string()`` writes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

__all__ = ["cert_facts", "der_facts", "peercert_facts"]

#: OpenSSL's long names (``getpeercert()``) -> what ``rfc4514_string()`` writes: the
#: RFC 4514 short names, and the dotted OID for the other attributes it knows.
_ATTRIBUTE_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "1.2.840.113549.1.9.1",
    "serialNumber": "2.5.4.5",
    "surname": "2.5.4.4",
    "givenName": "2.5.4.42",
    "title": "2.5.4.12",
    "postalCode": "2.5.4.17",
    "businessCategory": "2.5.4.15",
    "jurisdictionCountryName": "1.3.6.1.4.1.311.60.2.1.3",
    "jurisdictionStateOrProvinceName": "1.3.6.1.4.1.311.60.2.1.2",
    "jurisdictionLocalityName": "1.3.6.1.4.1.311.60.2.1.1",
    "organizationIdentifier": "2.5.4.97",
}
#: RFC 4514 §2.4 specials, escaped as ``cryptography`` does (the backslash first).
_ESCAPES: tuple[tuple[str, str], ...] = (
    ("\\", "\\\\"),
    ('"', '\\"'),
    ("+", "\\+"),
    (",", "\\,"),
    (";", "\\;"),
    ("<", "\\<"),
    (">", "\\>"),
    ("\0", "\\00"),
)

Rdns = tuple[tuple[tuple[str, str], ...], ...]


class _NotExact(Exception):
    """The dict form lacks something needed to write the facts exactly: use the DER."""


def cert_facts(der: bytes, peercert: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts of a certificate: from ``peercert`` when it describes ``der``, else the DER.

    Args:
        der: the certificate (``getpeercert(binary_form=True)``).
        peercert: the same session's ``getpeercert()``; empty or ``None`` for a
            session that was not verified (OpenSSL then decodes nothing).
    """
    if peercert:
        try:
            return peercert_facts(peercert, der)
        except _NotExact:
            pass
    return der_facts(der)


def peercert_facts(peercert: dict[str, Any], der: bytes) -> dict[str, Any]:
    """:func:`der_facts` from a verified session's ``getpeercert()``, without parsing DER.

    Raises:
        _NotExact: a name or date the dict form cannot render exactly.
    """
    subject, issuer = peercert.get("subject"), peercert.get("issuer")
    not_before, not_after = peercert.get("notBefore"), peercert.get("notAfter")
    if subject is None or issuer is None:  # () is an empty name, which RFC 5280 allows
        raise _NotExact
    if not (isinstance(not_before, str) and isinstance(not_after, str)):
        raise _NotExact
    start, end = _cert_time(not_before), _cert_time(not_after)
    return {
        "subject": _rfc4514(subject),
        "issuer": _rfc4514(issuer),
        "names": _san_names(peercert.get("subjectAltName", ())),
        "not_before": start.isoformat(),
        "not_after": end.isoformat(),
        "days_left": (end - dt.datetime.now(dt.UTC)).days,
        "self_signed": _same_name(subject, issuer),
        "sha256": hashlib.sha256(der).hexdigest(),
    }


def der_facts(der: bytes) -> dict[str, Any]:
    """Subject, issuer, names covered, validity and fingerprint of a DER certificate."""
    from cryptography import x509  # heavy: only for a certificate nobody verified

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    now = dt.datetime.now(dt.UTC)
    not_after = cert.not_valid_after_utc
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": names,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": (not_after - now).days,
        "self_signed": cert.issuer == cert.subject,
        "sha256": hashlib.sha256(der).hexdigest(),
    }


def _rfc4514(rdns: Rdns) -> str:
    """RFC 4514 order (last RDN first), multi-valued RDNs joined with ``+``."""
    return ",".join(
        "+".join(f"{_attribute_name(name)}={_escape(value)}" for name, value in rdn)
        for rdn in reversed(rdns)
    )


def _attribute_name(name: str) -> str:
    known = _ATTRIBUTE_NAMES.get(name)
    if known is not None:
        return known
    if name[:1].isdigit():  # OpenSSL gives the dotted OID of an attribute it does not know
        return name
    raise _NotExact


def _escape(value: str) -> str:
    if not isinstance(value, str):
        raise _NotExact
    if not value:
        return ""
    for special, escaped in _ESCAPES:
        value = value.replace(special, escaped)
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def _same_name(subject: Rdns, issuer: Rdns) -> bool:
    """Name equality as ``cryptography`` has it: RDN by RDN, attributes as sets."""
    return [frozenset(rdn) for rdn in subject] == [frozenset(rdn) for rdn in issuer]


def _san_names(entries: tuple[tuple[str, str], ...]) -> list[str]:
    """DNS names, then IP addresses (written as ``ipaddress`` does), as ``der_facts``."""
    dns, ips = [], []
    for kind, value in entries:
        if kind == "DNS":
            if not value.isascii():
                raise _NotExact
            dns.append(value)
        elif kind == "IP Address":
            import ipaddress  # 1 ms, for the few certificates that name an address

            try:  # OpenSSL writes IPv6 uncompressed in capitals
                ips.append(str(ipaddress.ip_address(value.strip())))
            except ValueError:
                raise _NotExact from None
    return dns + ips


def _cert_time(text: str) -> dt.datetime:
    """OpenSSL's ``Dec  4 18:00:00 2026 GMT`` (``ssl.cert_time_to_seconds`` would load
    ``_strptime`` and compile its patterns: some 3 ms for two dates)."""
    try:
        month, day, clock, year, zone = text.split()
        hour, minute, second = clock.split(":")
        if zone != "GMT" or not second.isdigit():  # fractions: let the DER decide
            raise _NotExact
        return dt.datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=dt.UTC,
        )
    except ValueError:
        raise _NotExact from None


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
