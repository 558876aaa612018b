"""The cyclic garbage collector's settings for long-running processes (API workers, job workers).

CPython runs a young collection every 700 net allocations of container objects and, as survivors pile up,
full collections that walk every tracked object, including the hundreds of thousands that live as long
as the process (modules, classes, the app, docling's and pydantic's machinery, the converter). Docling
allocates millions of small objects per document, so untuned, the collector took ~45% of a 50-page PDF
extraction here (1.0-1.4 s of 2.4-3.0 s; tests/benchmarks/bench_docling_direct.py). In the API it stalled
the loop 60-70 ms every few seconds under load (relayed LLM requests' p99 x4).

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
