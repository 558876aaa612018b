"""A job kind whose handler blocks in native code far past its time limit (see stuck_worker.py)."""

from __future__ import annotations

import msgspec

from xenios_ai.jobs.models import JobKind, RetryPolicy


class Nap(msgspec.Struct):
    seconds: int = 3600


STUCK = JobKind(
    name="stuck", queue="default", input_type=Nap, time_limit_seconds=0.3, retry=RetryPolicy(max_attempts=1)
)
