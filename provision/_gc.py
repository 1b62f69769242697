"""How often the ``provision`` program collects cyclic garbage.

Reference counting frees almost everything a run allocates. The collector's default
(a collection every 700 net allocations) still ran dozens of times over objects that
live as long as the process: while some 400 modules are imported (about 3 ms of a cold
check) and over a batch's millions of short-lived frames, futures and replies (some 48
collections, about 15 ms of CPU for 100 inboxes). The cycles a run leaves are few (some
600 objects per 100 inboxes), so collecting every 20,000 costs no memory to speak of.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["GC_THRESHOLD", "fewer_collections"]

GC_THRESHOLD = 20_000


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect every :data:`GC_THRESHOLD` allocations inside; the old thresholds after
    (a higher first threshold set by the host stays)."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
