"""Provider-aware hints for Gmail and Microsoft 365 (probe-anchors.md §3 rows 24-29, §4).

Keyed on the server's host name and on the reply text. Used by both probes after
a login was refused (or, for Microsoft 365, went unanswered: Exchange Online has
been seen to answer a refused SMTP AUTH with silence, windmill PR #10620).
"""

from __future__ import annotations

import re

from provision.results import Failure, FailureClass

_NO_OAUTH = "Rocket.Chat sends only a user name and password (it has no OAuth2 for mail)"

__all__ = ["provider_failure", "provider_of"]

_GOOGLE = re.compile(r"(^|\.)(gmail|googlemail|google)\.com\.?$", re.IGNORECASE)
_MICROSOFT = re.compile(
    r"(^|\.)(office365|outlook|hotmail|live|office|microsoft)\.com\.?$", re.IGNORECASE
)


def provider_of(host: str) -> str | None:
    """``"google"``, ``"microsoft"`` or ``None`` for a server host name."""
    if _GOOGLE.search(host):
        return "google"
    if _MICROSOFT.search(host):
        return "microsoft"
    return None


def provider_failure(
    *, protocol: str, host: str, reply: str, message: str, timed_out: bool = False
) -> Failure | None:
    """Diagnose a refused (or unanswered) login at a known provider.

    Args:
        protocol: ``"smtp"`` or ``"imap"`` (also the field prefix).
        host: the configured server name.
        reply: the server's reply text to the login (empty if none).
        message: the failure's message (what the probe saw), kept as it is.
        timed_out: the login got no answer within its cap.

    Returns:
        The failure with the provider's class and hint, or ``None`` when the reply
        says nothing provider-specific.
    """
    text = reply.lower()
    password = f"{protocol}.password"
    # Gmail's wording is the same wherever it is relayed from (Workspace SMTP relays too).
    if "application-specific password" in text or "5.7.9" in text:
        return Failure(
            FailureClass.APP_PASSWORD_REQUIRED,
            message,
            "the account has 2-step verification: create an app password "
            f"(Google Account > Security > App passwords) and put it in {password}",
            password,
        )
    if "web browser" in text or "5.7.14" in text:
        return Failure(
            FailureClass.BASIC_AUTH_DISABLED,
            message,
            "the provider wants an interactive sign-in first: sign in once in a browser "
            f"from this network, or use an app password in {password}",
            password,
        )
    microsoft = _microsoft_reason(protocol, text, message)
    if microsoft is not None:
        return microsoft
    provider = provider_of(host)
    if provider == "microsoft":
        if "not connected" in text:
            return Failure(
                FailureClass.MAILBOX,
                message,
                "the login worked but IMAP is disabled for this mailbox: enable IMAP for it "
                "in the Microsoft 365 admin center",
                "imap.username",
            )
        if timed_out or (protocol == "imap" and re.search(r"(login|authenticate) failed", text)):
            return Failure(
                FailureClass.BASIC_AUTH_DISABLED,
                message,
                "Exchange Online refuses basic authentication for "
                f"{protocol.upper()} (it answers a refused login with "
                f"{'silence' if timed_out else 'a bare failure'}); Rocket.Chat has no OAuth2, "
                f"so enable basic auth for {protocol.upper()} on the mailbox or use another "
                "mail server",
                password,
            )
    if provider == "google" and ("not accepted" in text or "invalid credentials" in text):
        return Failure(
            FailureClass.AUTH_FAILED,
            message,
            "Gmail refuses the account password for SMTP/IMAP: turn on 2-step verification, "
            f"create an app password and put it in {password}"
            + ("; also enable IMAP in Gmail's settings" if protocol == "imap" else ""),
            password,
        )
    return None


def _microsoft_reason(protocol: str, text: str, message: str) -> Failure | None:
    """Exchange Online's refusals, told apart by their reason text (probe-anchors.md §7).

    One code, 5.7.139, covers SMTP AUTH switched off (tenant or mailbox), basic
    authentication off, security defaults and a plain wrong password ("the user
    credentials were incorrect"); the last, like any reason not listed here, stays the
    generic ``auth-failed``. Matched on the text, whatever the host: hybrid and
    vanity-named Exchange servers answer the same way.
    """
    account = f"{protocol}.username"
    if "5.7.30" in text or "basic authentication is not supported for client submission" in text:
        # Microsoft's announced final answer once basic auth for SMTP AUTH is retired.
        return Failure(
            FailureClass.BASIC_AUTH_DISABLED,
            message,
            "Microsoft 365 no longer accepts a password for SMTP client submission, and "
            f"{_NO_OAUTH}: send this inbox's mail through another SMTP service (a relay "
            "or mail provider that takes a password) in smtp.server, smtp.port, "
            "smtp.username and smtp.password",
            "smtp.server",
        )
    if "smtpclientauthentication is disabled" in text:
        if "for the mailbox" in text:
            where = "this mailbox"
            fix = (
                "turn on 'Authenticated SMTP' for it (Microsoft 365 admin center > Users > "
                "Mail > Manage email apps, or Set-CASMailbox -Identity <mailbox> "
                "-SmtpClientAuthenticationDisabled $false)"
            )
        else:
            where = "the whole tenant"
            fix = (
                "an admin turns it on for the tenant (Set-TransportConfig "
                "-SmtpClientAuthenticationDisabled $false) or for this mailbox only "
                "(Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false)"
            )
        return Failure(
            FailureClass.SMTP_AUTH_DISABLED,
            message,
            f"SMTP AUTH is switched off for {where} in Microsoft 365: {fix}; {_NO_OAUTH}",
            account,
        )
    if "did not meet the criteria to be authenticated" in text:
        return Failure(
            FailureClass.SMTP_AUTH_DISABLED,
            message,
            "Microsoft 365 refuses SMTP AUTH for this mailbox by policy: turn on "
            "'Authenticated SMTP' for it and check that no Conditional Access policy "
            f"blocks legacy authentication for it; {_NO_OAUTH}",
            account,
        )
    if "security defaults" in text:
        return Failure(
            FailureClass.BASIC_AUTH_DISABLED,
            message,
            "the tenant's security defaults block password sign-ins from mail clients, "
            "Rocket.Chat's included: an admin turns security defaults off in Microsoft "
            "Entra ID (Overview > Properties > Manage security defaults) and protects "
            "sign-ins with Conditional Access policies instead, leaving this mailbox "
            f"able to use SMTP AUTH; {_NO_OAUTH}",
            account,
        )
    if "basic authentication is disabled" in text:
        return Failure(
            FailureClass.BASIC_AUTH_DISABLED,
            message,
            f"the provider has basic authentication turned off and {_NO_OAUTH}: allow "
            "basic authentication for this mailbox (an authentication policy) or use a "
            "mail server that accepts a password",
            account,
        )
    return None
