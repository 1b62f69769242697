"""``--serve ADDR:PORT --every DURATION``: run rounds forever and serve the last one's metrics.

One event loop holds a tiny HTTP server (``GET /metrics`` only; 404 for any other path,
405 for any other method) and the round loop. Rounds never overlap: the next starts
``every`` seconds after the previous one started, or at once if it took longer (an
overrun, counted in ``provision_exporter_overruns_total`` and logged). Each round is cut
at the run deadline (plus a grace); a round that ends without a report (deadline, input
that broke since the start, Rocket.Chat down) is counted in
``provision_exporter_round_errors_total`` and the last completed round stays served.
A :class:`~provision.stopping.Stop` (SIGTERM, SIGINT, SIGHUP) ends it: a round in
progress is cancelled, the listener closed.

The round is a parameter (``Callable[[], Awaitable[Report]]``), so ``check`` and
``audit`` share this loop and tests drive it with rounds of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from provision.errors import ConfigError, ConfigProblem, ProvisionError, RocketChatCallError
from provision.render.metrics import ReportCollector
from provision.stopping import Stop

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from provision.results import Report

__all__ = ["Exporter", "parse_duration", "parse_listen"]

#: Extra time past the run deadline before a round that ignored it is cut.
_GRACE = 5.0
#: A request head larger than this, or slower than this many seconds, is dropped.
_HEAD_LIMIT = 16 * 1024
_HEAD_TIMEOUT = 10.0
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what every Prometheus reads
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``1.5s`` -> seconds.

    Raises:
        ValueError: not a positive number with a unit ``s``, ``m`` or ``h``.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--every {text!r}: give a number and a unit, e.g. 30s, 5m or 1h")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"--every {text!r}: the interval must be longer than 0")
    return seconds


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``127.0.0.1:9188``, ``[::1]:9188``, ``:9188`` for every address).

    Port 0 lets the system choose (the exporter announces the port it got).

    Raises:
        ValueError: no port, or not one of 0-65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--serve {text!r}: give ADDR:PORT, e.g. 127.0.0.1:9188 or :9188")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"--serve {text!r}: write an IPv6 address in brackets, [::1]:9188")
    return host, int(port)


class Exporter:
    """The rounds and their metrics: state, collector and the loop that runs both.

    Args:
        one_round: runs one round and returns its report.
        command: the command label (``check``, ``audit``).
        every: seconds from the start of one round to the start of the next.
        deadline: the run deadline of one round (``--timeout``), in seconds.
        log: where the one-line round summaries go (standard error); never a secret.
        grace: extra seconds past ``deadline`` before a round is cut.
        quiet: log only the rounds that did not pass (``--quiet``).
    """

    def __init__(
        self,
        one_round: Callable[[], Awaitable[Report]],
        *,
        command: str,
        every: float,
        deadline: float,
        log: Callable[[str], None],
        grace: float = _GRACE,
        quiet: bool = False,
    ) -> None:
        self.one_round = one_round
        #: ``--quiet``: a round that passed logs nothing (errors and overruns always do).
        self.quiet = quiet
        self.grace = grace
        self.command = command
        self.every = every
        self.deadline = deadline
        self.log = log
        self.started = 0
        self.completed = 0
        self.errors = 0
        self.overruns = 0
        self.running = False
        self.last: ReportCollector | None = None
        self.address: tuple[str, int] | None = None
        self.stopped_by: str | None = None
        #: Notified after every round (tests and callers wait on it, never on time).
        self.changed = asyncio.Condition()
        #: Set once the listener is bound (``address`` holds the port it got).
        self.listening = asyncio.Event()

    # --- metrics ------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        labels = [self.command]
        for name, help_text, value in (
            ("provision_exporter_rounds", "Rounds completed with a report.", self.completed),
            (
                "provision_exporter_round_errors",
                "Rounds that ended without a report (deadline, bad input, Rocket.Chat).",
                self.errors,
            ),
            (
                "provision_exporter_overruns",
                "Rounds that took longer than --every (the next one started late).",
                self.overruns,
            ),
        ):
            counter = CounterMetricFamily(name, help_text, labels=["command"])
            counter.add_metric(labels, float(value))
            yield counter
        for name, help_text, number in (
            ("provision_exporter_round_running", "1 while a round runs.", float(self.running)),
            ("provision_exporter_interval_seconds", "The --every interval.", self.every),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=["command"])
            gauge.add_metric(labels, number)
            yield gauge
        if self.last is not None:  # before the first round: no run or inbox series
            yield from self.last.collect()

    def exposition(self) -> bytes:
        """The text exposition of the exporter's state and the last completed round."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        body: bytes = generate_latest(registry)
        return body

    # --- running ------------------------------------------------------------------

    async def run(self, host: str, port: int, *, stop: asyncio.Event | Stop | None = None) -> None:
        """Listen, run rounds until ``stop`` fires: a :class:`~provision.stopping.Stop`
        (SIGTERM, SIGINT, SIGHUP under ``handling_signals``) or an event set by the caller.

        Raises:
            ConfigError: the address cannot be listened on (in use, not this host's).
        """
        stop = stop or asyncio.Event()
        try:
            server = await asyncio.start_server(self._serve, host or None, port, limit=_HEAD_LIMIT)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            reason = exc.strerror or type(exc).__name__
            problem = ConfigProblem(f"--serve: cannot listen on {shown}: {reason}")
            raise ConfigError([problem]) from None
        bound = server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        self.listening.set()
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        self.log(f"serving http://{shown}:{bound[1]}/metrics, a round every {self.every:g} s")
        rounds = asyncio.create_task(self._rounds())
        waiter = asyncio.create_task(stop.wait())
        try:
            # The rounds end only on a bug: never go on serving a stale round after one.
            await asyncio.wait((rounds, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            asked = waiter.done() and not waiter.cancelled()
            rounds.cancel()
            waiter.cancel()
            await asyncio.gather(rounds, waiter, return_exceptions=True)
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_HEAD_TIMEOUT):
                    await server.wait_closed()
        # After a stop, a round cut short may end in any error (Stopped): that is the stop.
        bug = None if asked or rounds.cancelled() else rounds.exception()
        if bug is not None:
            raise bug
        self.stopped_by = stop.name if isinstance(stop, Stop) else None
        by = f" by {self.stopped_by}" if self.stopped_by else ""
        self.log(f"stopped{by} after {self.completed} rounds")

    async def _rounds(self) -> None:
        """Round after round until cancelled (by :meth:`run`, on a stop)."""
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await self._one()
            took = loop.time() - began
            if took > self.every:
                self.overruns += 1
                self.log(
                    f"round {self.started} took {took:.1f} s, longer than --every "
                    f"{self.every:g} s: the next one starts now"
                )
            async with self.changed:
                self.changed.notify_all()
            await asyncio.sleep(max(0.0, began + self.every - loop.time()))

    async def _one(self) -> None:
        self.started += 1
        number = self.started
        self.running = True
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.deadline + self.grace):
                report = await self.one_round()
        except TimeoutError:
            self.errors += 1
            self.log(f"round {number}: no report within the deadline ({self.deadline:g} s)")
            return
        except ConfigError as exc:
            self.errors += 1
            problems = "; ".join(str(p) for p in exc.problems)
            self.log(f"round {number}: bad input, last round kept: {problems}")
            return
        except RocketChatCallError as exc:  # audit: Rocket.Chat unreachable or refusing
            self.errors += 1
            hint = f" ({exc.hint})" if exc.hint else ""
            self.log(f"round {number}: Rocket.Chat: {exc.message}{hint}; last round kept")
            return
        except ProvisionError as exc:
            self.errors += 1
            self.log(f"round {number}: {type(exc).__name__}; last round kept")
            return
        finally:
            self.running = False
        self.completed += 1
        self.last = ReportCollector(report)
        failed = sum(1 for i in report.inboxes if i.exit_code(strict=report.strict))
        count = len(report.inboxes)
        if self.quiet and int(report.exit_code) == 0:
            return
        self.log(
            f"round {number}: {count} inbox{'' if count == 1 else 'es'}, {failed} failed, "
            f"exit {int(report.exit_code)}, {time.perf_counter() - began:.1f} s"
        )

    # --- HTTP ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, extra = self._answer(head)
            lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
            lines += extra
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
            if not head.startswith(b"HEAD "):
                writer.write(body)
            async with asyncio.timeout(_HEAD_TIMEOUT):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a slow, short or oversized request: dropped without an answer
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(_HEAD_TIMEOUT):
                    await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[str, bytes, list[str]]:
        """Status, body and extra headers for a request head (the path is never echoed)."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return "400 Bad Request", b"bad request\n", ["Content-Type: text/plain"]
        method, target = parts[0], parts[1]
        if target.split(b"?", 1)[0] != b"/metrics":
            return (
                "404 Not Found",
                b"not found: the metrics are at /metrics\n",
                ["Content-Type: text/plain"],
            )
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", b"use GET\n", ["Allow: GET, HEAD"]
        return "200 OK", self.exposition(), [f"Content-Type: {_CONTENT_TYPE}"]
