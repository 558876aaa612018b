"""The extraction deadline: `Watchdog` raises `DeadlineExceeded` into the converting thread."""

from __future__ import annotations

import sys
import threading
from types import FrameType

from xenios_ai.threads import raise_in_thread


class DeadlineExceeded(BaseException):
    """Raised into the converting thread by `Watchdog`."""


class Watchdog:
    """Raise `DeadlineExceeded` in the entering thread once ``seconds`` have passed, and again every
    `_REFIRE_SECONDS` while the thread is still in the function that entered the block.

    Docling checks its own timeout only between PDF pages; this covers everything else (one huge page, an
    HTML or spreadsheet backend, exporting). It uses ``PyThreadState_SetAsyncExc`` like Dramatiq's time limit:
    the exception arrives at the next Python bytecode, so one long native call finishes first. It can also
    arrive inside code that swallows it (a weakref callback run by the garbage collector prints "Exception
    ignored" and carries on): hence the repeats. It can even arrive as ``__exit__`` starts, before the block
    is disarmed: so a repeat is sent only while the entering function's frame is still on the thread's
    stack, never into whatever the thread runs next (the next job).
    """

    def __init__(self, seconds: float) -> None:
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._armed = True
        self._fired = False
        self._frame: FrameType | None = None
        self._timer = self._schedule(seconds)

    def __enter__(self) -> None:
        self._frame = sys._getframe(1)
        self._timer.start()

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._armed = False
            self._timer.cancel()
            if self._fired:  # not delivered yet (or delivered and being handled): nothing may stay pending
                raise_in_thread(self._thread_id, None)
            self._frame = None

    def _schedule(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self._fire)
        timer.daemon = True
        return timer

    def _fire(self) -> None:
        with self._lock:
            if self._armed and self._still_inside():
                self._fired = True
                raise_in_thread(self._thread_id, DeadlineExceeded)
                self._timer = self._schedule(_REFIRE_SECONDS)
                self._timer.start()
            else:
                self._armed = False
                self._frame = None

    def _still_inside(self) -> bool:
        frame = sys._current_frames().get(self._thread_id)
        while frame is not None:
            if frame is self._frame:
                return True
            frame = frame.f_back
        return False


_REFIRE_SECONDS = 1.0
