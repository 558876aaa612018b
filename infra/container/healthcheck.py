#!/usr/bin/env python3
"""Container health check of the xenios-ai image, for the API and for the workers.

One image runs every process kind and the command chooses, so this check looks at the command of the
container's main process (``/proc/1/cmdline``; with ``init: true`` PID 1 is docker-init and the command
follows it):

- ``xenios-ai serve ... --port N``: healthy when ``GET http://127.0.0.1:N/health/ready`` answers 200
  (PostgreSQL and Redis answer); the port is ``--port``, else ``PORT``, else 8000.
- ``xenios-ai worker ...`` (which execs ``python -m dramatiq ...``): healthy when Redis (``REDIS_URL``)
  answers PING: a worker without its broker can do nothing, and Dramatiq ends the main process itself
  when a worker process dies.
- anything else (``migrate``, a shell): healthy.

Exit status 0 is healthy and 1 unhealthy (Docker's convention). It uses only the standard library plus
redis-py, which the image has, and finishes within a few seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

TIMEOUT_S = 3.0


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


def check_worker(redis_url: str | None) -> str | None:
    """None when Redis answers PING, else the reason."""
    if not redis_url:
        return "REDIS_URL is not set"
    import redis  # only workers need it

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        client.ping()
    except redis.RedisError as exc:
        return f"Redis does not answer: {exc}"
    return None


def check(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """None when the process described by ``argv`` is healthy, else why not."""
    if "serve" in argv:
        return check_api(api_port(argv, environ))
    if "worker" in argv or "dramatiq" in argv:
        return check_worker(environ.get("REDIS_URL"))
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
