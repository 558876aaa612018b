"""schemathesis against the served app (issue 20): the documented operations, ``--checks all``, all
phases (examples, coverage, fuzzing, stateful), zero failures. Bounds and reasons:
docs/decisions/0010-mvp-fit.md.

The app is `xenios-ai serve` on Granian (the session's API server: real PostgreSQL, Redis, the fake
OpenRouter) with the session's job worker, so the jobs schemathesis submits run and a job's SSE events end
with its terminal state; an LLM stream ends with ``done``. Calls carry a valid X-API-Key and a user JWT.
Not run:
- POST /v1/audio/transcriptions: it answers when its transcription job is done, and that job queues on
  the worker behind the few hundred this run submits; no bounded wait covers it (30 s request timeouts,
  found). tests/e2e/test_openai_audio.py covers the route.
- deprecated operations (``--exclude-deprecated``): DELETE /api/v1/jobs/{id}, the former cancel, kept one
  release; a job it "deleted" stays readable (use_after_free), hence POST /api/v1/jobs/{id}/cancel.
Uploads get real files and list cursors real ones, webhook URLs are left out of positive cases
(tests/support/schemathesis_hooks.py: what a schema cannot say). The fake answers JSON tasks with the
smallest value of the requested schema (labels are made up by schemathesis). The JUnit report is kept in
the test's temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.processes import ROOT

MAX_EXAMPLES = 5
"""Per operation and phase; with the coverage and stateful phases about 1,700 calls: 10.6 s at load average
0.8, 28 s at 7.8, on 2 cores."""
SEED = 20


@pytest.mark.usefixtures("job_worker")
def test_schemathesis_checks_all_find_nothing(
    api_server_url: str, fake_openrouter: FakeOpenRouter, tmp_path: Path
) -> None:
    fake_openrouter.default = Reply(schema_instance=True)
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{api_server_url}/schema/openapi.json",
            "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
            "--workers", "2", "--request-timeout", "30",
            "--exclude-deprecated", "--exclude-path", "/v1/audio/transcriptions",
            "-H", f"X-API-Key: {tokens.API_KEY}",
            "-H", f"Authorization: Bearer {tokens.hs256_token('schemathesis-user')}",
            "--report", "junit", "--report-dir", str(tmp_path),
        ],
        check=False, capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    seconds = time.monotonic() - started
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(f"schemathesis: {seconds:.1f} s\n{summary}")
    report = "\n".join(line[:400] for line in run.stdout.splitlines())  # curl lines carry the uploads
    assert run.returncode == 0, report[-30000:] + run.stderr[-3000:]
    assert "Tested: " in summary
