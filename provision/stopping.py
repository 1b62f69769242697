"""Stopping a run on SIGINT, SIGTERM or SIGHUP: the first signal stops in order, a second at once.

The first signal asks the run to stop (:class:`Stop`): no new work starts, probes and
reads in flight are cancelled, a Rocket.Chat write in flight (:meth:`Stop.write`) gets
:data:`GRACE` seconds, never past the run's deadline, to answer, and the command writes
its whole report with each inbox's true state. The exit code is 128 + the signal number
(130, 143, 129). A second signal ends the process at once with its own code, after the
cleanups registered with :func:`on_abort` (the sandbox's password and token files).

Handlers are Python-level (``signal.signal``) for the whole command, not only while the
event loop runs: a signal while the report is being written waits for it to be written.

Installing them imports nothing of asyncio (the methods that need it import it): the
command line installs them before its first connections, which it dials while asyncio
loads (``probes._early``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import Executor

__all__ = [
    "GRACE",
    "READ_BACK",
    "SIGNALS",
    "Stop",
    "Stopped",
    "WriteAbandoned",
    "handling_signals",
    "on_abort",
    "threads_left",
]

T = TypeVar("T")

#: The signals that stop a run (Ctrl-C; CI cancel, ``timeout``, ``docker stop``; a closed terminal).
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds a write in flight may still take once a stop is asked for.
GRACE = 3.0
#: Seconds to read back a write that did not answer within the grace.
READ_BACK = 1.0

_abort_hooks: list[Callable[[], None]] = []


class Stopped(Exception):
    """A stop cut a :meth:`Stop.stoppable` block short."""


class WriteAbandoned(Exception):
    """A write in flight did not answer within the grace; it was abandoned (maybe applied)."""


class Stop:
    """A run's stop request: which signal asked, and the grace left for writes in flight.

    A command's core takes one (``stop=``) and a fresh one never fires, so library
    callers need none. :meth:`request` is what a signal calls; tests may call it too.

    Attributes:
        signal: the first signal received, ``None`` while the run goes on.
        deadline: the run's deadline (``time.monotonic()``): the grace never passes it.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.deadline: float | None = None
        self._grace_end = 0.0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing: set[asyncio.Task[Any]] = set()
        self._scoped: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._pipe: tuple[int, int] | None = None
        self._previous_wakeup = -1
        #: Signal handlers are installed (:func:`handling_signals`).
        self.handling = False
        self._blocking = False

    @property
    def requested(self) -> bool:
        """A stop was asked for."""
        return self.signal is not None

    @property
    def name(self) -> str | None:
        """``"SIGTERM"``, ``"SIGINT"``, ``"SIGHUP"``, or ``None``."""
        return self.signal.name if self.signal is not None else None

    @property
    def exit_code(self) -> int:
        """128 + the signal number (0 while not stopped)."""
        return 128 + int(self.signal) if self.signal is not None else 0

    def request(self, signum: int) -> None:
        """Ask the run to stop (the first call counts); safe from a signal handler."""
        if self.signal is not None:
            return
        end = time.monotonic() + GRACE
        if self.deadline is not None:
            end = min(end, self.deadline)
        self._grace_end = end  # before ``signal``: whoever sees the stop sees its grace
        self.signal = signal.Signals(signum)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
        for task in self._scoped - self._writing:
            self._cut.add(task)
            task.cancel()

    @contextlib.asynccontextmanager
    async def stoppable(self) -> AsyncIterator[None]:
        """A block (reads, logins) that a stop cancels at once.

        Raises:
            Stopped: a stop was asked for before or during the block.
        """
        import asyncio

        task = asyncio.current_task()
        self._ensure_event()  # so that a stop reaches this loop
        if self.requested:
            raise Stopped
        if task is None:
            yield
            return
        self._scoped.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            task.uncancel()
            raise Stopped from None
        finally:
            self._scoped.discard(task)
            self._cut.discard(task)

    def _ensure_event(self) -> asyncio.Event:
        """The event a stop sets, made in the running loop (set at once if stopped)."""
        import asyncio

        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
            if self.signal is not None:
                self._event.set()
        return self._event

    def bind(self) -> None:
        """Take over the running loop for a command (:meth:`run`): signals wake it, and
        cancellations after a stop print nothing."""
        import asyncio

        self._ensure_event()
        loop = asyncio.get_running_loop()

        def quiet_after_stop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # A stop cancels work mid-protocol; a library callback that trips over the
            # cancellation is expected then, and must not print a traceback.
            if self.requested and isinstance(context.get("exception"), asyncio.CancelledError):
                return
            loop.default_exception_handler(context)

        loop.set_exception_handler(quiet_after_stop)
        self._watch(loop)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the loop on a signal, whichever thread the kernel delivered it to.

        The handler itself runs in the main thread, but only once that thread runs
        Python code; a signal taken by a resolver thread would leave the loop asleep.
        The C-level handler writes to the wakeup fd, which the loop watches.
        """
        if not self.handling or threading.current_thread() is not threading.main_thread():
            return
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        loop.add_reader(read, _drain, read)
        self._pipe = (read, write)

    def _unwatch(self) -> None:
        if self._pipe is None or self._loop is None:
            return
        read, write = self._pipe
        self._pipe = None
        signal.set_wakeup_fd(self._previous_wakeup)
        self._loop.remove_reader(read)
        os.close(read)
        os.close(write)

    def run(self, main: Coroutine[Any, Any, T], *, stoppable: bool = False) -> T:
        """``asyncio.run(main)`` with this stop bound to the loop.

        Args:
            stoppable: a stop cancels ``main`` (it unwinds, cleanups run), and
                :class:`Stopped` is raised; otherwise ``main`` handles the stop itself.
        """
        import asyncio
        import concurrent.futures

        executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=_THREADS)

        async def bound() -> T:
            self.bind()
            asyncio.get_running_loop().set_default_executor(executor)
            try:
                if not stoppable:
                    return await main
                async with self.stoppable():
                    result = await main
                return result
            finally:
                self._unwatch()
                if self.requested:
                    _leave_resolver_threads(asyncio.get_running_loop(), executor)

        try:
            return asyncio.run(bound())
        finally:
            main.close()  # never started (a stop before the loop ran): no warning

    async def wait(self) -> None:
        """Return once a stop is asked for."""
        await self._ensure_event().wait()

    async def settle(
        self, tasks: Collection[asyncio.Future[Any]], *, within: float | None = None
    ) -> bool:
        """Wait for ``tasks``; on a stop, cancel those not inside :meth:`write`.

        Writes in flight end by the grace (and their read-back); every task is done
        when this returns, except those still running after ``within`` seconds (the caller
        cancels them).

        Returns:
            Whether a stop was asked for.
        """
        import asyncio

        if not tasks:
            return self.requested
        everything = asyncio.ensure_future(asyncio.wait(tasks, timeout=within))
        stopped = asyncio.ensure_future(self.wait())
        try:
            await asyncio.wait({everything, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not self.requested:
            await everything
            return False
        everything.cancel()
        for task in tasks:
            if task not in self._writing:
                task.cancel()
        # Bounded however the writes behave: grace, read-back, then cut off.
        left = max(0.0, self._grace_end - time.monotonic()) + READ_BACK + 0.5
        _done, late = await asyncio.wait(tasks, timeout=left)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=0.5)
        return True

    async def write(self, operation: Awaitable[T]) -> T:
        """Run a write that a stop must not cut short, within the grace.

        Raises:
            WriteAbandoned: a stop came and the write did not answer within the grace;
                it was cancelled and may or may not have been applied (read it back).
        """
        import asyncio

        task = asyncio.current_task()
        inner = asyncio.ensure_future(operation)
        if task is not None:
            self._writing.add(task)
        try:
            while not inner.done():
                if not self.requested:
                    stopped = asyncio.ensure_future(self.wait())
                    try:
                        await asyncio.wait({inner, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        stopped.cancel()
                    continue
                await asyncio.wait({inner}, timeout=max(0.0, self._grace_end - time.monotonic()))
                if not inner.done():
                    inner.cancel()
                    await asyncio.gather(inner, return_exceptions=True)
                    raise WriteAbandoned
            return inner.result()
        except asyncio.CancelledError:
            inner.cancel()
            raise
        finally:
            if task is not None:
                self._writing.discard(task)

    async def write_or_read_back(
        self, operation: Awaitable[T], read_back: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        """:meth:`write`; when the grace cut it short, :meth:`read_back` decides.

        Args:
            operation: the write (a save, a delete).
            read_back: called only then: what the server shows, as the write's result
                (the id of an inbox stored as sent; ``True`` for one that is gone), or
                ``None`` when that does not show the write applied.

        Returns:
            The write's result, or the read-back's; ``None``: the outcome is unknown
            (the write may still land), also when the read-back did not answer in time.
        """
        try:
            return await self.write(operation)
        except WriteAbandoned:
            return await self.read_back(read_back())

    async def read_back(self, read: Awaitable[T | None]) -> T | None:
        """A read after an abandoned write, within :data:`READ_BACK` and the deadline.

        Returns:
            Its result, or ``None`` when it did not answer in time.
        """
        import asyncio

        limit = READ_BACK
        if self.deadline is not None:
            limit = min(limit, max(0.0, self.deadline - time.monotonic()))
        try:
            async with asyncio.timeout(limit):
                return await read
        except TimeoutError:
            return None

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A blocking call (reading standard input) that the first signal interrupts.

        The handler raises :class:`Stopped` inside it, as Ctrl-C raises
        ``KeyboardInterrupt``: a read that Python would retry after the signal (PEP 475)
        would otherwise wait on. Only for calls with nothing to clean up.
        """
        if self.requested:
            raise Stopped
        self._blocking = True
        try:
            yield
        finally:
            self._blocking = False

    # ----------------------------------------------------------------- signals

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signal is None:
            self.request(signum)
            _say(
                f"provision: {signal.Signals(signum).name} received; stopping (no new work; "
                f"writes in flight get up to {GRACE:g} s); signal again to end at once\n"
            )
            if self._blocking:
                self._blocking = False
                raise Stopped
            return
        name = signal.Signals(signum).name
        for hook in list(_abort_hooks):
            with contextlib.suppress(Exception):
                hook()
        _say(f"provision: {name} again; ended at once, the report was not written\n")
        os._exit(128 + signum)


#: Names the threads of a command's default executor (``getaddrinfo`` runs there).
_THREADS = "provision-executor"


def _leave_resolver_threads(loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
    """After a stop, do not wait for the executor's threads before the report.

    ``getaddrinfo`` cannot be cancelled; a resolver that hangs would hold the report
    back by its own timeout (``docker stop`` sends SIGKILL after 10 s). The loop gets
    an unused executor to shut down instead; :func:`threads_left` tells the CLI.
    """
    import concurrent.futures

    executor.shutdown(wait=False, cancel_futures=True)
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))


def threads_left() -> bool:
    """A stop left executor threads running (a hanging resolver): exit without them."""
    return any(t.name.startswith(_THREADS) and t.is_alive() for t in threading.enumerate())


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 512):
            pass


def _say(text: str) -> None:
    """Write to standard error unbuffered (a signal handler may interrupt a buffered write)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


@contextlib.contextmanager
def handling_signals() -> Iterator[Stop]:
    """A :class:`Stop` that SIGINT, SIGTERM and SIGHUP request while the block runs.

    Outside the main thread (a test runner's worker) no handler can be installed: the
    stop then only fires when :meth:`Stop.request` is called.
    """
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop._on_signal) for sig in SIGNALS}
    stop.handling = True
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def on_abort(hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` if a second signal ends the process while the block runs.

    For what must not outlive the process even then (files holding secrets); the
    normal way out is the block's own cleanup.
    """
    _abort_hooks.append(hook)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _abort_hooks.remove(hook)
