"""``check``'s start before its event loop: read the files and dial the first inbox
(``probes._early``), then what overlaps the handshakes (logging, the CA file), and at
the end close what no probe took.

``cli_run`` runs the commands; this is the part of ``check``'s run that comes before
the loop exists and must import little (no asyncio, no probe module).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from provision.cli_run import check_ca_file, config_error, setup_logging
from provision.errors import ConfigError

if TYPE_CHECKING:
    from provision.cli_options import Run
    from provision.inbox import LoadResult

__all__ = ["after_dial", "close_dials", "dial_first"]


def dial_first(run: Run) -> LoadResult | ConfigError | None:
    """Read the inbox files now, before the event loop, and dial the first inbox's two
    servers (``probes._early``): the handshakes travel while the loop starts up.

    Returns what ``cli_run.load_inputs`` is then given: the files' inboxes, or the error
    that reading them raised (raised there, so a bad file ends as it always has), or
    ``None`` (a sandbox or standard input: read in the loop, where a stop can end it).
    """
    if run.sandbox or not run.files or "-" in run.files:
        return None
    from provision.inbox import load_inboxes

    try:
        loaded = load_inboxes(run.files)
    except ConfigError as exc:
        return exc
    if loaded.inboxes:
        from provision.probes._early import dial_inbox

        dial_inbox(loaded.inboxes[0], step_timeout=run.step_timeout)
    return loaded


def after_dial(run: Run) -> None:
    """What ``cli_run.start_run`` left for after ``check``'s dial: logging, the CA file."""
    setup_logging(run.verbose)
    try:
        check_ca_file(run.ca_file)
    except ConfigError as exc:  # exit 2; the dialled connections close unused
        config_error(exc.problems, run.json_output)


def close_dials() -> None:
    """Close the dials of :func:`dial_first` that no probe took (a run stopped or failed
    before it probed). A run that dialled nothing imports nothing here."""
    early = sys.modules.get("provision.probes._early")
    if early is not None:
        early.close_all()
