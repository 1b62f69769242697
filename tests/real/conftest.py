"""Real Dovecot and Postfix on loopback, started once per test session.

Everything lives in one temporary folder (nothing under ``/etc`` changes):

* Dovecot ``tls`` instance: implicit-TLS IMAP on ``127.0.0.1`` (certificate from the
  session CA), plaintext IMAP on ``127.0.0.2`` with ``disable_plaintext_auth = yes``,
  and the auth socket Postfix uses for SASL.
* Dovecot ``plain`` instance: plaintext IMAP on ``127.0.0.1`` without SSL, plaintext
  login allowed.
* Postfix: submission with STARTTLS required before AUTH, and implicit TLS
  (``smtpd_tls_wrappermode``), both on ``127.0.0.1``; everything is discarded.

Why ``127.0.0.2`` for ``LOGINDISABLED``: Dovecot counts a connection whose remote IP
equals its local IP as secured (shared/spec/real-mail-servers.md). Linux gives a
connection to ``127.0.0.2`` the source address ``127.0.0.1`` (``ip route get
127.0.0.2`` -> ``src 127.0.0.1``), so a listener on ``127.0.0.2`` sees an insecure
peer and advertises ``LOGINDISABLED`` without the probe binding a source address.

The daemons need the Debian packages and a system user for the mailboxes;
``scripts/install-mail-servers`` provides both. Without them the fixtures fail (a
skipped tier would hide a regression), and so they do when not run as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.sandbox.ca import SandboxCA

#: Made by scripts/install-mail-servers; owns the Maildirs.
MAIL_USER = "provision-mail"
INSTALL_HINT = "run scripts/install-mail-servers (as root) to install Dovecot and Postfix"
#: Readiness and shutdown bounds for the daemons.
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_SBIN = "/usr/sbin:/sbin:/usr/local/sbin"


@dataclass(frozen=True, slots=True)
class Account:
    """A mailbox on the test servers (login name and password)."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class MailServers:
    """Addresses of the running daemons, and the accounts they know."""

    host: str
    #: Dovecot ``tls``: implicit TLS on ``host``.
    imaps_port: int
    #: Dovecot ``tls``: plaintext with ``disable_plaintext_auth``; use ``logindisabled_host``.
    logindisabled_host: str
    logindisabled_port: int
    #: Dovecot ``plain``: plaintext, plaintext login allowed.
    imap_plain_port: int
    #: Postfix: STARTTLS required before AUTH (``smtpd_tls_auth_only``).
    submission_port: int
    #: Postfix: implicit TLS (``smtpd_tls_wrappermode``).
    smtps_port: int
    user: Account
    #: A password with a space, a double quote and a backslash (IMAP quoting).
    quoting_user: Account
    ca_file: Path
    root: Path
    #: Messages placed in ``user``'s INBOX before the servers start (all unseen).
    seeded_messages: int
    #: An account whose password a test may rotate (``set_password``); others keep theirs.
    rotating_user: Account
    #: Postfix: STARTTLS submission with ``smtpd_sender_login_maps`` and
    #: ``reject_sender_login_mismatch`` (each account may send only as itself, and
    #: ``user`` also as ``nobody@provision.test``, a mailbox that does not exist).
    envelope_port: int = 0

    def set_password(self, account: Account, password: str) -> None:
        """Rotate ``account``'s password at the "provider": Dovecot, and Postfix's SASL
        through it, take only the new one from the next login on."""
        users = self.root / "users"
        before = users.stat().st_mtime
        prefix = f"{account.username}:"
        lines = [
            f"{prefix}{{PLAIN}}{password}::::::" if line.startswith(prefix) else line
            for line in users.read_text().splitlines()
        ]
        users.write_text("\n".join(lines) + "\n")
        # Dovecot re-reads a passwd-file whose mtime changed, but looks at most once a
        # second: move the mtime on, then wait until a login with the new password works.
        os.utime(users, (before + 1, before + 1))
        _wait_login(
            self.host,
            self.imaps_port,
            account.username,
            password,
            logs=[self.root / "tls" / "dovecot.log"],
        )

    def log_tails(self, lines: int = 15) -> str:
        """The end of every daemon log, for assertion messages."""
        logs = [
            self.root / "tls" / "dovecot.log",
            self.root / "plain" / "dovecot.log",
            self.root / "postfix" / "maillog",
        ]
        return "\n".join(f"--- {log.name} ({log.parent.name})\n{_tail(log, lines)}" for log in logs)


def _which(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{_SBIN}")
    if found is None:
        pytest.fail(f"`{name}` not found: {INSTALL_HINT}", pytrace=False)
    return found


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _wait_listening(
    addresses: list[tuple[str, int]],
    *,
    what: str,
    logs: list[Path],
    exited: Callable[[], int | None] = lambda: None,
) -> None:
    """Poll until every address accepts a TCP connection, for at most READY_TIMEOUT.

    ``exited`` gives the daemon's exit status once it has ended (``None`` while it
    runs), so a daemon that dies at start fails at once rather than after the bound.
    """
    pending = list(addresses)
    give_up = time.monotonic() + READY_TIMEOUT
    while pending:
        host, port = pending[0]
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            status = exited()
            if status is not None or time.monotonic() > give_up:
                why = (
                    f"exited with {status}"
                    if status is not None
                    else f"still running after {READY_TIMEOUT:.0f} s"
                )
                tails = "\n".join(f"--- {log}\n{_tail(log)}" for log in logs)
                pytest.fail(
                    f"{what} is not listening on {host}:{port} ({why}):\n{tails}",
                    pytrace=False,
                )
            time.sleep(0.05)
            continue
        pending.pop(0)


def _wait_banner(host: str, port: int, *, logs: list[Path]) -> None:
    """Read Postfix's first banner, within READY_TIMEOUT.

    Postfix's very first session greets about 2 s after the accept on these machines
    (later ones in under a millisecond): paid here, not by the first test's step cap.
    """
    try:
        with socket.create_connection((host, port), timeout=READY_TIMEOUT) as sock:
            banner = sock.recv(512)
            sock.sendall(b"QUIT\r\n")
    except OSError as exc:
        banner = f"({exc})".encode()
    if not banner.startswith(b"220"):
        tails = "\n".join(f"--- {log}\n{_tail(log)}" for log in logs)
        pytest.fail(f"Postfix did not greet on {host}:{port}: {banner!r}\n{tails}", pytrace=False)


def _wait_login(host: str, port: int, username: str, password: str, *, logs: list[Path]) -> None:
    """Poll an IMAP LOGIN until it succeeds, for at most READY_TIMEOUT."""
    import imaplib
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    give_up = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=2) as imap:
                imap.login(username, password)
                return
        except imaplib.IMAP4.error:
            if time.monotonic() > give_up:
                tails = "\n".join(f"--- {log}\n{_tail(log)}" for log in logs)
                pytest.fail(f"Dovecot did not take the new password of {username}:\n{tails}")
            time.sleep(0.05)


def _dovecot_conf(
    *,
    root: Path,
    name: str,
    mail_uid: int,
    mail_gid: int,
    users_file: Path,
    mail_root: Path,
    listeners: str,
    ssl: str,
    disable_plaintext_auth: bool,
    tuning: str = "",
) -> str:
    run = root / name
    return f"""\
# Dovecot instance {name!r} for provision's real tier (generated).
instance_name = provision-{name}-{os.getpid()}
base_dir = {run}/run
state_dir = {run}/state
log_path = {run}/dovecot.log
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {mail_uid}
last_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
last_valid_gid = {mail_gid}
mail_location = maildir:~/Maildir
{ssl}
disable_plaintext_auth = {"yes" if disable_plaintext_auth else "no"}
auth_mechanisms = plain login
# The default 2 s per failed login would dominate the tier's run time. Dovecot
# 2.3 still answers failures on a 500 ms timer, so a wrong password costs <= 0.5 s.
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users_file}
  default_fields = uid={mail_uid} gid={mail_gid} home={mail_root}/%d/%n
}}
service imap-login {{
{listeners}
}}
# Dovecot's auth penalty (2, 4, 8 ... s per repeated failure from one IP) is off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
# imap runs as the mail user, which must reach the stats socket.
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{tuning}"""


_POSTFIX_MASTER = """\
# Postfix services for provision's real tier (generated); no chroot anywhere.
{submission} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
{smtps} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
{envelope} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sender_login_maps=texthash:{sender_logins}
  -o smtpd_sender_restrictions=reject_sender_login_mismatch
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _postfix_main(*, root: Path, cert: Path, auth_socket: Path, delivery: str) -> str:
    return f"""\
# Postfix main.cf for provision's real tier (generated).
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.provision.test
mydomain = provision.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# No DNS on the test machines: no reverse lookups, no MX lookups; deliver nowhere but
# into the one Maildir of the delivery lines.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = discard:
local_transport = discard:
relay_transport = discard:
{delivery}
smtpd_banner = $myhostname ESMTP provision-test
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_tls_chain_files = {cert}
smtpd_error_sleep_time = 0
biff = no
"""


def _delivery(root: Path, mail_root: Path, owner: pwd.struct_passwd, user: Account) -> str:
    """main.cf lines that deliver ``user``'s mail into its Maildir, which Dovecot serves.

    Postfix's own ``virtual`` agent writes the Maildir (no Dovecot LMTP needed): the
    round trip sends there (issue 11); everything else is still discarded.
    """
    local, _, domain = user.username.partition("@")
    mailboxes = root / "postfix" / "virtual-mailboxes"
    mailboxes.write_text(f"{user.username} {domain}/{local}/Maildir/\n")
    return (
        f"virtual_mailbox_domains = {domain}\n"
        f"virtual_mailbox_base = {mail_root}\n"
        f"virtual_mailbox_maps = texthash:{mailboxes}\n"
        f"virtual_uid_maps = static:{owner.pw_uid}\n"
        f"virtual_gid_maps = static:{owner.pw_gid}\n"
        f"virtual_minimum_uid = {owner.pw_uid}\n"
        "virtual_transport = virtual"
    )


def _sender_logins(root: Path, user: Account, quoting_user: Account) -> Path:
    """``smtpd_sender_login_maps``: which login may send as which address."""
    logins = root / "postfix" / "sender-logins"
    logins.write_text(
        f"{user.username} {user.username}\n"
        f"{quoting_user.username} {quoting_user.username}\n"
        f"nobody@provision.test {user.username}\n"
    )
    return logins


@dataclass
class _Daemons:
    """Started daemons, stopped in reverse order even when starting failed half-way."""

    dovecots: list[subprocess.Popen[bytes]]
    postfix_dir: Path | None = None
    postfix_bin: str | None = None

    def stop(self) -> None:
        # Signal everything first, then wait: each daemon takes about a second to
        # wind down, and waiting in turn would add those up.
        for proc in self.dovecots:
            if proc.poll() is None:
                proc.terminate()
        if self.postfix_dir is not None and self.postfix_bin is not None:
            subprocess.run(
                [self.postfix_bin, "-c", str(self.postfix_dir), "stop"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=STOP_TIMEOUT,
                check=False,
            )
            _wait_pidfile(self.postfix_dir.parent / "queue" / "pid" / "master.pid")
        for proc in self.dovecots:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)


def _wait_pidfile(path: Path) -> None:
    """Wait for Postfix's master to exit after ``postfix stop``; kill it if it hangs."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        # Not our child (Postfix daemonizes), so wait on a pidfd instead of polling.
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        waiter = select.poll()
        waiter.register(pidfd, select.POLLIN)
        if not waiter.poll(STOP_TIMEOUT * 1000):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    finally:
        os.close(pidfd)


def _make_postfix_dirs(root: Path) -> None:
    """Create the queue and data directories as Postfix's own table lists them.

    ``postfix start`` would check and create them itself (``postfix-script
    check-fatal``, which runs ``post-install``: about 2 s of shell). With everything
    in place, the ``quick-start`` marker skips that check, as ``postfix restart``
    does; the start then takes about 30 ms. Without the table, Postfix is left to
    do it.
    """
    (root / "queue").mkdir()
    table = Path("/etc/postfix/postfix-files")
    if not table.is_file():
        return
    owners = {"$mail_owner": "postfix", "$setgid_group": "postdrop", "root": "root", "-": "root"}
    bases = {"$queue_directory": root / "queue", "$data_directory": root / "data"}
    for line in table.read_text().splitlines():
        fields = line.split(":")
        if len(fields) < 5 or fields[1] != "d":
            continue
        base, _, rest = fields[0].partition("/")
        if base not in bases:
            continue
        path = bases[base] / rest if rest else bases[base]
        path.mkdir(exist_ok=True)
        user = pwd.getpwnam(owners.get(fields[2], fields[2]))
        group = grp.getgrnam(owners.get(fields[3], fields[3])).gr_gid
        os.chown(path, user.pw_uid, group)
        path.chmod(int(fields[4], 8))
    (root / "queue" / "quick-start").touch()


def _seed_inbox(maildir: Path, owner: pwd.struct_passwd) -> None:
    """One unseen message in a Maildir INBOX, owned by the mail user."""
    for path in (maildir.parent.parent, maildir.parent, maildir):
        path.mkdir(exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir()
    message = maildir / "new" / "1700000000.M1P1.provision"
    message.write_bytes(
        b"From: customer@example.test\r\nTo: support@provision.test\r\n"
        b"Subject: seeded by the real tier\r\n\r\nHello.\r\n"
    )
    for path in (maildir.parent.parent, maildir.parent, maildir, *maildir.rglob("*")):
        os.chown(path, owner.pw_uid, owner.pw_gid)
        path.chmod(0o700 if path.is_dir() else 0o600)


def _start_dovecot(binary: str, conf: Path, log: Path) -> subprocess.Popen[bytes]:
    # Foreground (-F) so the fixture owns the process; stdio to a file and no
    # inherited fds, or the test runner would wait on the daemon's pipe.
    with log.open("ab") as out:
        return subprocess.Popen(
            [binary, "-F", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )


@pytest.fixture(scope="session")
def mail_servers(sandbox_ca: SandboxCA) -> Iterator[MailServers]:
    """Start both Dovecot instances and Postfix; stop them at the end of the session."""
    dovecot = _which("dovecot")
    postfix = _which("postfix")
    if os.geteuid() != 0:
        pytest.fail(
            "the real tier starts Dovecot and Postfix as root (they drop privileges "
            "themselves); run the tests as root",
            pytrace=False,
        )
    try:
        mail_pw = pwd.getpwnam(MAIL_USER)
    except KeyError:
        pytest.fail(f"system user {MAIL_USER!r} is missing: {INSTALL_HINT}", pytrace=False)

    # Not pytest's tmp_path: its root is 0700, and the daemons' unprivileged
    # processes (dovecot, postfix, the mail user) must reach their files.
    root = Path(tempfile.mkdtemp(prefix="provision-real-"))
    daemons = _Daemons(dovecots=[])
    try:
        root.chmod(0o755)
        yield _start_all(root, sandbox_ca, dovecot, postfix, mail_pw, daemons)
    finally:
        daemons.stop()
        shutil.rmtree(root, ignore_errors=True)


def _start_all(
    root: Path,
    sandbox_ca: SandboxCA,
    dovecot: str,
    postfix: str,
    mail_pw: pwd.struct_passwd,
    daemons: _Daemons,
    *,
    dovecot_tuning: str = "",
) -> MailServers:
    """Start every server of the tier. ``dovecot_tuning``: lines appended to the TLS
    instance's configuration (``bench/run.py`` runs it in Dovecot's high-performance mode)."""
    host = "127.0.0.1"
    logindisabled_host = "127.0.0.2"
    ports = {
        "imaps": _free_port(host),
        "logindisabled": _free_port(logindisabled_host),
        "imap_plain": _free_port(host),
        "submission": _free_port(host),
        "smtps": _free_port(host),
        "envelope": _free_port(host),
    }
    user = Account("support@provision.test", "correct-horse-battery")
    quoting_user = Account("quoting@provision.test", 'pa ss"wo\\rd')
    rotating_user = Account("rotating@provision.test", "before-rotation-31")

    ca_file = sandbox_ca.write_ca(root / "ca.pem")
    leaf = sandbox_ca.ca.issue_cert("localhost", "127.0.0.1", "127.0.0.2")
    # Postfix takes key and chain in one file (smtpd_tls_chain_files), Dovecot in two.
    cert = root / "server.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    key_file, chain_file = root / "server.key", root / "server.crt"
    leaf.private_key_pem.write_to_path(str(key_file))
    chain_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    for path in (cert, key_file):
        path.chmod(0o600)

    mail_root = root / "mail"
    mail_root.mkdir()
    os.chown(mail_root, mail_pw.pw_uid, mail_pw.pw_gid)
    _seed_inbox(mail_root / "provision.test" / "support" / "Maildir", mail_pw)
    users_file = root / "users"
    users_file.write_text(
        "".join(
            f"{a.username}:{{PLAIN}}{a.password}::::::\n"
            for a in (user, quoting_user, rotating_user)
        )
    )
    users_file.chmod(0o644)

    instances = {
        "tls": _dovecot_conf(
            root=root,
            name="tls",
            mail_uid=mail_pw.pw_uid,
            mail_gid=mail_pw.pw_gid,
            users_file=users_file,
            mail_root=mail_root,
            listeners=(
                f"  inet_listener imap {{\n    address = {logindisabled_host}\n"
                f"    port = {ports['logindisabled']}\n  }}\n"
                f"  inet_listener imaps {{\n    address = {host}\n"
                f"    port = {ports['imaps']}\n    ssl = yes\n  }}"
            ),
            ssl=f"ssl = yes\nssl_cert = <{chain_file}\nssl_key = <{key_file}",
            disable_plaintext_auth=True,
            tuning=dovecot_tuning,
        ),
        "plain": _dovecot_conf(
            root=root,
            name="plain",
            mail_uid=mail_pw.pw_uid,
            mail_gid=mail_pw.pw_gid,
            users_file=users_file,
            mail_root=mail_root,
            listeners=(
                f"  inet_listener imap {{\n    address = {host}\n"
                f"    port = {ports['imap_plain']}\n  }}\n"
                "  inet_listener imaps {\n    port = 0\n  }"
            ),
            ssl="ssl = no",
            disable_plaintext_auth=False,
        ),
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, text in instances.items():
        (root / name).mkdir()
        conf = root / name / "dovecot.conf"
        conf.write_text(text)
        procs[name] = _start_dovecot(dovecot, conf, root / name / "stdout.log")
        daemons.dovecots.append(procs[name])

    postfix_dir = root / "postfix" / "etc"
    postfix_dir.mkdir(parents=True)
    _make_postfix_dirs(root / "postfix")
    auth_socket = root / "tls" / "run" / "auth-postfix"
    (postfix_dir / "main.cf").write_text(
        _postfix_main(
            root=root / "postfix",
            cert=cert,
            auth_socket=auth_socket,
            delivery=_delivery(root, mail_root, mail_pw, user),
        )
    )
    (postfix_dir / "master.cf").write_text(
        _POSTFIX_MASTER.format(
            submission=f"{host}:{ports['submission']}",
            smtps=f"{host}:{ports['smtps']}",
            envelope=f"{host}:{ports['envelope']}",
            sender_logins=_sender_logins(root, user, quoting_user),
        )
    )
    # Postfix re-reads a configuration file changed within the current second,
    # sleeping 300 ms between reads (it may still be being written): about 2 s.
    past = time.time() - 60
    for cf in postfix_dir.iterdir():
        os.utime(cf, (past, past))

    for name, addresses in (
        ("tls", [(logindisabled_host, ports["logindisabled"]), (host, ports["imaps"])]),
        ("plain", [(host, ports["imap_plain"])]),
    ):
        logs = [root / name / "dovecot.log", root / name / "stdout.log"]
        _wait_listening(addresses, what=f"Dovecot {name!r}", logs=logs, exited=procs[name].poll)
    # Postfix after Dovecot: its SASL goes through the `tls` instance's auth socket.
    start_log = root / "postfix" / "start.log"
    with start_log.open("ab") as out:
        started = subprocess.run(
            [postfix, "-c", str(postfix_dir), "start"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            close_fds=True,
            timeout=READY_TIMEOUT,
            check=False,
        )
    daemons.postfix_dir, daemons.postfix_bin = postfix_dir, postfix
    if started.returncode != 0:
        pytest.fail(
            f"`postfix -c {postfix_dir} start` exited with {started.returncode}:\n"
            f"{_tail(start_log)}\n--- maillog\n{_tail(root / 'postfix' / 'maillog')}",
            pytrace=False,
        )
    _wait_listening(
        [(host, ports["submission"]), (host, ports["smtps"]), (host, ports["envelope"])],
        what="Postfix",
        logs=[start_log, root / "postfix" / "maillog"],
    )
    _wait_banner(host, ports["submission"], logs=[start_log, root / "postfix" / "maillog"])
    return MailServers(
        host=host,
        imaps_port=ports["imaps"],
        logindisabled_host=logindisabled_host,
        logindisabled_port=ports["logindisabled"],
        imap_plain_port=ports["imap_plain"],
        submission_port=ports["submission"],
        smtps_port=ports["smtps"],
        user=user,
        quoting_user=quoting_user,
        ca_file=ca_file,
        root=root,
        seeded_messages=1,
        envelope_port=ports["envelope"],
        rotating_user=rotating_user,
    )
