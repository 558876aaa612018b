"""Extraction in layout mode without its models (issue 20): the extraction worker refuses to start and
says how to fix it, and readiness reports no extraction capability; a worker that can extract (native)
turns the capability on. Real worker processes on an isolated database and Redis namespace. A job chooses
its PDF pipeline (``options.pipeline``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.e2e.test_extraction_jobs import failed_with, succeeded
from tests.support.config import make_settings
from tests.support.processes import WorkerProcess, start_worker, stop_process, wait_until
from xenios_ai.api.app import create_app


async def _capabilities(env: dict[str, str]) -> dict[str, Any]:
    async with AsyncTestClient(create_app(make_settings(env))) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200  # the API's own dependencies answer; submits wait for a worker
    capabilities: dict[str, Any] = response.json()["capabilities"]
    return capabilities


async def test_layout_mode_without_models_refuses_to_start_and_readiness_says_so(
    fresh_env: Any, tmp_path: Path
) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    env = fresh_env(DOCLING_PIPELINE="layout", DOCLING_ARTIFACTS_PATH=str(empty))
    log = tmp_path / "layout-worker.log"
    worker = WorkerProcess(env, queues="extraction", processes=1, threads=1, log_path=log)
    worker.start()
    assert worker.process is not None
    try:
        code = worker.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        stop_process(worker.process, group=True)
        pytest.fail(f"the layout-mode worker without models kept running; log: {log}")
    assert code == 3, log.read_text()[-3000:]
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    refused = [line for line in lines if line.get("level") == "CRITICAL"]
    assert refused, log.read_text()[-3000:]
    message = refused[0]["msg"]
    assert "cannot serve the extraction queue" in message
    assert "docling-tools models download" in message  # the fix, in the log

    capabilities = await _capabilities(env)
    assert capabilities["extraction"] == {"status": "unavailable", "workers": 0, "kinds": ["extraction"]}

    native = start_worker(
        env | {"DOCLING_PIPELINE": "native"}, tmp_path / "native-worker.log", queues="extraction"
    )
    try:
        wait_until(native.registered, 30, "the native worker to register")
        capabilities = await _capabilities(env)
        assert capabilities["extraction"]["status"] == "ok"
        assert capabilities["extraction"]["workers"] == 1
        assert capabilities["transcription"]["status"] == "unavailable"
    finally:
        native.stop()


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
@pytest.mark.usefixtures("job_worker")
def test_a_job_chooses_its_pdf_pipeline(api_server_url: str) -> None:
    """On the session's native worker without torch: a PDF asking for layout fails with the fix, the same
    PDF natively and a DOCX asking for layout (the pipeline is the PDF converter's) succeed."""
    job = failed_with(api_server_url, "multipage.pdf", "layout_models_unavailable", {"pipeline": "layout"})
    assert "docling-tools models download" in job["error"]["message"]
    native = succeeded(api_server_url, "multipage.pdf", {"pipeline": "native"})
    assert native["pipeline"] == "native"
    assert native["page_count"] == 4
    docx = succeeded(api_server_url, "report.docx", {"pipeline": "layout"})
    assert docx["markdown"]
