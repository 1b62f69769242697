"""The only place ``SSLContext`` objects are built, and the facts of a live TLS session.

Policy (mirrors Rocket.Chat, spec §3):

* SMTP: verification on, system store plus ``--ca-file`` (added, not replacing, as
  ``NODE_EXTRA_CA_CERTS`` does), host-name check against ``smtp.server``, TLS >= 1.2.
  Turning verification off is explicit (``ProbeOptions.smtp_verify``) and reported.
* IMAP: node-imap connects with ``rejectUnauthorized: false`` and sends no SNI, so
  the probe's own connection does not verify either; certificate problems are found
  on a second, credential-free handshake and reported as warnings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import ssl
import threading
from pathlib import Path
from typing import Any

from provision.tls_facts import cert_facts

__all__ = [
    "cert_facts",
    "imap_context",
    "probe_context",
    "session_facts",
    "verifying_context",
    "warm_probe_context",
]


def verifying_context(ca_file: Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """Context for SMTP (and for the diagnostic verification of IMAP certificates).

    Args:
        ca_file: PEM bundle trusted in addition to the system store.
        verify: ``False`` only when the user turned verification off explicitly.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.cache
def imap_context() -> ssl.SSLContext:
    """Context for IMAP ``secure: true``: node-imap's ``rejectUnauthorized: false``.

    One per process, shared by every connection; never modify it. It loads no CA
    store (nothing is verified with it): ``create_default_context`` would spend about
    15 ms of CPU reading the system store for nothing.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# Shared probe contexts by (CA file identity, verify, system-store overrides).
_ContextKey = tuple[tuple[str, int, int, int] | None, bool, str | None, str | None]
_probe_contexts: dict[_ContextKey, concurrent.futures.Future[ssl.SSLContext]] = {}
_probe_contexts_lock = threading.Lock()
_MAX_PROBE_CONTEXTS = 16


def _context_key(ca_file: Path | None, verify: bool) -> _ContextKey:
    file_id = None
    if ca_file is not None:
        try:
            st = os.stat(ca_file)
            file_id = (str(ca_file), st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            file_id = (str(ca_file), -1, -1, -1)  # building reports the error
    return (file_id, verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def _build_into(
    future: concurrent.futures.Future[ssl.SSLContext], ca_file: Path | None, verify: bool
) -> None:
    try:
        future.set_result(verifying_context(ca_file, verify=verify))
    except BaseException as exc:  # handed to every waiting probe
        future.set_exception(exc)


def warm_probe_context(
    ca_file: Path | None = None, *, verify: bool = True
) -> concurrent.futures.Future[ssl.SSLContext]:
    """Start building the shared probe context in a thread, unless built or under way."""
    key = _context_key(ca_file, verify)
    with _probe_contexts_lock:
        future = _probe_contexts.get(key)
        if future is not None and not (future.done() and future.exception() is not None):
            return future
        future = concurrent.futures.Future()
        # Running: a cancelled waiter (``wrap_future``) cannot cancel it for the others.
        future.set_running_or_notify_cancel()
        if len(_probe_contexts) >= _MAX_PROBE_CONTEXTS:  # CA files rewritten or many runs
            del _probe_contexts[next(iter(_probe_contexts))]
        _probe_contexts[key] = future
    # Not a daemon: a run that ends before the build does (every port closed) waits the
    # few ms it has left at exit, instead of finalizing the interpreter under OpenSSL
    # (a child exited -11 that way once, under load, in tests/test_metrics.py).
    threading.Thread(
        target=_build_into, args=(future, ca_file, verify), name="provision-tls", daemon=False
    ).start()
    return future


async def probe_context(ca_file: Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """:func:`verifying_context` for probe connections: one per process, shared.

    Reading the system CA store costs about 15 ms of CPU per context. Built once per
    (CA file, ``verify``) and in a worker thread (OpenSSL reads the store without
    holding the GIL), so the event loop, and every other probe on it, never stalls
    on it. Never modify the returned context (``rocketchat`` keeps its own, because
    httpx sets ALPN on the context it is given).

    Raises:
        OSError: the CA file cannot be read (``ssl.SSLError``: not PEM certificates).
    """
    future = warm_probe_context(ca_file, verify=verify)
    if future.done() and future.exception() is None:
        # Built (every probe but the first few): no asyncio future, no wake-up of the
        # loop through its self-pipe from call_soon_threadsafe (a send and a read each).
        return future.result()
    return await asyncio.wrap_future(future)


def session_facts(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None, *, certificate: bool = True
) -> dict[str, Any]:
    """Negotiated TLS version and cipher, plus certificate facts, of a live session.

    The facts come from ``getpeercert()`` when the session was verified, and from the
    DER (``cryptography``) when it was not (:func:`~provision.tls_facts.cert_facts`).
    ``certificate=False``: version and cipher only (IMAP describes its unverified
    certificate once the verifying check has seen it, see ``probes.imap``).
    """
    if ssl_object is None:
        return {}
    facts: dict[str, Any] = {"version": ssl_object.version()}
    cipher = ssl_object.cipher()
    if cipher:
        facts["cipher"] = cipher[0]
    if certificate:
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            facts["certificate"] = cert_facts(der, ssl_object.getpeercert())
    return facts
