"""Say a recurring thing at most once per period ("warn at most once a minute"), with an injectable
clock for tests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class OncePer:
    """`ready` is true at most once per ``seconds`` (the first time always)."""

    def __init__(self, seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last = -math.inf

    def ready(self) -> bool:
        now = self._clock()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
