"""`jobs.supervisor`: a child that is killed is started again while the others keep running, the restart
is counted, and SIGTERM stops them all. Children here are small sleeping interpreters; the real worker
processes under it are killed in tests/e2e/test_chaos.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.processes import wait_until

SUPERVISE = """
import sys
from xenios_ai.jobs.supervisor import Supervisor
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
counted = []
def on_restart():
    counted.append(1)
    print(f"restarts={len(counted)}", flush=True)
sys.exit(Supervisor([("a", sleeper), ("b", sleeper)], on_restart=on_restart).run())
"""


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_killed_child_is_restarted_and_sigterm_stops_all(tmp_path: Path) -> None:
    out = tmp_path / "supervisor.out"
    with out.open("wb") as sink:
        supervisor = subprocess.Popen(
            [sys.executable, "-c", SUPERVISE], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: len(_children(supervisor.pid)) == 2, 30, "two children")
        first, second = _children(supervisor.pid)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: "restarts=1" in out.read_text(), 30, "the restart to be counted")
        wait_until(lambda: len(_children(supervisor.pid)) == 2, 30, "the child started again")
        now = _children(supervisor.pid)
        assert second in now  # the other one kept running
        assert first not in now
        assert supervisor.poll() is None

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    log = out.read_text()
    assert "stopped unexpectedly with code -9; restarting it" in log
    assert "restarts=2" not in log
