"""Logging: a logged exception shows its traceback, never the values of the frames' local variables."""

from __future__ import annotations

import io
import logging
import sys
import uuid
from collections.abc import Iterator

import pytest
from loguru import logger

from xenios_ai.log import setup_logging
from xenios_ai.settings_load import load_settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging configures the process; put loguru and stdlib logging back as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logger.remove()
    logger.configure(patcher=None, extra={})
    logger.add(sys.stderr)
    root.handlers[:] = handlers
    root.setLevel(level)


def _send(headers: dict[str, str]) -> None:
    raise ConnectionError("the upstream refused the request")


def _call_upstream(api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    _send(headers)


@pytest.mark.parametrize("log_format", ["pretty", "json"])
def test_logged_exception_shows_no_local_values(log_format: str, restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging(load_settings({"LOG_FORMAT": log_format}, dotenv=False), stream=out)
    api_key = f"sk-live-{uuid.uuid4().hex}"
    try:
        _call_upstream(api_key)
    except ConnectionError:
        logger.exception("calling the upstream failed")
    text = out.getvalue()
    assert "calling the upstream failed" in text
    assert "_send(headers)" in text  # the traceback is there, with its source lines
    assert "ConnectionError: the upstream refused the request" in text
    assert api_key not in text
