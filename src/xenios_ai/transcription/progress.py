"""What a transcription tells while it runs: its turn (one at a time per `Transcriber`) and its progress."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from xenios_ai.transcription.models import ProgressCallback


class Turn:
    """One transcription at a time per Transcriber; a waiting call reports progress 0 every second (where
    a cancel can stop it)."""

    def __init__(self, lock: threading.Lock, progress: ProgressCallback | None) -> None:
        self.lock = lock
        self.progress = progress

    def __enter__(self) -> None:
        while not self.lock.acquire(timeout=1.0):
            if self.progress is not None:
                self.progress(0.0, "waiting for another transcription to finish")

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()


#: The highest fraction reported before the end: 1.0 means done, and only `Progress.finish` says so.
_LAST_BEFORE_DONE: Final = 0.99


class Progress:
    """Publishes monotonic fractions of ``total`` seconds ("transcribed 12 of 34 s"), below 1 until the
    last call, which is always (1.0, "done"). An ``estimated`` total (the container does not tell the
    length) may grow; the message then leaves it out."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.total: float | None = None
        self.estimated = False
        self.last = 0.0

    def report(self, position: float) -> None:
        if self.callback is None:
            return
        fraction = position / self.total if self.total else 0.0
        fraction = min(_LAST_BEFORE_DONE, max(self.last, fraction))
        self.last = fraction
        total = f" of {self.total:.0f}" if self.total and not self.estimated else ""
        self.callback(fraction, f"transcribed {position:.0f}{total} s")

    def at(self, offset: float) -> Callable[[float], None]:
        """``report`` for positions given from ``offset`` seconds (a window's start)."""
        return lambda position: self.report(offset + position)

    def finish(self) -> None:
        if self.callback is not None:
            self.last = 1.0
            self.callback(1.0, "done")
