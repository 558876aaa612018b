"""Fixtures of the client tests: the API as deployed (Granian), with quick LLM deadlines, for real SDKs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ApiServer

FAST_LLM = {
    "LLM_TIMEOUT_SECONDS": "2",
    "LLM_FIRST_TOKEN_TIMEOUT_SECONDS": "1",
    "LLM_STREAM_IDLE_TIMEOUT_SECONDS": "1",
    "LLM_RETRY_BACKOFF_SECONDS": "0.01",
    "LLM_MAX_RETRY_AFTER_SECONDS": "1.5",
    "LLM_USAGE_FLUSH_SECONDS": "0.05",
}
"""A hung primary or a stalled stream costs a second, not the production deadlines."""


@pytest.fixture(scope="session")
def openai_face_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs") / "openai-face.log"


@pytest.fixture(scope="session")
def openai_face_url(test_env: dict[str, str], openai_face_log: Path) -> Iterator[str]:
    """`xenios-ai serve` against the session's fake OpenRouter, with `FAST_LLM` deadlines; the SDKs'
    ``base_url`` is this plus ``/v1``."""
    server = ApiServer({**test_env, **FAST_LLM}, log_path=openai_face_log)
    server.start()
    yield server.url
    server.stop()
