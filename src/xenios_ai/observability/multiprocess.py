"""Where the processes of one host keep their Prometheus values: prometheus_client's multi-process mode.

Granian may run several API worker processes and Dramatiq several worker processes; each process writes
its values to memory-mapped files named by its pid in PROMETHEUS_MULTIPROC_DIR, and an exposition merges
the files when scraped (counters and histograms summed; the in-progress gauge summed over live processes).

Layout: ``<METRICS_DIR>/<role>-<pid>/`` per process group, where the pid is the one of the `xenios-ai
serve` or `xenios-ai worker` command (Granian's main process, Dramatiq's main process after the exec):

- the command calls `prepare_process_group` before any process forks: it makes the group's directory,
  empty, removes the directories of groups whose command is no longer running, and sets
  PROMETHEUS_MULTIPROC_DIR for itself and its children (prometheus_client reads it at import);
- a worker process leaving calls `mark_process_dead` (its live gauge, messages in progress, goes away);
  one that is killed cannot, so `xenios-ai worker`'s supervisor calls `sweep_dead_processes` when a child
  stops: the live-gauge files of processes that no longer exist are removed (no ghost work in progress);
- the API's /metrics merges every group of the host (so `xenios-ai dev`, or a host running API and
  workers side by side, shows everything at one address); a worker's ``--metrics-port`` serves its own
  group only (workers in their own container). A restarted group starts from zero: Prometheus reads the
  drop as a counter reset.

Without PROMETHEUS_MULTIPROC_DIR (the app built in-process, as the tests do) values stay in memory and
/metrics serves the default registry.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from loguru import logger

from xenios_ai.settings import Settings

ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_METRICS_FORK = "xenios_ai.observability.exposition:serve_worker_metrics"
"""Dramatiq ``--fork-function`` of ``xenios-ai worker --metrics-port`` (named here: the command must not
import prometheus_client before `prepare_process_group`)."""
_GROUP = re.compile(r"^[a-z]+-(\d+)$")
_LIVE_FILE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")


def metrics_root(settings: Settings) -> Path:
    if settings.metrics_dir:
        return Path(settings.metrics_dir)
    return Path(tempfile.gettempdir()) / "xenios-ai-metrics" / settings.redis_namespace.replace(":", "_")


def prepare_process_group(settings: Settings, role: str) -> Path | None:
    """A fresh directory for this command's processes; stale groups removed; PROMETHEUS_MULTIPROC_DIR set.

    A directory that cannot be written costs the metrics, not the service: a warning, and each process
    keeps its values in memory (right for one process, partial for several).
    """
    if "prometheus_client.values" in sys.modules:
        logger.warning("prometheus_client was imported before its multi-process directory was set")
    root = metrics_root(settings)
    directory = root / f"{role}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for group in root.iterdir():
            match = _GROUP.match(group.name)
            if group.is_dir() and match and (int(match[1]) == os.getpid() or not _alive(int(match[1]))):
                shutil.rmtree(group, ignore_errors=True)
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        logger.warning("metrics: {} is not usable ({}); each process reports only its own values", root, exc)
        return None
    os.environ[ENV] = str(directory)
    return directory


def group_dir() -> Path | None:
    """This process's multi-process directory (None: single-process mode)."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def mark_process_dead() -> None:
    """Drop this process's live gauges (call when it exits)."""
    directory = group_dir()
    if directory is not None and directory.is_dir():
        from prometheus_client import multiprocess  # noqa: PLC0415 - not before prepare_process_group (see above)

        multiprocess.mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


def sweep_dead_processes(directory: Path | None = None) -> list[int]:
    """`mark_process_dead` for every process of the group (``directory``, default this process's) whose
    live-gauge files remain although it is gone: a process killed by SIGKILL or the OOM killer never ran
    its own. The pids swept."""
    directory = directory or group_dir()
    if directory is None or not directory.is_dir():
        return []
    dead = sorted(
        {
            int(match[1])
            for path in directory.iterdir()
            if (match := _LIVE_FILE.match(path.name)) and not _alive(int(match[1]))
        }
    )
    if dead:
        from prometheus_client import multiprocess  # noqa: PLC0415 - not before prepare_process_group (see above)

        for pid in dead:
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
