"""One mail account's SMTP and IMAP servers on fixed ports, which a test can break after the
fact: the password rotated at the provider, the certificate swapped for an expired one.

Both are done as a provider does them, by restarting the servers on the same ports with
the new password or certificate (``close`` is awaited before the new listener binds, so
nothing waits on time). Rocket.Chat keeps what it stored, so an ``audit`` sees the break.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from provision.sandbox import imapd, smtpd
from provision.sandbox.smtpd import Mode

__all__ = ["MailHost"]


@dataclass(eq=False)
class MailHost:
    """SMTP (``smtp_mode``) and IMAP over implicit TLS for ``user`` on 127.0.0.1."""

    user: str
    password: str
    context: ssl.SSLContext
    smtp_mode: Mode
    smtp: smtpd.RunningServer
    imap: imapd.RunningServer

    @classmethod
    async def start(
        cls, user: str, password: str, context: ssl.SSLContext, *, smtp_mode: Mode = "starttls"
    ) -> MailHost:
        smtp = await smtpd.start_smtp_server(
            mode=smtp_mode, tls_context=context, users={user: password}
        )
        try:
            imap = await imapd.start_imap_server(
                implicit_tls=True, tls_context=context, user=user, password=password
            )
        except BaseException:
            await smtp.close()
            raise
        return cls(user, password, context, smtp_mode, smtp, imap)

    async def rotate_password(self, password: str) -> None:
        """The provider's password changes; both servers accept only the new one."""
        self.password = password
        await self._restart()

    async def use_certificate(self, context: ssl.SSLContext) -> None:
        """Both servers present the certificate of ``context`` from now on."""
        self.context = context
        await self._restart()

    async def _restart(self) -> None:
        await self.close()
        self.smtp = await smtpd.start_smtp_server(
            port=self.smtp.port,
            mode=self.smtp_mode,
            tls_context=self.context,
            users={self.user: self.password},
        )
        self.imap = await imapd.start_imap_server(
            port=self.imap.port,
            implicit_tls=True,
            tls_context=self.context,
            user=self.user,
            password=self.password,
        )

    async def close(self) -> None:
        await self.smtp.close()
        await self.imap.close()
