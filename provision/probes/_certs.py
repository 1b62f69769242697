"""The ``cert-expiring`` finding of either protocol: a certificate that ends within
``ProbeOptions.cert_days`` days (``--cert-days``), naming the date."""

from __future__ import annotations

from typing import Any

from provision.models import ProbeOptions
from provision.results import Finding

__all__ = ["expiry_finding"]


def expiry_finding(
    tls_facts: dict[str, Any], options: ProbeOptions, *, server: str, field: str, consequence: str
) -> Finding | None:
    """The warning for a certificate that expires within ``options.cert_days``, or ``None``.

    An already expired certificate gets none here: SMTP fails on it (``cert-expired``)
    and IMAP reports it as unverified.

    Args:
        tls_facts: a stage's ``facts["tls"]`` (``tls.session_facts``).
        options: the probe options (``cert_days``).
        server: the host name, for the message.
        field: the field to change (``smtp.server``).
        consequence: what happens on the expiry date, for the hint.
    """
    cert = tls_facts.get("certificate") or {}
    days, not_after = cert.get("days_left"), cert.get("not_after")
    if not isinstance(days, int) or not isinstance(not_after, str):
        return None
    if days < 0 or days >= options.cert_days:
        return None
    when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
    return Finding(
        code="cert-expiring",
        message=(
            f"the certificate of {server} expires on {not_after[:10]} ({when}; "
            f"warned within {options.cert_days} days, --cert-days)"
        ),
        hint=f"renew it before {not_after[:10]}: {consequence}",
        field=field,
    )
