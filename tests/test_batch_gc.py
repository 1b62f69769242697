"""The CLI's run collects cyclic garbage rarely, and puts the thresholds back after it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.cli_run import BATCH_GC_THRESHOLD, fewer_collections, run_report
from provision.commands.check import check
from provision.inbox import load_inboxes
from provision.models import ProbeOptions
from provision.render.ci import CiOutputs
from provision.results import Report
from provision.sandbox.runner import running_sandbox
from provision.stopping import Stop


@pytest.fixture
def default_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


def test_raised_inside_restored_after_even_on_error(
    default_thresholds: tuple[int, int, int],
) -> None:
    with fewer_collections():
        assert gc.get_threshold() == (BATCH_GC_THRESHOLD, 10, 10)
    assert gc.get_threshold() == default_thresholds
    with pytest.raises(KeyError), fewer_collections():
        raise KeyError("boom")
    assert gc.get_threshold() == default_thresholds


def test_a_higher_threshold_set_by_the_host_is_kept(
    default_thresholds: tuple[int, int, int],
) -> None:
    gc.set_threshold(BATCH_GC_THRESHOLD * 5, 3, 4)
    with fewer_collections():
        assert gc.get_threshold() == (BATCH_GC_THRESHOLD * 5, 3, 4)
    assert gc.get_threshold() == (BATCH_GC_THRESHOLD * 5, 3, 4)


def test_the_probes_of_a_run_report_run_under_the_raised_threshold(
    default_thresholds: tuple[int, int, int], tmp_path: Path
) -> None:
    seen: list[tuple[int, int, int]] = []

    async def probes() -> Report:
        async with running_sandbox(tmp_path / "box") as box:
            loaded = load_inboxes([str(box.inbox_file)])
            options = ProbeOptions(ca_file=box.ca_file, step_timeout=5, timeout=30)
            # Each inbox's result, as its probes end: the threshold in force meanwhile.
            return await check(
                loaded.inboxes, options, on_inbox_done=lambda _: seen.append(gc.get_threshold())
            )

    report = run_report(probes(), True, CiOutputs.from_environ("check", environ={}), Stop())
    assert report.ok
    assert seen == [(BATCH_GC_THRESHOLD, 10, 10)] * 2
    assert gc.get_threshold() == default_thresholds
