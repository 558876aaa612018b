"""Raise an exception in another thread (``PyThreadState_SetAsyncExc``): the job runner's hard time limit
and the extraction watchdog. It lands at the thread's next Python bytecode, never inside native code."""

from __future__ import annotations

import ctypes


def raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Make ``exc_type`` pending in thread ``thread_id``; None clears a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )
