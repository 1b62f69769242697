"""Timing and capping of probe steps.

Every network step runs inside :meth:`Recorder.step`, which caps it with the
smaller of the per-step cap and what is left of the run's overall deadline,
records a :class:`~provision.results.StepResult`, and turns a timeout into a
:class:`StepTimeout` that names the step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from provision.results import Stage, StageResult, Status, Step, StepResult

__all__ = ["Recorder", "StepInfo", "StepTimeout", "early_mode_check_after"]


class StepTimeout(Exception):
    """A step got no answer within its cap (or the overall deadline ran out)."""

    def __init__(self, step: Step, cap: float, *, deadline: bool) -> None:
        self.step = step
        self.cap = cap
        self.deadline = deadline
        what = "the overall deadline" if deadline else "the step cap"
        super().__init__(f"{step.value}: no answer within {cap:.1f} s ({what})")


@dataclass(slots=True)
class StepInfo:
    """Handle given to the body of a step: set ``detail`` to annotate the result;
    ``ended``: when the work really ended (``perf_counter``), if it ended elsewhere
    before the body saw it (a lookup made by a thread before the loop ran)."""

    detail: str | None = None
    status: Status = Status.PASSED
    ended: float | None = None


@dataclass(slots=True)
class Recorder:
    """Collects the steps of one stage under a deadline (event-loop time)."""

    stage: Stage
    deadline: float
    step_timeout: float
    result: StageResult = field(init=False)
    _started: float = field(init=False)

    def __post_init__(self) -> None:
        self.result = StageResult(stage=self.stage)
        self._started = time.perf_counter()

    def remaining(self) -> float:
        """Seconds left before the overall deadline."""
        return self.deadline - asyncio.get_running_loop().time()

    @asynccontextmanager
    async def step(
        self,
        step: Step,
        *,
        cap: float | None = None,
        address: str | None = None,
        since: float | None = None,
    ) -> AsyncIterator[StepInfo]:
        """Run one step, timed and capped; re-raise its errors after recording them.

        ``since``: the ``perf_counter`` time the step really began, when that was before
        the event loop (``_early``): its time and its cap count from then.
        """
        full = limit = self.step_timeout if cap is None else cap
        start = time.perf_counter()
        if since is not None and since < start:
            limit, start = max(0.0, limit - (start - since)), since
            self._started = min(self._started, since)  # the stage began with the step
        remaining = self.remaining()
        by_deadline = remaining < limit
        effective = max(0.0, min(limit, remaining))
        info = StepInfo()
        try:
            async with asyncio.timeout(effective):
                yield info
        except TimeoutError as exc:
            self._record(step, Status.FAILED, start, info.detail or "timed out", address)
            # The step cap the user set, even when part of it ran before the loop (since).
            shown = effective if by_deadline else full
            raise StepTimeout(step, shown, deadline=by_deadline) from exc
        except BaseException:
            self._record(step, Status.FAILED, start, info.detail, address, info.ended)
            raise
        self._record(step, info.status, start, info.detail, address, info.ended)

    def skip(self, step: Step, detail: str) -> None:
        """Record a step that was not run, with the reason."""
        self.result.steps.append(
            StepResult(step=step, status=Status.SKIPPED, elapsed_ms=0.0, detail=detail)
        )

    def finish(self) -> StageResult:
        """Stamp the stage's total time and return its result."""
        self.result.elapsed_ms = (time.perf_counter() - self._started) * 1000
        return self.result

    def _record(
        self,
        step: Step,
        status: Status,
        start: float,
        detail: str | None,
        address: str | None,
        ended: float | None = None,
    ) -> None:
        end = time.perf_counter() if ended is None else ended
        self.result.steps.append(
            StepResult(
                step=step,
                status=status,
                elapsed_ms=(end - start) * 1000,
                detail=detail,
                address=address,
            )
        )


def early_mode_check_after(step_timeout: float) -> float:
    """Seconds of silence after which a plaintext probe also asks the port in TLS.

    A plaintext client on an implicit-TLS port waits forever (the server waits for a
    ClientHello): the most reported mismatch (probe-anchors.md §4). Asking early, on
    a second, credential-free connection, answers in about this long instead of a
    whole step cap; a server that is merely slow still gets the full cap.
    """
    return min(2.0, step_timeout / 2)
