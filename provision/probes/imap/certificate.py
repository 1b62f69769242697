"""The IMAP certificate check: a credential-free second handshake that verifies (SNI =
``imap.server``) beside the probe's unverified session, and that session's certificate facts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from provision import tls
from provision.models import ImapSettings, ProbeOptions
from provision.probes._certs import expiry_finding
from provision.probes._shared import shared
from provision.probes._steps import Recorder
from provision.probes.imap.classify import cert_finding
from provision.probes.imap.connection import GreetingProtocol, dial, open_transport, shutdown
from provision.tls_failures import classify_tls_error

__all__ = ["CertificateCheck"]


@dataclass(frozen=True, slots=True)
class _CertCheck:
    """Outcome of the credential-free, verifying handshake.

    ``der`` and ``peercert``: the certificate it verified and OpenSSL's description of
    it, so the probe's own (unverified) session is described without parsing DER when
    both saw the same certificate.
    """

    verified: bool
    reason: str
    der: bytes | None = None
    peercert: dict[str, Any] | None = None


class CertificateCheck:
    """The check of one probe's session certificate, started when its TLS handshake is done."""

    def __init__(
        self,
        rec: Recorder,
        imap: ImapSettings,
        options: ProbeOptions,
        peer: tuple[int, Any],
        der: bytes | None,
    ) -> None:
        self.rec = rec
        self.imap = imap
        self.options = options
        self.facts = rec.result.facts
        self.loop = asyncio.get_running_loop()
        self.peer = peer
        #: The certificate of the probe's own session, described once the check is done.
        self.der = der
        # The same address, name, trust and certificate verify the same way: one check
        # per run for all inboxes on this server (_shared), concurrent with the login.
        key = ("imap-certificate", peer, imap.server, options.ca_file, der)
        self.task: asyncio.Task[_CertCheck] | None = asyncio.create_task(
            shared(key, self._check_certificate)
        )

    async def _check_certificate(self) -> _CertCheck:
        """A second handshake with verification on and SNI = ``imap.server``."""
        cap = min(self.options.step_timeout, self.rec.remaining())
        try:
            async with asyncio.timeout(max(cap, 0.0)):
                ctx = await tls.probe_context(self.options.ca_file)
                sock = await dial(*self.peer)
                transport, proto = await open_transport(
                    sock, lambda: GreetingProtocol(self.loop), ctx, self.imap.server
                )
                assert isinstance(proto, GreetingProtocol)
                seen = transport.get_extra_info("ssl_object")
                der = seen.getpeercert(binary_form=True) if seen else None
                peercert = seen.getpeercert() if seen else None
                await shutdown(transport, proto.closed)
        except TimeoutError:
            return _CertCheck(False, f"the verifying handshake got no answer within {cap:.1f} s")
        except OSError as exc:
            failure = classify_tls_error(exc, server=self.imap.server)
            reason = failure.message if failure else f"the verifying handshake failed ({exc})"
            return _CertCheck(False, reason)
        trust = "the system store" + (" and --ca-file" if self.options.ca_file else "")
        return _CertCheck(True, f"verified against {trust}", der, peercert)

    async def finish(self) -> None:
        """Wait for the check; record its facts and findings (at once if abandoned)."""
        task, self.task = self.task, None
        if task is None:
            return
        current = asyncio.current_task()
        if current is not None and current.cancelling() and not task.done():
            task.cancel()  # the whole probe is being abandoned: do not wait for the check
            await asyncio.wait({task})
            self._describe_certificate(None)
            return
        check = await task
        self._describe_certificate(check)
        self.facts["certificate_verified"] = check.verified
        self.facts["certificate_check"] = check.reason
        if not check.verified:
            self.rec.result.warn(
                cert_finding(self.imap, check.reason, self.facts.get("tls", {}), self.options)
            )

    def _describe_certificate(self, check: _CertCheck | None) -> None:
        """``facts.tls.certificate`` of the probe's session, and its ``cert-expiring``.

        When the verifying check saw the same certificate, OpenSSL's description of it
        is used; otherwise (not verified, or a different certificate for the SNI name)
        the DER is parsed.
        """
        if not self.der:
            return
        peercert = check.peercert if check is not None and check.der == self.der else None
        facts = self.facts["tls"]
        facts["certificate"] = tls.cert_facts(self.der, peercert)
        expiring = expiry_finding(
            facts,
            self.options,
            server=self.imap.server,
            field="imap.server",
            consequence="Rocket.Chat's IMAP login still works then, unverified, but the "
            "certificate no longer protects the password",
        )
        if expiring is not None:
            self.rec.result.warn(expiring)
