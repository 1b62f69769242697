"""How a failed TLS handshake is read: OpenSSL errors -> :class:`~provision.results.Failure`.

Used by the probes and the Rocket.Chat client alike, so it lives beside ``tls``.
"""

from __future__ import annotations

import ssl

from provision.results import Failure, FailureClass

__all__ = ["classify_tls_error"]

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) read from SSLCertVerificationError.verify_code.
_NOT_YET_VALID = 9
_EXPIRED = 10
_SELF_SIGNED_LEAF = 18
_SELF_SIGNED_IN_CHAIN = 19
_UNKNOWN_ISSUER = 20
_UNABLE_TO_VERIFY_LEAF = 21
_HOSTNAME_MISMATCH = 62
_IP_MISMATCH = 64

_PLAINTEXT_PEER_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"}
)
_PROTOCOL_REASONS = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "NO_SHARED_CIPHER",
        "DH_KEY_TOO_SMALL",
        "UNSAFE_LEGACY_RENEGOTIATION_DISABLED",
        "NO_CIPHERS_AVAILABLE",
        "VERSION_TOO_LOW",
    }
)


def classify_tls_error(exc: BaseException, *, server: str) -> Failure | None:
    """Map an exception raised during a TLS handshake, or ``None`` if it is not TLS.

    Walks ``__cause__``/``__context__`` because client libraries wrap handshake errors.
    """
    for err in _chain(exc):
        if isinstance(err, ssl.SSLCertVerificationError):
            return _classify_verify(err, server=server)
        if isinstance(err, ssl.SSLEOFError):
            return Failure(
                FailureClass.RESET,
                "the server closed the connection during the TLS handshake",
            )
        if isinstance(err, ssl.SSLError):
            reason = err.reason or ""
            if reason in _PLAINTEXT_PEER_REASONS or "packet length too long" in str(err):
                return Failure(
                    FailureClass.TLS_ON_PLAINTEXT_PORT,
                    f"the server did not answer the TLS handshake with TLS ({reason or err})",
                )
            if reason in _PROTOCOL_REASONS:
                return Failure(
                    FailureClass.TLS_PROTOCOL,
                    f"no TLS version or cipher in common with the server ({reason})",
                )
            return Failure(FailureClass.TLS_ERROR, f"TLS handshake failed ({reason or err})")
    return None


def _classify_verify(err: ssl.SSLCertVerificationError, *, server: str) -> Failure:
    code = err.verify_code
    text = err.verify_message or str(err)
    if code in (_EXPIRED, _NOT_YET_VALID):
        cls = FailureClass.CERT_EXPIRED
    elif code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
        cls = FailureClass.CERT_HOSTNAME
    elif code in (
        _SELF_SIGNED_LEAF,
        _SELF_SIGNED_IN_CHAIN,
        _UNKNOWN_ISSUER,
        _UNABLE_TO_VERIFY_LEAF,
    ):
        cls = FailureClass.CERT_UNTRUSTED
    else:
        cls = FailureClass.CERT_STRICT if "strict" in text.lower() else FailureClass.CERT_UNTRUSTED
    if code == _UNABLE_TO_VERIFY_LEAF:
        text += " (the server probably does not send its intermediate certificate)"
    return Failure(cls, f"certificate of {server} rejected: {text}")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen
