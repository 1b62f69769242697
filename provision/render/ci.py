"""What a CI run writes besides the report: JUnit, GitHub annotations and summary, progress.

:class:`CiOutputs` reads the environment, checks the ``--junit`` path before any probe
runs, shows progress on a terminal and writes everything at the end. The renderers it
calls are imported only when their output is asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from provision.errors import ConfigError, ConfigProblem
from provision.results import ExitCode, FailureClass, InboxResult, Report

if TYPE_CHECKING:
    from provision.models import Inbox
    from provision.render.github import Annotation
    from provision.render.progress import Progress

__all__ = ["CiOutputs", "check_junit_path"]


def check_junit_path(path: Path) -> str | None:
    """Why a report file (JUnit, metrics) cannot be written to ``path``, or ``None`` if it can."""
    if path.is_dir():
        return "it is a directory"
    parent = path.parent
    if not parent.is_dir():
        return f"the directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the directory {parent} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    return None


@dataclass(slots=True, kw_only=True)
class CiOutputs:
    """What a CI run writes besides the report, decided from options and environment.

    Attributes:
        command: ``check`` or ``set``.
        junit: where to write JUnit XML (``--junit``), or ``None``.
        metrics: where to write Prometheus metrics (``--metrics``), or ``None``.
        github: running under GitHub Actions (``GITHUB_ACTIONS=true``): annotations.
        summary: the ``$GITHUB_STEP_SUMMARY`` file to append to, or ``None``.
        workspace: ``$GITHUB_WORKSPACE``; annotation paths are made relative to it.
        stream: where annotations and progress go (standard error).
        tty: show progress (``stream`` is a terminal).
    """

    command: str
    junit: Path | None = None
    metrics: Path | None = None
    github: bool = False
    summary: Path | None = None
    workspace: str | None = None
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    tty: bool = False
    inboxes: list[Inbox] = field(default_factory=list)
    progress: Progress | None = None

    @classmethod
    def from_environ(
        cls,
        command: str,
        junit: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        stream: TextIO | None = None,
        metrics: Path | None = None,
    ) -> CiOutputs:
        """Read ``GITHUB_*`` from ``environ`` and check ``junit`` and ``metrics`` before
        anything runs.

        Raises:
            ConfigError: ``junit`` or ``metrics`` cannot be written (missing or
                read-only directory).
        """
        environ = os.environ if environ is None else environ
        stream = sys.stderr if stream is None else stream
        if junit is not None:
            reason = check_junit_path(junit)
            if reason:
                raise ConfigError(
                    [ConfigProblem(f"cannot write the JUnit report: {reason}", file=str(junit))]
                )
        if metrics is not None:
            reason = check_junit_path(metrics)
            if reason:
                raise ConfigError(
                    [ConfigProblem(f"cannot write the metrics file: {reason}", file=str(metrics))]
                )
        github = environ.get("GITHUB_ACTIONS") == "true"
        summary = environ.get("GITHUB_STEP_SUMMARY") if github else None
        return cls(
            command=command,
            junit=junit,
            metrics=metrics,
            github=github,
            summary=Path(summary) if summary else None,
            workspace=environ.get("GITHUB_WORKSPACE") or None,
            stream=stream,
            tty=_is_tty(stream),
        )

    def started(self, inboxes: Sequence[Inbox]) -> Callable[[InboxResult], None] | None:
        """Remember the inboxes (for field lines); the progress callback, if one is shown."""
        self.inboxes = list(inboxes)
        if not self.tty or len(self.inboxes) < 2:
            return None
        after = "submitting to Rocket.Chat..." if self.command == "set" else None
        from provision.render.progress import Progress

        self.progress = Progress(len(self.inboxes), self.stream, after=after)
        self.progress.start()
        return self.progress

    def finish(self, report: Report) -> str | None:
        """Erase progress; write annotations, the step summary, JUnit and metrics.

        Returns:
            Why the JUnit report or the metrics could not be written, or ``None``. A step
            summary that cannot be written draws a warning annotation only (nobody asked
            for it).
        """
        if self.progress is not None:
            self.progress.close()
        if self.github:
            from provision.render import github

            self._annotate(
                github.report_annotations(report, self.inboxes, workspace=self.workspace)
            )
            self._append_summary(github.render_summary(report, self.inboxes))
        failed = None
        if self.junit is not None:
            from provision.render.junit import render_junit

            failed = self._write_junit(render_junit(report, self.inboxes))
        # A passing run whose JUnit could not be written exits 2 (cli._finish_ci): the
        # metrics say so too.
        code = (int(report.exit_code) or 2) if failed else None
        return _either(failed, self._write_metrics(report, exit_code=code))

    def failed_input(
        self, problems: Sequence[ConfigProblem], *, rocketchat: bool = False
    ) -> str | None:
        """The run stopped on bad input (or, with ``rocketchat``, because Rocket.Chat
        could not be read, exit 20): annotate, summarise and write JUnit and metrics for that."""
        if self.progress is not None:
            self.progress.close()
        what = "Rocket.Chat could not be read" if rocketchat else "invalid input"
        code = ExitCode.ROCKETCHAT if rocketchat else ExitCode.USAGE
        if self.github:
            from provision.render import github

            self._annotate(
                github.problem_annotations(problems, workspace=self.workspace, what=what)
            )
            self._append_summary(
                github.render_problems_summary(self.command, problems, what=what, exit_code=code)
            )
        failed = None
        if self.junit is not None:
            from provision.render.junit import INVALID_INPUT, render_problems_junit

            cls = FailureClass.ROCKETCHAT.value if rocketchat else INVALID_INPUT
            failed = self._write_junit(render_problems_junit(self.command, problems, cls=cls))
        # The metrics say the run failed, so that an old file does not go on showing
        # the last good run.
        empty = Report(command=self.command)
        return _either(failed, self._write_metrics(empty, exit_code=int(code)))

    def _annotate(self, annotations: Sequence[Annotation]) -> None:
        from provision.render.github import render_annotations

        text = render_annotations(annotations)
        if text:
            self.stream.write(text)
            self.stream.flush()

    def _append_summary(self, markdown: str) -> None:
        if self.summary is None:
            return
        try:
            with self.summary.open("a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            from provision.render.github import Annotation

            self._annotate(
                [Annotation("warning", f"cannot append to $GITHUB_STEP_SUMMARY: {reason}")]
            )

    def _write_junit(self, xml: str) -> str | None:
        assert self.junit is not None
        try:
            self.junit.write_text(xml, encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return f"{self.junit}: cannot write the JUnit report: {reason}"
        return None

    def _write_metrics(self, report: Report, *, exit_code: int | None = None) -> str | None:
        if self.metrics is None:
            return None
        from provision.render.metrics import write_metrics

        try:
            write_metrics(self.metrics, report, exit_code=exit_code)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return f"{self.metrics}: cannot write the metrics file: {reason}"
        return None


def _either(*failures: str | None) -> str | None:
    return "; ".join(f for f in failures if f) or None


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
