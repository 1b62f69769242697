"""Probe TLS contexts are built once per process, off the event loop (bench/RESULTS.md).

Building a verifying context reads the system CA store (about 15 ms of CPU); built per
connection in the event loop it stalled every other probe.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest

from provision import tls
from provision.sandbox.ca import SandboxCA


async def test_one_context_per_ca_file_and_mode(ca_file: Path) -> None:
    first, again = await asyncio.gather(tls.probe_context(ca_file), tls.probe_context(ca_file))
    assert first is again
    assert first.verify_mode == ssl.CERT_REQUIRED
    assert first.check_hostname
    unverified = await tls.probe_context(ca_file, verify=False)
    assert unverified is not first
    assert unverified.verify_mode == ssl.CERT_NONE


async def test_a_rewritten_ca_file_is_read_again(tmp_path: Path) -> None:
    path = SandboxCA.create().write_ca(tmp_path / "ca.pem")
    before = await tls.probe_context(path)
    written = path.stat().st_mtime_ns
    SandboxCA.create().write_ca(path)  # another CA, same path (and likely same size)
    # File times tick once per kernel clock tick: make the second write look later.
    os.utime(path, ns=(written + 10**9, written + 10**9))
    after = await tls.probe_context(path)
    assert after is not before
    assert after.get_ca_certs()[-1] != before.get_ca_certs()[-1]


async def test_a_missing_ca_file_fails_every_time_until_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "later.pem"
    for _ in range(2):
        with pytest.raises(OSError, match="No such file"):
            await tls.probe_context(path)
    SandboxCA.create().write_ca(path)
    assert (await tls.probe_context(path)).verify_mode == ssl.CERT_REQUIRED


def test_the_imap_context_reads_no_ca_store() -> None:
    ctx = tls.imap_context()
    assert ctx is tls.imap_context()
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.get_ca_certs() == []


async def test_a_built_context_is_handed_over_without_waking_the_loop(
    ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await tls.probe_context(ca_file)
    wrapped: list[object] = []
    original = asyncio.wrap_future

    def wrap_future(future: object) -> object:
        wrapped.append(future)
        return original(future)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    woken: list[object] = []
    monkeypatch.setattr(tls.asyncio, "wrap_future", wrap_future)
    wake = loop.call_soon_threadsafe
    monkeypatch.setattr(
        loop, "call_soon_threadsafe", lambda *a, **k: woken.append(a) or wake(*a, **k)
    )
    again = [await tls.probe_context(ca_file) for _ in range(5)]
    monkeypatch.undo()
    assert again == [first] * 5
    assert wrapped == []  # done: its result directly, no asyncio future chained to it
    assert woken == []
