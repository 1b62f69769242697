"""What the probes of one run share: credential-free checks whose outcome depends on the
server only, never on the inbox.

A hundred inboxes on one IMAP server present one certificate: the verifying handshake
of the certificate check is the same for all of them, so a run makes it once per
(address, name, trust, certificate) and every inbox reports its outcome. A host name
is resolved once per run and port, as a resolver cache would answer (the default
executor has 6 threads: 200 uncached lookups would queue behind each other). Within
:func:`run_scope` (``commands.check.probe_all``) checks are shared; outside it (a probe
called alone) each probe makes its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = ["run_scope", "shared"]

T = TypeVar("T")

_RUN: ContextVar[dict[Hashable, asyncio.Task[Any]] | None] = ContextVar(
    "provision_run_checks", default=None
)


@contextlib.asynccontextmanager
async def run_scope() -> AsyncIterator[None]:
    """Share checks among the probes started inside (tasks copy the context when made).

    On exit, a check that no probe waits for any more (its probes were abandoned at
    the deadline) is cancelled.
    """
    checks: dict[Hashable, asyncio.Task[Any]] = {}
    token = _RUN.set(checks)
    try:
        yield
    finally:
        _RUN.reset(token)
        pending = [task for task in checks.values() if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in checks.values():  # an error nobody waited for is not worth a log line
            if not task.cancelled():
                task.exception()


async def shared(key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``await start()``, made once per run for ``key``: later callers wait for the first.

    A caller that is cancelled (its step cap, the deadline) stops waiting; the shared
    work goes on for the others, and :func:`run_scope` ends it if nobody is left.
    """
    checks = _RUN.get()
    if checks is None:
        return await start()
    task = checks.get(key)
    if task is None:
        task = checks[key] = asyncio.create_task(start())
    result: T = await asyncio.shield(task)
    return result
