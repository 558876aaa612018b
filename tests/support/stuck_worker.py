"""A worker serving one more job kind, `tests.support.stuck.STUCK`, whose handler blocks in native code
(libc ``sleep``, the GIL released): ``python -m dramatiq tests.support.stuck_worker`` from the repository
root. The runner's hard-limit delays are shortened so the test takes seconds."""

from __future__ import annotations

import ctypes

from tests.support.stuck import STUCK, Nap
from xenios_ai.jobs import runner
from xenios_ai.jobs.actors import job_actor
from xenios_ai.jobs.context import JobContext
from xenios_ai.worker import broker

__all__ = ["broker"]

runner.HARD_LIMIT_GRACE_SECONDS = 0.2
runner.HARD_LIMIT_EXIT_SECONDS = 1.0


@job_actor(STUCK)
def stuck(ctx: JobContext, nap: Nap) -> None:
    ctypes.CDLL(None).sleep(nap.seconds)  # an exception raised into this thread waits for it to return
