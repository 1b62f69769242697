"""The one exception a probe step raises to end its stage with a classified failure."""

from __future__ import annotations

from provision.results import Failure

__all__ = ["ProbeFailed"]


class ProbeFailed(Exception):
    """Ends a probe stage; the stage records :attr:`failure` (``StageResult.fail_with``)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure
