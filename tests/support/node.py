"""The Node packages of the client tests, installed from their lockfile when missing, so that `just test`
on a fresh clone needs nothing but Node and npm (CI installs them beforehand: `npm ci` in .ci/run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def ensure_node_modules(folder: Path) -> None:
    """``npm ci`` in ``folder`` (package-lock.json, exact versions) unless its node_modules exists."""
    if (folder / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    assert npm is not None, f"npm is needed to install {folder.name}'s packages (Node 20+)"
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"npm ci in {folder} failed:\n{done.stderr[-2000:]}"
