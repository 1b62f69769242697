"""Exceptions. Expected outcomes of probes are data (``provision.results``), not exceptions.

::

    ProvisionError
     +-- ConfigError          bad input: every problem found, with file, line, inbox, field
     +-- RocketChatError      (``provision set``) the Rocket.Chat API failed
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigProblem", "ProvisionError", "RocketChatError"]


class ProvisionError(Exception):
    """Base of every error ``provision`` raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in the input: ``file:line: inbox 'name': field: message``."""

    message: str
    file: str | None = None
    line: int | None = None
    inbox: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
        parts = [where] if where else []
        if self.inbox is not None:
            parts.append(f"inbox {self.inbox}")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigError(ProvisionError):
    """The input is wrong; raised before any network I/O. Holds every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RocketChatError(ProvisionError):
    """The Rocket.Chat API failed (``provision set``)."""
