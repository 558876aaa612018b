"""The cyclic garbage collector's settings for long-running processes (API workers, job workers).

Untuned, the cyclic collector took ~45% of a PDF extraction and stalled the API's loop under load
(docs/decisions/0002-garbage-collector-settings.md has the numbers).

`settle` takes what exists when a process has finished building what it keeps (the API's services, a
worker's engines) out of the collector's passes (``gc.freeze``), and raises the young threshold so that
short-lived bursts of objects (one document, one request) are mostly freed by reference counting before a
collection looks at them. Cyclic garbage is still collected, only in larger batches.
"""

from __future__ import annotations

import gc
from typing import Final

#: Net container allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD: Final = 10_000


def settle(*, first_only: bool = False) -> None:
    """Freeze what is alive now and collect young objects less often. Call once a process has built what
    it keeps for its lifetime; a later call also freezes what was built since (e.g. a lazily built engine),
    unless ``first_only`` and something was frozen already.
    """
    if first_only and gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
