"""Writes that must not simply be repeated (a create, a delete): the retry loop, read-back first.

A POST or DELETE that failed with a 5xx, a timeout or a transport error may have
been applied; repeating it blindly would duplicate an inbox or hide a delete.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from provision.errors import RocketChatUnavailableError
from provision.rocketchat.replies import Scrubber
from provision.rocketchat.transport import Transport

__all__ = ["write_unrepeated"]

logger = logging.getLogger("provision.rocketchat")

T = TypeVar("T")


async def write_unrepeated(
    transport: Transport,
    errors: Scrubber,
    method: str,
    path: str,
    applied: Callable[[RocketChatUnavailableError], Awaitable[T | None]],
    *,
    json_body: Any = None,
    kept: str,
) -> tuple[dict[str, Any] | None, T | None, int]:
    """Send a write that must not simply be repeated (a create, a delete).

    After a 5xx, a timeout or a transport error ``applied`` reads back; the write
    is sent again only when it answers ``None`` (not applied), within the retry
    policy and the deadline.

    Returns:
        ``(answer, None, attempts)``, or ``(None, read-back value, attempts)`` when
        a failed attempt turned out to have applied.

    Raises:
        RocketChatUnavailableError: ``write_state="not-applied"`` after the last
            attempt (``kept`` says what the read-back showed).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            data = await transport.call(method, path, json_body=json_body, attempts=1)
            return data, None, attempt
        except RocketChatUnavailableError as exc:
            # Never connected: nothing to read back, the write cannot have happened.
            found = await applied(exc) if exc.request_sent else None
            if found is not None:
                logger.debug("%s %s failed but the read-back shows it applied", method, path)
                return None, found, attempt
            delay = transport.backoff(attempt)
            if attempt >= transport.retry.attempts or not transport.fits(delay):
                why = (
                    f"a read-back shows {kept}"
                    if exc.request_sent
                    else "the request never reached the server, nothing was written"
                )
                raise errors.error(
                    RocketChatUnavailableError,
                    f"{exc.message}; {why}",
                    write_state="not-applied",
                    request_sent=exc.request_sent,
                    status=exc.status,
                    method=method,
                    path=path,
                ) from exc
            await transport.sleep(delay)
