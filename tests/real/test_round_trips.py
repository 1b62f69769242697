"""Round trips on the wire: the probes against Postfix and Dovecot through a counting proxy.

The proxy (``tests/servers/latency_proxy.py``, the one ``bench/run.py`` uses) counts a
connection's turns: server bytes that follow client bytes. A reply the client did not
wait for (it had closed first) is no turn. A passing SMTP STARTTLS check is TCP,
greeting, EHLO, STARTTLS, TLS handshake, EHLO, AUTH: 7; a passing IMAPS check is TCP,
TLS handshake, greeting, LOGIN, SELECT + SEARCH pipelined: 5. The daemons' logs show
that QUIT and LOGOUT still reached them before the connection ended.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from provision.results import Status, Step
from tests.real.test_dovecot_postfix import explain, run_imap, run_smtp
from tests.servers.latency_proxy import Connection, LatencyProxy

if TYPE_CHECKING:
    from tests.conftest import StartProxy
    from tests.real.conftest import MailServers

pytestmark = pytest.mark.real

#: Bound on the wait for a daemon's log line (they log after the connection ended).
LOG_WAIT = 5.0


async def only_connection(proxy: LatencyProxy, what: str) -> Connection:
    assert await proxy.idle(), f"{what}: a proxied connection is still open"
    assert len(proxy.connections) == 1, proxy.connections
    return proxy.connections[0]


def log_lines_after(log: Path, offset: int, pattern: str) -> list[str]:
    """Lines written to ``log`` after ``offset`` once one matches ``pattern`` (bounded poll).

    The daemons log a connection's end after it closed, Postfix through postlogd.
    """
    give_up = time.monotonic() + LOG_WAIT
    while True:
        with log.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        if any(re.search(pattern, line) for line in lines) or time.monotonic() > give_up:
            return lines
        time.sleep(0.05)


def assert_postfix_got_quit(maillog: Path, offset: int, counts: str) -> None:
    """Postfix's end-of-session line for the probe's login: QUIT was read and answered.

    Postfix counts the commands of a session (``quit=1`` only for a QUIT it processed);
    a client that vanished first makes it log ``lost connection after ...``. Other
    lines after ``offset`` may be the tier's readiness checks (sessions without AUTH).
    """
    lines = log_lines_after(maillog, offset, r"disconnect from .* auth=1 ")
    text = "\n".join(lines)
    logins = [line for line in lines if re.search(r"disconnect from .* auth=1 ", line)]
    assert len(logins) == 1, text
    assert logins[0].endswith(f" {counts}"), text
    assert not [
        line for line in lines if "lost connection after" in line and "CONNECT" not in line
    ], text


# secure, the most round trips (TCP and the turns), Postfix's command counts.
SMTP_CASES = {
    # TCP, greeting, EHLO, STARTTLS, TLS handshake, EHLO, AUTH.
    "starttls": (False, 7, "ehlo=2 starttls=1 auth=1 quit=1 commands=5"),
    # TCP, TLS handshake, greeting, EHLO, AUTH.
    "implicit-tls": (True, 5, "ehlo=1 auth=1 quit=1 commands=3"),
}


@pytest.mark.parametrize("mode", SMTP_CASES)
async def test_smtp_check_takes_the_fewest_round_trips_and_postfix_gets_the_quit(
    mail_servers: MailServers, turn_proxy: StartProxy, mode: str
) -> None:
    secure, most, counts = SMTP_CASES[mode]
    maillog = mail_servers.root / "postfix" / "maillog"
    offset = maillog.stat().st_size
    port = mail_servers.smtps_port if secure else mail_servers.submission_port
    proxy = await turn_proxy(port)

    result = await run_smtp(mail_servers, proxy.port, secure=secure, ca_file=mail_servers.ca_file)

    assert result.status is Status.PASSED, explain(result, mail_servers)
    quit_step = result.steps[-1]
    assert quit_step.step is Step.QUIT
    assert quit_step.detail == "QUIT sent; the reply is not awaited"
    conn = await only_connection(proxy, "SMTP")
    assert conn.round_trips <= most, conn
    assert conn.after_close > 0, conn  # the 221 came, after the probe had closed
    assert_postfix_got_quit(maillog, offset, counts)


async def test_imaps_check_takes_5_round_trips_and_dovecot_logs_a_logout(
    mail_servers: MailServers, turn_proxy: StartProxy
) -> None:
    log = mail_servers.root / "tls" / "dovecot.log"
    offset = log.stat().st_size
    proxy = await turn_proxy(mail_servers.imaps_port)

    result = await run_imap(mail_servers, proxy.port, secure=True, ca_file=mail_servers.ca_file)

    assert result.status is Status.PASSED, explain(result, mail_servers)
    assert result.facts["exists"] == mail_servers.seeded_messages
    assert result.steps[-1].step is Step.QUIT
    assert result.steps[-1].detail == "LOGOUT sent; the reply is not awaited"
    await proxy.idle()
    # The session's connection and the credential-free certificate check's.
    session = max(proxy.connections, key=lambda c: c.bytes_up)
    assert len(proxy.connections) == 2, proxy.connections
    assert session.round_trips <= 5, session
    assert session.after_close > 0, session  # BYE and OK came after the probe closed
    # Dovecot ends a session with "Disconnected: Logged out" after LOGOUT, and with
    # "Disconnected: Connection closed (...)" when the client vanished without one.
    lines = log_lines_after(log, offset, r"imap\(.*Disconnected: Logged out")
    user = mail_servers.user.username
    ends = [line for line in lines if f"imap({user})" in line and "Disconnected" in line]
    assert len(ends) == 1, "\n".join(lines)
    assert "Disconnected: Logged out " in ends[0], "\n".join(lines)
