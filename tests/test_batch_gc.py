"""The ``provision`` program collects cyclic garbage rarely (``provision._gc``); the
thresholds come back after the block."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision._gc import GC_THRESHOLD, fewer_collections
from tests.child import run_python


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
        assert gc.get_threshold() == (GC_THRESHOLD, 10, 10)
    assert gc.get_threshold() == default_thresholds
    with pytest.raises(KeyError), fewer_collections():
        raise KeyError("boom")
    assert gc.get_threshold() == default_thresholds


def test_a_higher_threshold_set_by_the_host_is_kept(
    default_thresholds: tuple[int, int, int],
) -> None:
    gc.set_threshold(GC_THRESHOLD * 5, 3, 4)
    with fewer_collections():
        assert gc.get_threshold() == (GC_THRESHOLD * 5, 3, 4)
    assert gc.get_threshold() == (GC_THRESHOLD * 5, 3, 4)


#: The program in a child: the thresholds in force when each inbox's probes end, and at the
#: end of the run (os._exit: entry.exit_without_teardown), as JSON on stderr's last line.
_CHILD = """
import gc, json, os, sys
seen = []
import provision.commands.check as check
probe_inbox = check.probe_inbox
async def watched(*args, **kwargs):
    result = await probe_inbox(*args, **kwargs)
    seen.append(gc.get_threshold())
    return result
check.probe_inbox = watched
end = os._exit
def report(code):
    sys.stderr.write("\\n" + json.dumps(seen) + "\\n")
    end(code)
os._exit = report
sys.argv = ["provision", *sys.argv[1:]]
from provision.entry import console
console()
"""


def test_the_probes_of_the_program_run_under_the_raised_threshold(tmp_path: Path) -> None:
    inbox = {"server": "127.0.0.1", "port": 9, "username": "u", "password": "pw-gc-1"}
    entry = {"smtp": {**inbox, "secure": False}, "imap": {**inbox, "secure": True}}
    inboxes = [{"name": f"GC {i}", "email": f"gc{i}@example.com", **entry} for i in range(2)]
    path = tmp_path / "inboxes.json"
    path.write_text(json.dumps({"inboxes": inboxes}))
    done = run_python(_CHILD, "check", str(path), "--json", cwd=tmp_path)
    assert json.loads(done.stdout)["inboxes"], done.stderr  # the probes did run
    seen = json.loads(done.stderr.strip().splitlines()[-1])
    assert seen == [[GC_THRESHOLD, 10, 10]] * 2
