"""A throw-away certificate authority and the server certificates it issues."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["CertKind", "SandboxCA"]


class CertKind:
    """Names of the server certificates a :class:`SandboxCA` issues."""

    VALID = "valid"
    EXPIRED = "expired"
    WRONG_HOST = "wrong-host"
    SELF_SIGNED = "self-signed"


@dataclass
class SandboxCA:
    """A trustme CA with server contexts for ``localhost``/``127.0.0.1``.

    ``server_context(kind)`` gives a server-side ``SSLContext`` whose certificate is
    valid, expired, issued for another host, or signed by a CA nobody trusts.
    """

    ca: trustme.CA
    _other_ca: trustme.CA

    @classmethod
    def create(cls) -> SandboxCA:
        return cls(
            ca=trustme.CA(organization_name="provision sandbox CA"),
            _other_ca=trustme.CA(organization_name="untrusted CA"),
        )

    def write_ca(self, path: Path) -> Path:
        """Write the CA certificate (PEM) to ``path`` and return it."""
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def server_context(self, kind: str = CertKind.VALID) -> ssl.SSLContext:
        """A server ``SSLContext`` presenting a certificate of the given kind."""
        now = dt.datetime.now(dt.UTC)
        if kind == CertKind.VALID:
            leaf = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        elif kind == CertKind.EXPIRED:
            leaf = self.ca.issue_cert(
                "localhost",
                "127.0.0.1",
                not_before=now - dt.timedelta(days=60),
                not_after=now - dt.timedelta(days=1),
            )
        elif kind == CertKind.WRONG_HOST:
            leaf = self.ca.issue_cert("mail.other.example")
        elif kind == CertKind.SELF_SIGNED:
            leaf = self._other_ca.issue_cert("localhost", "127.0.0.1")
        else:
            raise ValueError(f"unknown certificate kind {kind!r}")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this CA only (for tests)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        return ctx
