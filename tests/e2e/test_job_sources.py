"""Jobs from a reference instead of bytes: ``{"source": {"storage_key": ...}}`` and ``{"source": {"url": ...}}``.

The API checks the reference and never reads the bytes; the worker copies the source into the job's own
upload blob (sniffed, size-limited) and runs the job as if it had been uploaded. Each failure has its own
code: source_forbidden, source_not_found, source_too_large, source_unreachable.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import tokens
from tests.support.http import LocalServer, QuietHandler
from tests.support.jobs import accepted_id, wait_for_job
from tests.support.processes import ROOT, WorkerProcess

pytestmark = pytest.mark.usefixtures("job_worker")
NOTES = (ROOT / "tests" / "data" / "documents" / "notes.md").read_bytes()


def _submit(base_url: str, kind: str, body: dict[str, Any], sub: str = "user-1") -> httpx.Response:
    return httpx.post(f"{base_url}/api/v1/jobs/{kind}", json=body, headers=tokens.headers(sub), timeout=30)


class FileServer(LocalServer):
    """Serves NOTES at /notes.md; /missing is 404; /huge announces 10 GB; /hop redirects to ``target``."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.target = ""
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/notes.md":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(NOTES)))
                    self.end_headers()
                    self.wfile.write(NOTES)
                elif self.path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 * 1024**3))
                    self.end_headers()
                    self.wfile.write(b"x" * 1024)
                elif self.path == "/hop":
                    self.send_response(302)
                    self.send_header("Location", server.target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        super().__init__(Handler)


@pytest.fixture(scope="module")
def files() -> Any:
    with FileServer() as server:
        yield server


def test_a_storage_key_source_runs_like_an_upload(
    api_server_url: str, job_worker: WorkerProcess, test_env: dict[str, str]
) -> None:
    stored = Path(test_env["STORAGE_DIR"]) / "uploads" / "user-1" / "notes.md"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(NOTES)
    response = _submit(api_server_url, "extraction", {"source": {"storage_key": "uploads/user-1/notes.md"}})
    job = wait_for_job(api_server_url, accepted_id(response), timeout=120)
    assert job["status"] == "succeeded", job
    assert "Session Notes" in job["result"]["markdown"]
    assert job["source"] == {"storage_key": "uploads/user-1/notes.md"}
    assert (job["upload"]["format"], job["upload"]["size"]) == ("markdown", len(NOTES))
    assert stored.read_bytes() == NOTES  # the caller's object is read, never moved or deleted


@pytest.mark.parametrize(
    ("source", "status", "code"),
    [
        ({"storage_key": "uploads/user-2/notes.md"}, 403, "source_forbidden"),  # another user's prefix
        ({"storage_key": "jobs/x/upload"}, 403, "source_forbidden"),  # the service's own blobs
        ({"storage_key": "../etc/passwd"}, 422, "invalid_source"),
        ({"url": "https://example.org/a.pdf"}, 403, "source_forbidden"),  # host not allowed
        ({"url": "ftp://127.0.0.1/a.pdf"}, 422, "invalid_source"),
        ({"storage_key": "uploads/user-1/a", "url": "http://127.0.0.1/a"}, 422, "invalid_source"),
    ],
)
def test_the_api_refuses_sources_it_may_not_read(
    api_server_url: str, source: dict[str, str], status: int, code: str
) -> None:
    response = _submit(api_server_url, "extraction", {"source": source})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_a_url_source_is_fetched_by_the_worker(api_server_url: str, files: FileServer) -> None:
    url = f"{files.base_url}/notes.md"
    response = _submit(api_server_url, "extraction", {"source": {"url": url}, "options": {"chunking": False}})
    job_id = accepted_id(response)
    job = wait_for_job(api_server_url, job_id, timeout=120)
    assert job["status"] == "succeeded", job
    assert "Session Notes" in job["result"]["markdown"]
    assert job["result"]["chunks"] == []
    assert job["upload"]["filename"] == "notes.md"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_each_failure_of_a_url_source_has_its_code(api_server_url: str, files: FileServer) -> None:
    files.target = "https://example.org/elsewhere"  # a redirect to a host not allowed is checked again
    cases = {
        "missing": ("source_not_found", f"{files.base_url}/missing"),
        "huge": ("source_too_large", f"{files.base_url}/huge"),
        "hop": ("source_forbidden", f"{files.base_url}/hop"),
        "wav": ("unsupported_format", f"{files.base_url}/notes.md"),
    }
    ids = {}
    for name, (_, url) in cases.items():
        kind = "transcription" if name == "wav" else "extraction"  # markdown is not audio
        ids[name] = accepted_id(_submit(api_server_url, kind, {"source": {"url": url}}))
    for name, (code, _) in cases.items():
        job = wait_for_job(api_server_url, ids[name], timeout=120)
        assert (job["status"], job["error"]["code"]) == ("failed", code), job
        assert job["upload"] is None
    assert "/elsewhere" not in files.requests


def test_a_missing_storage_key_and_an_unreachable_url_fail_with_their_codes(
    api_server_url: str, test_env: dict[str, str]
) -> None:
    missing = _submit(api_server_url, "extraction", {"source": {"storage_key": "uploads/user-1/nope.md"}})
    closed = f"http://127.0.0.1:{_free_port()}/notes.md"  # nothing listens there
    unreachable = _submit(api_server_url, "extraction", {"source": {"url": closed}})
    job = wait_for_job(api_server_url, accepted_id(missing), timeout=120)
    assert (job["status"], job["error"]["code"]) == ("failed", "source_not_found"), job
    job = wait_for_job(api_server_url, accepted_id(unreachable), timeout=120)
    assert (job["status"], job["error"]["code"]) == ("failed", "source_unreachable"), job
    assert job["attempts"] == 2  # transient: retried (an extraction has two attempts) before giving up
