"""A clock that moves only when a test moves it: for caches, back-offs and timers, without sleeping."""

from __future__ import annotations

import time


class FakeClock:
    """Both faces of time, advanced together: ``monotonic()`` and ``time()`` (epoch seconds)."""

    def __init__(self, start: float | None = None) -> None:
        self._offset = 0.0
        self._epoch = time.time() if start is None else start

    def monotonic(self) -> float:
        return 1_000.0 + self._offset

    def time(self) -> float:
        return self._epoch + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds
