"""Uploads for file job kinds: streamed to storage, type from the bytes, size limit while streaming.

The route is a test kind's (tests/support/upload_app.py), written as the extraction and transcription
routes are: a few lines over `api.uploads.receive_upload`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.support import tokens
from tests.support.asgi import captured_logs, send_then_disconnect
from tests.support.config import make_settings
from tests.support.jobs import form_part_head, multipart_form
from tests.support.processes import ROOT
from tests.support.upload_app import with_upload_route
from xenios_ai.api.app import create_app
from xenios_ai.settings import Settings

DOCUMENTS = ROOT / "tests" / "data" / "documents"
URL = "/api/v1/jobs/docs-test"
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def settings_here(fresh_env: Callable[..., dict[str, str]]) -> Settings:
    return make_settings(fresh_env(), max_upload_bytes=LIMIT)


@pytest.fixture
async def api(settings_here: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(with_upload_route(create_app(settings_here))) as client:
        yield client


def _stored(settings: Settings) -> list[Path]:
    return [p for p in settings.storage_path.rglob("*") if p.is_file()]


async def test_an_upload_is_stored_and_its_type_read_from_the_bytes(
    api: AsyncTestClient[Any], settings_here: Settings
) -> None:
    data = (DOCUMENTS / "notes.md").read_bytes()
    response = await api.post(
        URL,
        files={"file": ("renamed.pdf", data, "application/pdf")},  # name and header lie; bytes decide
        data={"options": '{"pages": 3}'},
        headers=tokens.headers(),
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    job = (await api.get(f"/api/v1/jobs/{job_id}", headers=tokens.headers())).json()
    assert job["kind"] == "docs_test"
    assert job["upload"] == {"filename": "renamed.pdf", "format": "markdown", "size": len(data)}
    stored = settings_here.storage_path / "jobs" / job_id / "upload"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(data).digest()


async def test_fields_may_follow_the_file_and_bad_options_leave_no_file(
    api: AsyncTestClient[Any], settings_here: Settings
) -> None:
    before = _stored(settings_here)
    body, content_type = multipart_form(
        ("file", "report.docx", (DOCUMENTS / "report.docx").read_bytes()),
        ("options", None, b'{"pages": "many"}'),
    )
    response = await api.post(URL, content=body, headers=tokens.headers() | {"content-type": content_type})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_options"
    assert _stored(settings_here) == before


async def test_an_unsupported_type_is_415_and_nothing_is_stored(
    api: AsyncTestClient[Any], settings_here: Settings
) -> None:
    before = _stored(settings_here)
    data = (DOCUMENTS / "image_renamed.pdf").read_bytes()
    response = await api.post(
        URL, files={"file": ("scan.pdf", data, "application/pdf")}, headers=tokens.headers()
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_format"
    assert "PDF, DOCX, Markdown" in response.json()["detail"]
    assert _stored(settings_here) == before


async def test_a_declared_length_over_the_limit_is_413(api: AsyncTestClient[Any]) -> None:
    response = await api.post(
        URL,
        content=b"--BOUNDARY--\r\n",
        headers=tokens.headers()
        | {"content-type": "multipart/form-data; boundary=BOUNDARY", "content-length": str(100 * LIMIT)},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_a_file_over_the_limit_is_413_and_nothing_is_stored(
    api: AsyncTestClient[Any], settings_here: Settings
) -> None:
    before = _stored(settings_here)
    body, content_type = multipart_form(("file", "big.md", b"# Big\n" + b"lorem ipsum " * (LIMIT // 10)))
    response = await api.post(URL, content=body, headers=tokens.headers() | {"content-type": content_type})
    assert response.status_code == 413
    assert _stored(settings_here) == before


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        # JSON is a job from a reference now ({"source": ...}): without one it is 422 invalid_source.
        ("application/json", b"{}", "invalid_source"),
        ("text/plain", b"a file", "multipart_required"),
        ("multipart/form-data; boundary=BOUNDARY", b"--BOUNDARY--\r\n", "missing_file"),
    ],
)
async def test_a_form_without_a_file_is_refused(
    api: AsyncTestClient[Any], content_type: str, body: bytes, code: str
) -> None:
    response = await api.post(URL, content=body, headers=tokens.headers() | {"content-type": content_type})
    assert response.status_code in (415, 422)
    assert response.json()["code"] == code


async def test_an_idempotent_replay_keeps_one_job_and_one_file(
    api: AsyncTestClient[Any], settings_here: Settings
) -> None:
    data = (DOCUMENTS / "page.html").read_bytes()
    headers = tokens.headers() | {"Idempotency-Key": "upload-once"}
    first = await api.post(URL, files={"file": ("page.html", data)}, headers=headers)
    stored = _stored(settings_here)
    again = await api.post(URL, files={"file": ("page.html", data)}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert _stored(settings_here) == stored
    other = await api.post(URL, files={"file": ("page.html", data + b"<p>more</p>")}, headers=headers)
    assert other.status_code == 409
    assert _stored(settings_here) == stored


async def test_a_client_gone_mid_upload_is_499_and_nothing_is_stored(
    api: AsyncTestClient[Any], settings_here: Settings
) -> None:
    before = _stored(settings_here)
    with captured_logs() as logs:
        status, body = await send_then_disconnect(
            api.app,
            "POST",
            URL,
            tokens.headers() | {"content-type": "multipart/form-data; boundary=BOUNDARY"},
            form_part_head("file", "half.md") + b"# Half\n" + b"text " * 4000,
        )
    assert status == 499
    assert body["code"] == "client_disconnected"
    assert all(r["exception"] is None and r["level"] != "ERROR" for r in logs)
    assert _stored(settings_here) == before
