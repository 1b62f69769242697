"""``-v``: the protocol steps of each probe as log lines on the ``provision.check`` logger.

One line per step (stage, inbox, step, status, milliseconds, detail) once the stage is
over, so every detail has been through the probes' scrubber; the inbox's passwords are
masked once more here, so no line can carry one whatever a step recorded.
"""

from __future__ import annotations

import logging

from provision.models import Inbox
from provision.probes._scrub import mask
from provision.results import StageResult

__all__ = ["log_steps"]

logger = logging.getLogger("provision.check")


def log_steps(inbox: Inbox, stage: StageResult) -> None:
    """Log the steps and the outcome of one stage of ``inbox`` at DEBUG."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    secrets = (inbox.smtp.password, inbox.imap.password)
    who = f"{stage.stage.value} {inbox.name!r} <{inbox.email}>"
    for step in stage.steps:
        where = f"@{step.address}" if step.address else ""
        detail = f": {step.detail}" if step.detail else ""
        line = f"{who}: {step.step.value}{where} {step.status.value} {step.elapsed_ms:.0f} ms"
        logger.debug("%s", mask(line + detail, *secrets))
    outcome = stage.failure.value if stage.failure else stage.status.value
    message = f": {stage.message}" if stage.failure and stage.message else ""
    logger.debug("%s", mask(f"{who}: {outcome} in {stage.elapsed_ms:.0f} ms{message}", *secrets))
