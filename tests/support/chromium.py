"""Debian's headless Chromium for the browser tests (tests/e2e/test_ops_dashboard.py, test_swagger_ui.py).

XENIOS_TEST_CHROMIUM names another binary. Without one a test fails and says so: it is never skipped.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    path = os.environ.get("XENIOS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path}: install Debian's chromium (`apt-get install -y chromium`, which .ci/run "
            "does as root) or set XENIOS_TEST_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    return path
