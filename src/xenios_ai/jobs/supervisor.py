"""`xenios-ai worker --processes N`: N Dramatiq commands (one worker process each) under a supervisor
that restarts one that stops unexpectedly, so the others keep serving.

Dramatiq's own master shuts every worker process down when one of them dies (killed by the OOM killer, a
segfault in a native engine, the runner's stuck-handler exit) and leaves the restart to the container. Here
each child is ``python -m dramatiq xenios_ai.worker --processes 1``: when its worker process dies its
Dramatiq master exits, the supervisor logs the exit code, counts it (``xenios_worker_restarts_total``)
and starts it again after a delay (RESTART_DELAY_SECONDS, doubling up to RESTART_DELAY_MAX_SECONDS while
it keeps dying within STABLE_SECONDS). The dead process's job comes back through the broker heartbeat and
the sweep, as on a host crash.

SIGTERM or SIGINT: forwarded to every child (Dramatiq's graceful shutdown: long jobs go back to the
queue), then the supervisor waits for them; a second signal kills them. With ``--metrics-port`` the
supervisor also runs (and restarts) the metrics server over the processes' shared metrics directory.
Why and what was measured: docs/decisions/0004-fault-handling.md.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from loguru import logger

from xenios_ai.backoff import Doubling
from xenios_ai.observability.multiprocess import sweep_dead_processes

RESTART_DELAY_SECONDS = 0.5
RESTART_DELAY_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
CANNOT_START_CODES = frozenset({2, 3})
"""Dramatiq's exit codes for a worker that could not start (import error; broker unreachable, or a kind's
``prepare`` refused, e.g. a missing model): restarting cannot help, so the supervisor stops and exits with
the code, and the container or systemd decides (as without the supervisor)."""
"""A child that ran this long before stopping is restarted after the first delay again."""
_POLL_SECONDS = 0.2


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: Doubling = field(
        default_factory=lambda: Doubling(RESTART_DELAY_SECONDS, RESTART_DELAY_MAX_SECONDS)
    )
    restarts: int = 0


class Supervisor:
    """Runs ``commands`` as child processes until told to stop; restarts those that exit."""

    def __init__(
        self,
        commands: Sequence[tuple[str, list[str]]],
        *,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self.children = [Child(name, list(command)) for name, command in commands]
        self._on_restart = on_restart
        self._stopping = False
        self._signals = 0
        self._cannot_start: int | None = None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            while not self._stopping:
                self._check()
                time.sleep(_POLL_SECONDS)
            code = self._wait_all()
            return self._cannot_start if self._cannot_start is not None else code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _signal(self, signum: int, _: FrameType | None) -> None:
        self._signals += 1
        self._stopping = True
        kill = self._signals > 1
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(child.command)
        child.started_at = time.monotonic()
        child.restart_at = None
        logger.info("{} started (pid {})", child.name, child.process.pid)

    def _check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at and not self._stopping:
                    child.restarts += 1
                    self._start(child)
                continue
            if child.process is None or (code := child.process.poll()) is None:
                continue
            if code in CANNOT_START_CODES:
                logger.critical(
                    "{} (pid {}) could not start (code {}); stopping the other worker processes",
                    child.name, child.process.pid, code,
                )  # fmt: skip
                self._cannot_start = code
                self._signal(signal.SIGTERM, None)
                self._signals = 0
                return
            if now - child.started_at >= STABLE_SECONDS:
                child.backoff.reset()
            delay = child.backoff.next()
            child.restart_at = now + delay
            logger.error(
                "{} (pid {}) stopped unexpectedly with code {}; restarting it in {:.1f} s (the others keep "
                "serving)", child.name, child.process.pid, code, delay,
            )  # fmt: skip
            if self._on_restart is not None:
                self._on_restart()

    def _wait_all(self) -> int:
        codes = []
        for child in self.children:
            if child.process is not None:
                codes.append(child.process.wait())
        logger.info("all worker processes stopped (codes {})", codes)
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def count_restart() -> None:
    """``xenios_worker_restarts_total`` + 1, in this process's metrics (imported late: after
    `prepare_process_group`); and the stopped child's worker process, killed before it could drop its
    live gauges (messages in progress), dropped now (`multiprocess.sweep_dead_processes`)."""
    from xenios_ai.observability.metrics import WORKER_RESTARTS  # noqa: PLC0415 - see the docstring

    WORKER_RESTARTS.inc()
    swept = sweep_dead_processes()
    if swept:
        logger.info("metrics: the in-progress gauges of stopped process(es) {} dropped", swept)


def worker_commands(
    executable: str, queues: list[str], processes: int, threads: int, metrics_fork: str | None
) -> list[tuple[str, list[str]]]:
    """The children of `xenios-ai worker`: ``processes`` Dramatiq commands with one worker process each,
    and the metrics server when ``metrics_fork`` ("module:function") is given."""
    worker = [executable, "-m", "dramatiq", "xenios_ai.worker", "--queues", *queues, "--processes", "1",
              "--threads", str(threads)]  # fmt: skip
    commands = [(f"worker process {n + 1}/{processes}", worker) for n in range(processes)]
    if metrics_fork:
        module, _, function = metrics_fork.partition(":")
        code = f"import sys; from {module} import {function}; sys.exit({function}())"
        commands.append(("worker metrics server", [executable, "-c", code]))
    return commands


__all__ = ["Supervisor", "count_restart", "worker_commands"]
