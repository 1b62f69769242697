"""How the client talks HTTP: origin policy, redirects, body cap, deadline, retries.

Kept by hand rather than handed to libraries (measured when this package was made):
httpx follows redirects only after reading each redirect's whole body
(``await response.aread()``, past any cap) and strips only ``Authorization`` across
origins, not ``X-Auth-Token``; stamina (about 10 ms to import) and tenacity (about
7 ms) cannot express "a 429 wait is not an attempt" with the run's deadline and the
injected sleep and jitter without as much code as the loop itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from provision._version import __version__
from provision.errors import (
    RocketChatCallError,
    RocketChatProtocolError,
    RocketChatRateLimitedError,
    RocketChatRedirectError,
    RocketChatTlsError,
    RocketChatUnavailableError,
)
from provision.results import FailureClass
from provision.rocketchat.credentials import check_url
from provision.rocketchat.replies import Scrubber, interpret, wait_told
from provision.tls import verifying_context
from provision.tls_failures import classify_tls_error

if TYPE_CHECKING:
    from provision.models import ProbeOptions

__all__ = ["RetryPolicy", "RocketChatOptions", "Sleep", "Transport", "make_http_client"]

logger = logging.getLogger("provision.rocketchat")

_MAX_REDIRECTS: Final = 5
_MAX_RATE_LIMIT_WAITS: Final = 3
#: Largest answer body read; a page of 100 inboxes is some 100 KiB. A bigger one is
#: not Rocket.Chat's (or is hostile) and is not held in memory.
_MAX_BODY: Final = 8 * 1024 * 1024
#: Added to a rate-limit wait so that the retry lands after the window reset.
_RESET_MARGIN: Final = 0.02
#: Transport errors raised before the request left: a write cannot have happened.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How hard to try.

    Attributes:
        attempts: tries for an idempotent request (and POST attempts after a
            read-back showed the write did not happen).
        backoff: first back-off in seconds; doubled per attempt.
        max_backoff: cap on one back-off.
        max_rate_limit_wait: longest wait for a rate-limit reset, in seconds.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_rate_limit_wait: float = 65.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RocketChatOptions:
    """How the client reaches Rocket.Chat.

    Attributes:
        step_timeout: seconds for each HTTP connect/read/write.
        ca_file: extra CA certificates (PEM) trusted besides the system store.
        allow_http: accept plain HTTP to a non-loopback host.
        retry: retry and back-off policy.
    """

    step_timeout: float = 10.0
    ca_file: Path | None = None
    allow_http: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def like_probes(cls, options: ProbeOptions, *, allow_http: bool = False) -> RocketChatOptions:
        """The step cap and CA file of a run's probes (``set``, ``audit``)."""
        return cls(
            step_timeout=options.step_timeout, ca_file=options.ca_file, allow_http=allow_http
        )


def make_http_client(
    url: str,
    *,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    allow_http: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """Build the ``httpx.AsyncClient`` a ``RocketChat`` runs on.

    Certificates are verified (system store plus ``ca_file``, see
    :func:`provision.tls.verifying_context`), redirects are never followed
    automatically (:class:`Transport` handles them), and proxy/netrc settings of
    the environment are ignored.

    Args:
        url: the server URL, checked by :func:`~provision.rocketchat.credentials.check_url`.
        ca_file: extra CA certificates (PEM).
        timeout: seconds for each connect/read/write.
        allow_http: accept plain HTTP to a non-loopback host.
        transport: a transport for tests.

    Raises:
        ConfigError: the URL is refused.
    """
    base = check_url(url, allow_http=allow_http)
    return httpx.AsyncClient(
        base_url=base,
        verify=verifying_context(ca_file),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": f"provision/{__version__}", "Accept": "application/json"},
        transport=transport,
    )


async def _read_body(response: httpx.Response, limit: int = _MAX_BODY) -> bool:
    """Read a streamed body into ``response`` unless it exceeds ``limit`` bytes.

    Returns:
        ``False`` when the body is larger (declared or as it arrives); it is then not kept.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return False
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return False
        chunks.append(chunk)
    # What ``Response.aread`` does, within the limit: later reads see this content.
    response._content = b"".join(chunks)
    return True


@dataclass(slots=True, kw_only=True)
class Transport:
    """API calls on one ``httpx.AsyncClient``: answers as data, failures as errors.

    Attributes:
        http: the HTTP client (see :func:`make_http_client`).
        errors: makes every error (scrubbed of the secrets it knows).
        token_auth: the credentials are a given token (changes a 401's hint).
        retry: retry and back-off policy.
        deadline: ``time.monotonic()`` value after which no wait or retry starts.
        sleep: the sleep function (tests may inject one).
        rng: uniform ``[0, 1)`` source for back-off jitter.
        auth: ``(user_id, token)`` sent as ``X-User-Id``/``X-Auth-Token`` once known.
    """

    http: httpx.AsyncClient
    errors: Scrubber
    token_auth: bool
    retry: RetryPolicy
    deadline: float | None
    sleep: Sleep
    rng: Callable[[], float] = random.random
    auth: tuple[str, str] | None = None

    def time_left(self) -> float | None:
        """Seconds before the deadline (``None``: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def fits(self, delay: float) -> bool:
        """A wait of ``delay`` seconds ends before the deadline."""
        return self.deadline is None or time.monotonic() + delay <= self.deadline

    def backoff(self, attempt: int) -> float:
        """Capped exponential back-off with jitter (half fixed, half random)."""
        base = min(self.retry.max_backoff, self.retry.backoff * 2.0 ** (attempt - 1))
        return base / 2 + base / 2 * self.rng()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        auth: bool = True,
        attempts: int | None = None,
        rate_limit_waits: int = _MAX_RATE_LIMIT_WAITS,
    ) -> dict[str, Any]:
        """One API call with retries (5xx/transport) and rate-limit waits.

        ``attempts`` of 1 disables the 5xx retry (writes); 429 is waited out (at most
        ``rate_limit_waits`` times) when the reset fits the deadline, because a limited
        request was not processed (spec §1.1: the limiter runs before the handler).
        Each wait is announced with one warning on the ``provision.rocketchat`` logger
        (the command line shows it on stderr): a silent minute looks like a hang.
        """
        tries = attempts or self.retry.attempts
        attempt = 0
        waits = 0
        while True:
            attempt += 1
            try:
                response = await self._send(method, path, params, json_body, auth=auth)
                return interpret(self.errors, method, path, response, token_auth=self.token_auth)
            except RocketChatRateLimitedError as exc:
                planned = self._rate_limit_wait(exc)
                if waits >= rate_limit_waits or planned is None:
                    raise
                wait, source = planned
                waits += 1
                attempt -= 1
                logger.warning("Rocket.Chat rate limit: waiting %.1f s (%s)", wait, source)
                await self.sleep(wait)
            except RocketChatUnavailableError:
                delay = self.backoff(attempt)
                if attempt >= tries or not self.fits(delay):
                    raise
                logger.debug("%s %s failed; retrying in %.2f s", method, path, delay)
                await self.sleep(delay)

    def _rate_limit_wait(self, exc: RocketChatRateLimitedError) -> tuple[float, str] | None:
        """Seconds to wait for the reset and what said so, or ``None`` when it does not fit."""
        seconds: float | None = None
        source = "X-RateLimit-Reset"
        if exc.reset_at is not None:
            seconds = exc.reset_at - time.time()
        relative = wait_told(exc.error)
        # "You must wait N seconds" is relative: trust it over a skewed clock.
        if relative is not None and (seconds is None or not 0 <= seconds <= relative + 1):
            seconds, source = relative, "the server's 'You must wait' message"
        if seconds is None:
            return None
        seconds = max(seconds, 0.0) + _RESET_MARGIN
        if seconds > self.retry.max_rate_limit_wait or not self.fits(seconds):
            return None
        return seconds, source

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        *,
        auth: bool,
    ) -> httpx.Response:
        """Send, following same-origin redirects only; map transport errors."""
        headers: dict[str, str] = {}
        if auth and self.auth is not None:
            user_id, token = self.auth
            headers["X-Auth-Token"] = token
            headers["X-User-Id"] = user_id
        url: httpx.URL | str = path
        current_method = method
        for _ in range(_MAX_REDIRECTS + 1):
            request = self.http.build_request(
                current_method,
                url,
                params=params,
                json=json_body,
                headers=headers,
            )
            started = time.perf_counter()
            try:
                # The whole exchange, body included, ends by the run's deadline: httpx's
                # timeout is per read, and a body trickling in would outlast any run.
                async with asyncio.timeout(self.time_left()):
                    response = await self.http.send(request, stream=True)
                    try:
                        complete = await _read_body(response)
                    finally:
                        await response.aclose()
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, method, path, request.url) from exc
            except TimeoutError:
                raise self.errors.error(
                    RocketChatUnavailableError,
                    f"Rocket.Chat {method} {path}: no complete answer before the run's deadline",
                    hint="raise --timeout, or check the server's load",
                    method=method,
                    path=path,
                ) from None
            if not complete:
                status = response.status_code
                raise self.errors.error(
                    RocketChatUnavailableError if status >= 500 else RocketChatProtocolError,
                    f"Rocket.Chat answered {method} {path} with HTTP {status} and a body over "
                    f"{_MAX_BODY // 2**20} MiB; too large, not read",
                    hint="check that the URL points at Rocket.Chat itself, not a proxy",
                    status=status,
                    method=method,
                    path=path,
                )
            logger.debug(
                "%s %s -> %s in %.0f ms",
                current_method,
                path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            location = response.headers.get("location")
            if not (response.is_redirect and location):
                return response
            target = request.url.join(location)
            if (target.scheme, target.host, target.port) != (
                request.url.scheme,
                request.url.host,
                request.url.port,
            ):
                # Never carry the token to another scheme or host (issue 3, item 1).
                port = f":{target.port}" if target.port else ""
                raise self.errors.error(
                    RocketChatRedirectError,
                    f"Rocket.Chat redirected {method} {path} to {target.scheme}://"
                    f"{target.host}{port}; not followed, credentials are never sent to "
                    "another origin",
                    status=response.status_code,
                    hint="if that address is the right one, use it as the server URL",
                    method=method,
                    path=path,
                )
            if current_method != "GET" and response.status_code not in (307, 308):
                raise self.errors.error(
                    RocketChatRedirectError,
                    f"Rocket.Chat redirected {method} {path} with HTTP "
                    f"{response.status_code}, which would drop the request body; not followed",
                    status=response.status_code,
                    method=method,
                    path=path,
                )
            url, params = target, None
        raise self.errors.error(
            RocketChatRedirectError,
            f"too many redirects for {method} {path}",
            method=method,
            path=path,
        )

    def _transport_error(
        self, exc: httpx.HTTPError, method: str, path: str, url: httpx.URL
    ) -> RocketChatCallError:
        """Translate an httpx exception; its text never holds headers or bodies."""
        tls = classify_tls_error(exc, server=url.host)
        if tls is not None:
            error: RocketChatCallError = self.errors.error(
                RocketChatTlsError,
                f"TLS with Rocket.Chat failed: {tls.message}",
                hint=_tls_hint(tls.cls, self.http.base_url),
                method=method,
                path=path,
            )
            return error
        if isinstance(exc, httpx.TimeoutException):
            what = f"timed out ({type(exc).__name__})"
        elif isinstance(exc, httpx.ConnectError):
            what = f"could not connect ({exc or type(exc).__name__})"
        else:
            what = f"transport error ({type(exc).__name__}: {exc})"
        error = self.errors.error(
            RocketChatUnavailableError,
            f"Rocket.Chat {method} {path}: {what}",
            request_sent=not isinstance(exc, _NOT_SENT),
            method=method,
            path=path,
        )
        return error


def _tls_hint(failure: FailureClass, base: httpx.URL) -> str:
    """What fixes a failed handshake with Rocket.Chat: the class decides, not one advice."""
    if failure is FailureClass.TLS_ON_PLAINTEXT_PORT:
        # "wrong version number": the port answered the ClientHello in plain HTTP, as
        # Rocket.Chat's own port 3000 does behind no proxy.
        port = base.port or 443
        plain = base.copy_with(scheme="http", port=port)
        return (
            f"the server answers plain HTTP on port {port}, not HTTPS: use "
            f"{str(plain).rstrip('/')} (with --allow-http unless it is on this machine; "
            "the token then travels in clear), or the HTTPS address of its proxy"
        )
    if failure is FailureClass.CERT_HOSTNAME:
        return "use the host name the certificate is issued for in the server URL"
    if failure is FailureClass.CERT_EXPIRED:
        return "the server's certificate is expired (or not yet valid): renew it"
    if failure is FailureClass.TLS_PROTOCOL:
        return "the server offers no TLS 1.2 or newer with a common cipher; update its TLS setup"
    return "pass the CA that signed the server certificate with --ca-file"
