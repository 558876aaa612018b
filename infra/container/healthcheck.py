#!/usr/bin/env python3
"""Container health check of the xenios-ai image, for the API and for the workers.

One image runs every process kind and the command chooses, so this check looks at the command of the
container's main process (``/proc/1/cmdline``; with ``init: true`` PID 1 is docker-init and the command
follows it):

- ``xenios-ai serve ... --port N``: healthy when ``GET http://127.0.0.1:N/health/ready`` answers 200
  (PostgreSQL and Redis answer); the port is ``--port``, else ``PORT``, else 8000.
- ``xenios-ai worker ...`` (which execs ``python -m dramatiq ...``): healthy when every worker process of
  this container has a fresh entry in the worker registry, the Redis hash ``<REDIS_NAMESPACE>:workers``
  (field ``<hostname>:<pid>``, refreshed every WORKER_HEARTBEAT_SECONDS by the process's runtime loop).
  A Redis PING alone would call a process stuck in native code (holding the GIL, or a blocked loop)
  healthy. A process whose heartbeat is older than HEALTHCHECK_WORKER_STALE_SECONDS (default 120), and
  still is one heartbeat later, is killed (SIGKILL): Dramatiq's main process then stops the others and
  exits, and the container's ``restart: unless-stopped`` starts it again. Docker itself never restarts an
  unhealthy container, and a stuck process cannot end itself.
- anything else (``migrate``, a shell): healthy.

Exit status 0 is healthy and 1 unhealthy (Docker's convention). It uses only the standard library plus
redis-py, which the image has, and finishes within a heartbeat plus a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

TIMEOUT_S = 3.0
DEFAULT_STALE_S = 120.0
# An entry whose ``started_at`` is older than the process with its pid (by more than /proc's one-second
# grain) was written by an earlier process: a restarted container reuses pids.
START_SLACK_S = 1.0


def main_command(cmdline_path: Path = Path("/proc/1/cmdline")) -> list[str]:
    """The argv of the container's main process."""
    raw = cmdline_path.read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def api_port(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """The port given to ``serve`` with ``--port N`` or ``--port=N``, else ``PORT``, else 8000."""
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return int(environ.get("PORT") or 8000)


def check_api(port: int) -> str | None:
    """None when /health/ready answers 200, else the reason."""
    url = f"http://127.0.0.1:{port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except OSError as exc:
        return f"{url} unreachable: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def process_start(pid: int) -> float | None:
    """Wall-clock start time of ``pid`` (from /proc), None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return None
    # Fields after the command name (which may hold spaces and parentheses): the 22nd field is the start
    # time in clock ticks since boot, the 20th after ")".
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def own_heartbeats(registry: Mapping[bytes | str, bytes | str], hostname: str) -> dict[int, float]:
    """Last heartbeat time of each worker process running in this container now, by pid.

    Entries of other hosts, of processes gone, and of an earlier process with the same pid (a restarted
    container reuses pids; its entry's ``started_at`` is older than the process) are left out.
    """
    heartbeats = {}
    for field, value in registry.items():
        name = field.decode(errors="replace") if isinstance(field, bytes) else field
        host, _, pid_text = name.rpartition(":")
        if host != hostname or not pid_text.isdigit():
            continue
        try:
            info = json.loads(value)
            started_at, seen_at = float(info["started_at"]), float(info["seen_at"])
        except (ValueError, KeyError, TypeError):
            continue
        started = process_start(int(pid_text))
        if started is not None and started_at >= started - START_SLACK_S:
            heartbeats[int(pid_text)] = seen_at
    return heartbeats


def check_worker(environ: Mapping[str, str], *, sleep: Callable[[float], None] = time.sleep) -> str | None:
    """None when every worker process of this container has a fresh registry entry, else why not.

    A process stale on two reads one heartbeat apart (so not merely behind after a Redis outage) is killed.
    """
    redis_url = environ.get("REDIS_URL")
    if not redis_url:
        return "REDIS_URL is not set"
    import redis  # only workers need it

    key = f"{environ.get('REDIS_NAMESPACE') or 'xenios'}:workers"
    heartbeat = float(environ.get("WORKER_HEARTBEAT_SECONDS") or 5.0)
    max_age = float(environ.get("HEALTHCHECK_WORKER_STALE_SECONDS") or DEFAULT_STALE_S)
    hostname = socket.gethostname()
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        seen = own_heartbeats(client.hgetall(key), hostname)
        if seen and all(time.time() - seen_at <= max_age for seen_at in seen.values()):
            return None
        if seen:
            sleep(min(heartbeat + 1.0, 8.0))
            seen = own_heartbeats(client.hgetall(key), hostname)
    except redis.RedisError as exc:
        return f"Redis does not answer: {exc}"
    if not seen:
        return f"no worker process of this container ({hostname}) is in the registry {key}"
    problems = []
    for pid, seen_at in sorted(seen.items()):
        age = time.time() - seen_at
        if age <= max_age:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            outcome = "killed it, so the container restarts"
        except OSError as exc:
            outcome = f"could not kill it: {exc}"
        problems.append(
            f"worker process {pid} sent no heartbeat for {age:.0f} s (> {max_age:.0f} s); {outcome}"
        )
    return "; ".join(problems) or None


def check(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """None when the process described by ``argv`` is healthy, else why not."""
    if "serve" in argv:
        return check_api(api_port(argv, environ))
    if "worker" in argv or "dramatiq" in argv:
        return check_worker(environ)
    return None


def main() -> int:
    problem = check(main_command(), os.environ)
    if problem is None:
        print("healthy")
        return 0
    print(f"unhealthy: {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
