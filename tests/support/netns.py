"""Network namespaces as stand-in machines for the multi-host test (tests/e2e/test_multihost.py).

Each "host" is a namespace joined to the root namespace by a veth pair of its own: 10.231.N.1/24 on the
root side, 10.231.N.2/24 inside, a default route back through the pair. Nothing else gets an address, so
a process in a namespace reaches only its own loopback and what the root namespace binds to the root-side
addresses (the test's PostgreSQL, Redis, SeaweedFS and fake OpenRouter). Names carry the test process's
pid, so concurrent sessions (``pytest -n 2``, another checkout) never collide; `Hosts.close` removes
every namespace and link it made, also after a failure, and a new `Hosts` first removes what a killed
earlier run of the same kind left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "xmh"
"""Namespaces are ``xmh-<pid>-<n>``, root-side links ``xmh<pid>h<n>``, inner ones ``xmh<pid>n<n>``."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def refusal() -> str | None:
    """Why this machine cannot make network namespaces for the test, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = f"{PREFIX}-{os.getpid()}-probe"
    try:
        made = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return "the ip command (iproute2) is missing"
    if made.returncode != 0:
        return f"ip netns add is refused here: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One namespace and its veth pair."""

    name: str
    outside: str
    """The root side's address (what the root namespace binds services to)."""
    inside: str
    """The namespace's address (what its servers listen on)."""
    link: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        listed = _ip("netns", "pids", self.name, check=False)
        return [int(pid) for pid in listed.stdout.split()] if listed.returncode == 0 else []


class Hosts:
    """Namespaces made on demand (`add`), killed whole (`kill`), all removed by `close`."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hosts: list[Host] = []
        _remove_leftovers()
        used = _ip("-4", "-o", "addr", "show").stdout
        base = (os.getpid() % 80) * 3
        self._octets = [o for o in range(256) if f"10.231.{o}." not in used]
        self._octets.sort(key=lambda o: (o < base, o))  # from this pid's slot on, then the rest

    def add(self) -> Host:
        index = len(self.hosts)
        octet = self._octets[index]
        host = Host(
            name=f"{PREFIX}-{os.getpid()}-{index}",
            outside=f"10.231.{octet}.1",
            inside=f"10.231.{octet}.2",
            link=f"{self.tag}h{index}",
        )
        self.hosts.append(host)  # before anything is made: close() removes a half-made host too
        peer = f"{self.tag}n{index}"
        _ip("netns", "add", host.name)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", host.name)
        _ip("addr", "add", f"{host.outside}/24", "dev", host.link)
        _ip("link", "set", host.link, "up")
        inside = ["netns", "exec", host.name, "ip"]
        _ip(*inside, "addr", "add", f"{host.inside}/24", "dev", peer)
        _ip(*inside, "link", "set", peer, "up")
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "route", "add", "default", "via", host.outside)
        return host

    def kill(self, host: Host, timeout: float = 10) -> list[int]:
        """SIGKILL every process in ``host``'s namespace (the machine losing power) and delete it: its
        veth pair goes with it. Returns the pids killed."""
        killed = _kill_all(host.name, timeout)
        _ip("netns", "del", host.name, check=False)
        _ip("link", "del", host.link, check=False)
        return killed

    def close(self) -> None:
        for host in self.hosts:
            self.kill(host)


def _kill_all(name: str, timeout: float) -> list[int]:
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = _ip("netns", "pids", name, check=False)
        pids = [int(pid) for pid in listed.stdout.split()] if listed.returncode == 0 else []
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    raise TimeoutError(f"processes left in namespace {name} after SIGKILL")


def _remove_leftovers() -> None:
    """Namespaces and links of this kind whose test process is gone (a run killed before `close`)."""
    for entry in _ip("netns", "list", check=False).stdout.split("\n"):
        name = entry.split(" ")[0]
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not _alive(int(parts[1])):
            _kill_all(name, 10)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        link = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        pid = link.removeprefix(PREFIX).split("h")[0]
        if link.startswith(PREFIX) and pid.isdigit() and not _alive(int(pid)):
            _ip("link", "del", link, check=False)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
