"""Start the compose stack in order and wait for its health checks, with docker or podman.

    python3 infra/container/stack.py up [--engine podman] [--project NAME] [-f FILE ...] [--timeout S]

Order: PostgreSQL and Redis healthy, then `migrate` run to completion, then the API and the workers
healthy. Compose does this by itself through `depends_on` conditions where it can; this script exists for
podman: podman-compose ignores `service_healthy` before podman 4.6, and podman runs health checks from
systemd timers, so on a host without systemd (CI containers, this sandbox) no check ever runs and nothing
turns healthy. Here every check is run explicitly (`podman healthcheck run`), which also records the
container's health, so `podman ps` shows it afterwards. Standard library only: it runs before any venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

INFRA = ("postgres", "redis")
MIGRATE = "migrate"


class StackError(RuntimeError):
    """The stack did not come up; the message says which service and why."""


class Stack:
    """One compose project: its engine, files and name."""

    def __init__(
        self, engine: str, project: str, files: Sequence[str] = (), compose: str | None = None
    ) -> None:
        self.engine = engine
        self.podman = os.path.basename(engine) == "podman"
        self.project = project
        self.files = list(files)
        if compose is None:
            compose = (
                os.environ.get("PODMAN_COMPOSE", "podman-compose") if self.podman else f"{engine} compose"
            )
        self.compose_cmd = shlex.split(compose)

    def compose(
        self, *args: str, check: bool = True, capture: bool = False
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*self.compose_cmd, "--project-name", self.project]
        for file in self.files:
            cmd += ["--file", file]
        result = subprocess.run([*cmd, *args], text=True, capture_output=capture, check=False)
        if check and result.returncode != 0:
            detail = ((result.stdout or "") + (result.stderr or ""))[-3000:] if capture else ""
            raise StackError(f"{shlex.join(cmd + list(args))} exited {result.returncode}\n{detail}")
        return result

    def engine_out(self, *args: str) -> str:
        result = subprocess.run([self.engine, *args], text=True, capture_output=True, check=False)
        if result.returncode != 0:
            raise StackError(f"{self.engine} {shlex.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def container(self, service: str) -> str:
        """The id of the service's container (the first, if scaled)."""
        ids = self.engine_out(
            "ps", "--all", "--quiet", "--no-trunc",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).split()  # fmt: skip
        if not ids:
            raise StackError(f"no container for service {service}")
        return ids[0]

    def inspect(self, service: str) -> dict[str, object]:
        data = json.loads(self.engine_out("inspect", "--type", "container", self.container(service)))
        container: dict[str, object] = data[0]
        return container

    def state(self, service: str) -> dict[str, object]:
        state = self.inspect(service)["State"]
        assert isinstance(state, dict)
        return state

    def healthy(self, service: str) -> tuple[bool, str]:
        """Whether the service's health check passes now (podman: runs it; docker: reads its status). A
        container without a health check (the `s3` profile's SeaweedFS: its image holds only `weed`)
        counts once it runs."""
        container = self.inspect(service)
        state = container["State"]
        assert isinstance(state, dict)
        if state.get("Status") != "running":
            raise StackError(f"{service} is {state.get('Status')} (exit code {state.get('ExitCode')})")
        config = container.get("Config")
        if isinstance(config, dict) and not config.get("Healthcheck"):
            return True, "running (no health check)"
        if self.podman:
            result = subprocess.run(
                [self.engine, "healthcheck", "run", self.container(service)],
                text=True, capture_output=True, check=False,
            )  # fmt: skip
            return result.returncode == 0, (result.stdout + result.stderr).strip()
        health = state.get("Health") or state.get("Healthcheck") or {}
        status = health.get("Status") if isinstance(health, dict) else None
        return status == "healthy", str(status)

    def wait_healthy(
        self, services: Sequence[str], timeout: float, interval: float = 2.0
    ) -> dict[str, float]:
        """Wait until every service's check passes; returns the seconds each took."""
        start = time.monotonic()
        pending = dict.fromkeys(services, "not checked")
        took: dict[str, float] = {}
        while pending:
            for service in list(pending):
                ok, detail = self.healthy(service)
                if ok:
                    took[service] = time.monotonic() - start
                    del pending[service]
                else:
                    pending[service] = detail
            if not pending:
                break
            if time.monotonic() - start > timeout:
                raise StackError(f"not healthy after {timeout:.0f} s: {pending}")
            time.sleep(interval)
        return took

    def wait_exit(self, service: str, timeout: float) -> int:
        """Wait until the service's container has exited; returns its exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(service)
            if state.get("Status") in ("exited", "stopped"):
                code = state.get("ExitCode")
                return code if isinstance(code, int) else -1
            time.sleep(1)
        raise StackError(f"{service} still running after {timeout:.0f} s")

    def up(self, services: Sequence[str], timeout: float = 300) -> dict[str, float]:
        """Bring the stack up in order; returns the seconds until each service was healthy. Compose's
        own output is shown only when a step fails (podman's, without systemd, is mostly noise about
        health-check timers it cannot create)."""
        start = time.monotonic()
        say(f"starting {' '.join(INFRA)}")
        self.compose("up", "--detach", *INFRA, capture=True)
        took = self.wait_healthy(INFRA, timeout)
        say(f"running {MIGRATE}")
        self.compose("up", "--detach", "--no-deps", MIGRATE, capture=True)
        code = self.wait_exit(MIGRATE, timeout)
        if code != 0:
            self.compose("logs", MIGRATE, check=False)
            raise StackError(f"{MIGRATE} exited {code}")
        took[MIGRATE] = time.monotonic() - start
        apps = [s for s in services if s not in (*INFRA, MIGRATE)]
        say(f"starting {' '.join(apps)}")
        self.compose("up", "--detach", "--no-deps", *apps, capture=True)
        offset = time.monotonic() - start
        took |= {s: offset + t for s, t in self.wait_healthy(apps, timeout).items()}
        return took


def say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def app_services(stack: Stack) -> list[str]:
    """Every service of the compose file but the database, Redis and migrate."""
    names = stack.compose("config", "--services", capture=True).stdout.split()
    return [n for n in names if n not in (*INFRA, MIGRATE)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("command", choices=["up"])
    parser.add_argument("services", nargs="*", help="app services (default: all)")
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE", "docker"))
    parser.add_argument("--compose", default=None, help="the compose command (default: by engine)")
    parser.add_argument("--project", default="xenios-ai")
    parser.add_argument("-f", "--file", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    stack = Stack(args.engine, args.project, args.file, args.compose)
    try:
        took = stack.up(args.services or app_services(stack), args.timeout)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    for service, seconds in took.items():
        print(f"{service:<22} ready after {seconds:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
