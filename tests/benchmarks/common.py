"""What the benchmark suites share: the parties (a fresh database, the fake OpenRouter, the service's
environment, a worker), the load generator, timed rounds and percentiles.

Reading processes from /proc (child processes, RSS, CPU time) is `tests.support.processes`' (the tests
use it too); submitting and following jobs over HTTP is `tests.support.jobs`'.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support import tokens
from tests.support.databases import fresh_database, postgres_server_url, redis_server_url
from tests.support.processes import WorkerProcess, start_worker, status_kb, stop_process

ROOT = Path(__file__).resolve().parents[2]

# -- the parties --------------------------------------------------------------------------------------


@contextlib.contextmanager
def database() -> Iterator[tuple[str, str]]:
    """A fresh, migrated PostgreSQL database and a Redis URL (the machine's, or embedded ones)."""
    server_url = postgres_server_url(ROOT / ".xenios" / "bench" / "postgres")
    redis_url = redis_server_url(ROOT / ".xenios" / "bench" / "redis")
    with fresh_database(server_url, f"xenios_bench_{uuid.uuid4().hex[:8]}") as url:
        yield url, redis_url


@contextlib.contextmanager
def fake_openrouter(key: str, max_recorded: int) -> Iterator[str]:
    """The fake OpenRouter (``tests.fakes.openrouter``) in its own process; its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openrouter", "--api-key", key, "--max-recorded", str(max_recorded)],
        cwd=ROOT, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        yield process.stdout.readline().decode().strip()
    finally:
        stop_process(process)


def service_env(database_url: str, redis_url: str, **settings: str) -> dict[str, str]:
    """The service's environment in a benchmark: production settings (API key and JWT guards, JSON logs at
    INFO), a Redis namespace of its own, no LLM unless ``settings`` name one; then ``settings``."""
    return {
        "ENVIRONMENT": "production",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": f"xbench{uuid.uuid4().hex[:6]}",
        "XENIOS_BACKEND_API_KEY": tokens.API_KEY,
        "SUPABASE_JWT_SECRET": tokens.TEST_JWT_SECRET,
        "OPENROUTER_API_KEY": "sk-or-v1-bench-unused",
        "OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1",
        # One user drives the load: the limits are checked (their cost is measured) but never reached.
        "RATE_LIMIT_LLM_PER_MINUTE": "1000000000",
        "RATE_LIMIT_LLM_STREAMS": "1000000",
        "RATE_LIMIT_JOBS_PER_MINUTE": "1000000000",
    } | settings


@contextlib.contextmanager
def worker(env: Mapping[str, str], queues: str, log: Path, threads: int = 1) -> Iterator[WorkerProcess]:
    """`xenios-ai worker` (one worker process) serving ``queues``, once it has registered."""
    process = start_worker(env, log, queues=queues, threads=threads, timeout=120)
    try:
        yield process
    finally:
        process.stop()


# -- measuring ------------------------------------------------------------------------------------------


def load(
    url: str, body: dict[str, Any], headers: dict[str, str], marker: str | None = None, **options: Any
) -> dict[str, Any]:
    """One run of the load generator (`tests.benchmarks.loadgen`, its own process); its result.
    ``options``: its other flags (``connections=16``, ``seconds=4``, ``burst=1000``, ``status=202``)."""
    command = [sys.executable, "-m", "tests.benchmarks.loadgen", "--url", url, "--body", json.dumps(body)]
    command += [arg for name, value in headers.items() for arg in ("--header", f"{name}: {value}")]
    if marker:
        command += ["--stream", marker]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (not empty), by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_rounds(
    cases: Mapping[str, Callable[[], object]],
    rounds: int,
    clocks: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Best and median wall seconds per case, and the median CPU seconds on the case's clock (default:
    this process's). Each case runs once to warm up (first-use imports and set-up are not throughput);
    then the cases take turns in every round, so a busy machine skews them alike, and the best round is
    each case's own cost with the least interference from other processes."""
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        run()
    for _ in range(rounds):
        for name, run in cases.items():
            clock = (clocks or {}).get(name, time.process_time)
            cpu_started, started = clock(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(clock() - cpu_started)
    return {
        name: {
            "best": min(wall[name]),
            "median": statistics.median(wall[name]),
            "cpu_median": statistics.median(cpu[name]),
        }
        for name in cases
    }


@contextlib.contextmanager
def rss_samples(pid: int, interval: float) -> Iterator[list[int]]:
    """The RSS of process ``pid`` in KiB, sampled every ``interval`` seconds while the block runs."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            with contextlib.suppress(OSError, LookupError):
                samples.append(status_kb(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()
