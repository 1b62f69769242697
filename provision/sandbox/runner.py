"""``provision sandbox``: local SMTP and IMAP servers, a throw-away CA, and an inbox file.

The servers are real (aiosmtpd with AUTH, STARTTLS and implicit TLS; pymap for
IMAP over implicit TLS) and listen on 127.0.0.1 ports chosen by the OS. The
inbox file reads its password with ``${file:password}``, as a real deployment
would read a secret file, so no secret is written into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from provision.models import Secret
from provision.sandbox.ca import CertKind, SandboxCA
from provision.sandbox.imapd import start_imap_server
from provision.sandbox.rocketchat import RocketChatDouble, start_rocketchat
from provision.sandbox.smtpd import start_smtp_server
from provision.stopping import on_abort

__all__ = ["Sandbox", "running_sandbox", "serve_forever"]

_USER = "support@example.com"


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What a running sandbox offers: its files and ports."""

    directory: Path
    inbox_file: Path
    ca_file: Path
    smtp_starttls_port: int
    smtp_tls_port: int
    imap_tls_port: int
    rocketchat_url: str
    rocketchat_env: Path
    user_id: str
    token: Secret
    rocketchat: RocketChatDouble


@contextlib.asynccontextmanager
async def running_sandbox(
    directory: Path | None = None, *, double: RocketChatDouble | None = None
) -> AsyncIterator[Sandbox]:
    """Start the sandbox servers, write its files, and stop everything on exit.

    Everything it wrote is removed on exit, however it ends (a second signal included,
    ``provision.stopping.on_abort``): the files hold a password and a token, and with
    the servers gone they are of no use.

    Args:
        directory: where to write ``inboxes.yaml``, ``ca.pem``, ``password`` and
            ``rocketchat.env`` (created if missing); a temporary directory when ``None``.
        double: the Rocket.Chat double to serve (tests pass one with fault injection);
            a fresh one when ``None``.
    """
    with contextlib.ExitStack() as files:
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="provision-"))
            created = True
        else:
            created = not directory.exists()
            directory.mkdir(parents=True, exist_ok=True)
        remove = functools.partial(_remove_written, directory, created=created)
        files.callback(remove)
        files.enter_context(on_abort(remove))
        ca = SandboxCA.create()
        context = ca.server_context(CertKind.VALID)
        password = secrets.token_urlsafe(18)
        async with contextlib.AsyncExitStack() as servers:
            starttls = await start_smtp_server(
                mode="starttls", tls_context=context, users={_USER: password}
            )
            servers.push_async_callback(starttls.close)
            implicit = await start_smtp_server(
                mode="implicit", tls_context=context, users={_USER: password}
            )
            servers.push_async_callback(implicit.close)
            imap = await start_imap_server(
                implicit_tls=True, tls_context=context, user=_USER, password=password
            )
            servers.push_async_callback(imap.close)
            double = double if double is not None else RocketChatDouble()
            admin = double.add_admin("sandbox-admin")
            double.add_department("Support")
            rocketchat = await start_rocketchat(double)
            servers.push_async_callback(rocketchat.close)
            box = Sandbox(
                directory=directory,
                inbox_file=directory / "inboxes.yaml",
                ca_file=ca.write_ca(directory / "ca.pem"),
                smtp_starttls_port=starttls.port,
                smtp_tls_port=implicit.port,
                imap_tls_port=imap.port,
                rocketchat_url=rocketchat.url,
                rocketchat_env=directory / "rocketchat.env",
                user_id=admin.id,
                token=Secret(admin.token),
                rocketchat=double,
            )
            secret = directory / "password"
            secret.touch(mode=0o600)
            secret.write_text(password + "\n")
            box.rocketchat_env.touch(mode=0o600)
            box.rocketchat_env.write_text(
                f"ROCKETCHAT_URL={box.rocketchat_url}\n"
                f"ROCKETCHAT_USER_ID={box.user_id}\n"
                f"ROCKETCHAT_AUTH_TOKEN={box.token.reveal()}\n"
            )
            box.inbox_file.write_text(_inbox_file(box))
            yield box


#: What a sandbox writes into its directory.
_WRITTEN = ("inboxes.yaml", "ca.pem", "password", "rocketchat.env")


def _remove_written(directory: Path, *, created: bool) -> None:
    """Remove the sandbox's files, and its directory if the sandbox made it."""
    for name in _WRITTEN:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    if created:
        shutil.rmtree(directory, ignore_errors=True)


def _inbox_file(box: Sandbox) -> str:
    def inbox(name: str, email: str, smtp_port: int, smtp_secure: bool) -> str:
        return f"""\
  - name: {name}
    email: {email}
    active: true
    senderInfo: {name} (sandbox)
    department: Support
    smtp:
      server: localhost
      port: {smtp_port}
      username: {_USER}
      password: ${{file:password}}
      secure: {"true" if smtp_secure else "false"}
    imap:
      server: localhost
      port: {box.imap_tls_port}
      username: {_USER}
      password: ${{file:password}}
      secure: true
      maxRetries: 10
"""

    return (
        "# Written by `provision sandbox`: inboxes on its local servers. The password\n"
        "# is read from the file beside this one; the certificates come from ca.pem.\n"
        "inboxes:\n"
        + inbox("Support", "support@example.com", box.smtp_starttls_port, smtp_secure=False)
        + inbox("Sales", "sales@example.com", box.smtp_tls_port, smtp_secure=True)
    )


async def serve_forever(
    directory: Path | None, *, announce: Callable[[str], None], program: str = "provision"
) -> None:
    """Run the sandbox until cancelled (a stop), telling the user how to use it;
    ``program`` is how the printed commands run provision."""
    import shlex

    async with running_sandbox(directory) as box:
        inboxes, ca, env = (
            shlex.quote(str(p)) for p in (box.inbox_file, box.ca_file, box.rocketchat_env)
        )
        announce(
            f"sandbox running (Ctrl-C or SIGTERM stops it and removes its files); "
            f"files in {box.directory}\n"
            f"  SMTP STARTTLS  localhost:{box.smtp_starttls_port}\n"
            f"  SMTP TLS       localhost:{box.smtp_tls_port}\n"
            f"  IMAP TLS       localhost:{box.imap_tls_port}\n"
            f"  Rocket.Chat    {box.rocketchat_url} (a test double; its token is in "
            f"{box.rocketchat_env})\n"
            f"check it with:\n"
            f"  {program} check {inboxes} --ca-file {ca}\n"
            f"provision it (run twice: the second run changes nothing):\n"
            f"  set -a; . {env}; set +a\n"
            f"  {program} set {inboxes} --ca-file {ca}"
        )
        await asyncio.Event().wait()
