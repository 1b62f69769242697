"""``[37/100] probing...`` on standard error while a batch runs on a terminal."""

from __future__ import annotations

import time
from typing import TextIO

from provision.render.terminal import safe_text
from provision.results import InboxResult, Status

__all__ = ["Progress"]


class Progress:
    """``[37/100] probing... (2 failed)`` redrawn in place on a terminal.

    Call it with each finished :class:`~provision.results.InboxResult` (it is a
    ``pipeline.check(on_inbox_done=...)`` callback); :meth:`close` erases the line.
    Redraws at most every ``interval`` seconds, and always for the last inbox.
    """

    def __init__(
        self, total: int, stream: TextIO, *, after: str | None = None, interval: float = 0.1
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._stream = stream
        self._after = safe_text(after) if after else None
        self._interval = interval
        self._drawn = 0.0
        self._shown = False

    def start(self) -> None:
        """Show ``[0/N]`` before the first inbox finishes."""
        self._draw(force=True)

    def __call__(self, result: InboxResult) -> None:
        self.done += 1
        if result.status() is Status.FAILED:
            self.failed += 1
        self._draw(force=self.done >= self.total)

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < self._interval:
            return
        self._drawn = now
        text = f"[{self.done}/{self.total}] probing..."
        if self.failed:
            text += f" ({self.failed} failed)"
        if self.done >= self.total and self._after:
            text = f"[{self.done}/{self.total}] probed; {self._after}"
        self._write(f"\r\x1b[K{text}")
        self._shown = True

    def close(self) -> None:
        """Erase the progress line (the report follows on a clean line)."""
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = False

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken terminal: progress is optional
            self._shown = False
