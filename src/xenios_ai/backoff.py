"""Backoff delays, written once: exponential (``base * 2**attempt``), capped, optionally jittered, and a
doubling delay for reconnect loops."""

from __future__ import annotations

import math
import random


def exponential(
    base: float, attempt: int, *, cap: float = math.inf, jitter: tuple[float, float] | None = None
) -> float:
    """``min(cap, base * 2**attempt)``, times a uniform factor in ``jitter`` when given (spreads retries)."""
    delay = min(cap, base * 2.0**attempt)
    if jitter is None:
        return delay
    return float(delay * random.uniform(*jitter))  # noqa: S311 - jitter, not security


class Doubling:
    """A reconnect loop's delay: ``first``, doubled after each failure up to ``cap``; `reset` on success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the following one doubles."""
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first
