"""Uploads over real HTTP (Granian): limits act while the body streams in, and memory stays flat.

Raw sockets send part of a body and then wait: a server that answered only after reading everything
would never answer, so a response proves the rest was not read.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.data.make_documents import DOCUMENTS
from tests.support import tokens
from tests.support.jobs import form_part_head
from tests.support.processes import ApiServer, child_pid, status_kb
from xenios_ai.api.uploads import FORM_OVERHEAD_BYTES

LIMIT = 100 * 1024 * 1024
CHUNK = 64 * 1024
PATH = "/api/v1/jobs/docs-test"


@pytest.fixture(scope="module")
def upload_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs") / "upload-api.log"


@pytest.fixture(scope="module")
def upload_server(fresh_env: Callable[..., dict[str, str]], upload_log: Path) -> Iterator[tuple[str, int]]:
    """Granian serving the API plus a test upload route; yields (base URL, worker pid)."""
    server = ApiServer(
        fresh_env(MAX_UPLOAD_BYTES=str(LIMIT)),
        log_path=upload_log,
        factory="tests.support.upload_app:app_factory",
    )
    server.start()
    try:
        yield server.url, child_pid(server.process)
    finally:
        server.stop()


def _head(port: int, *, chunked: bool, content_length: int | None = None, request_id: str = "") -> bytes:
    headers = [
        f"POST {PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: multipart/form-data; boundary=BOUNDARY",
        *(f"{name}: {value}" for name, value in tokens.headers().items()),
    ]
    if request_id:
        headers.append(f"X-Request-ID: {request_id}")
    if chunked:
        headers.append("Transfer-Encoding: chunked")
    if content_length is not None:
        headers.append(f"Content-Length: {content_length}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _response_after(sock: socket.socket, timeout: float = 10) -> tuple[int, bytes]:
    """Read the response (status and what arrived of the rest); the request body is left unfinished."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        received = sock.recv(4096)
        if not received:
            break
        data += received
    return int(data.split(b" ", 2)[1]), data


def _status_after(sock: socket.socket, timeout: float = 10) -> int:
    return _response_after(sock, timeout)[0]


def _send_until_refused(sock: socket.socket, payload: bytes, total: int) -> int:
    """Send ``payload`` as chunks until ``total`` bytes went out or the server stopped reading."""
    sent = 0
    try:
        while sent < total:
            sock.sendall(_chunk(payload))
            sent += len(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were still sending
    return sent


def _log_lines(log: Path, request_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The API's JSON log lines of one request, once its request line (with ``status``) is there."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("request_id") == request_id]
        if any("status" in line for line in mine) or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_a_file_past_the_limit_is_refused_without_reading_the_rest(upload_server: tuple[str, int]) -> None:
    url, _ = upload_server
    port = _port(url)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, chunked=True) + _chunk(form_part_head("file", "big.md") + b"# Big\n"))
        sent = 0
        payload = b"lorem ipsum " * (CHUNK // 12)
        try:
            while sent <= LIMIT + 4 * CHUNK:  # a little past the limit, then the body just stops
                sock.sendall(_chunk(payload))
                sent += len(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        assert _status_after(sock) == 413


def test_an_unsupported_file_is_refused_from_its_first_bytes(upload_server: tuple[str, int]) -> None:
    url, _ = upload_server
    port = _port(url)
    # A PNG named .pdf, padded past the 8 KiB the sniffer reads (it waits for them, or the file's end).
    head = (DOCUMENTS / "image_renamed.pdf").read_bytes() + b"\0" * 8192
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, chunked=True) + _chunk(form_part_head("file", "scan.pdf") + head))
        assert _status_after(sock) == 415  # while the client still "has" megabytes to send


def test_a_declared_length_over_the_limit_is_refused_before_any_body(upload_server: tuple[str, int]) -> None:
    url, _ = upload_server
    port = _port(url)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, chunked=False, content_length=2 * LIMIT))
        assert _status_after(sock) == 413


def test_a_90_mb_upload_streams_through_in_flat_memory(upload_server: tuple[str, int]) -> None:
    url, worker_pid = upload_server
    size = 90 * 1024 * 1024
    line = b"Coach and client talk about the week, the plan, the runs and the sleep.\n"

    def body() -> Iterator[bytes]:
        yield form_part_head("file", "session.md") + b"# Session notes\n"
        sent = 0
        block = line * (CHUNK // len(line))
        while sent < size:
            yield block
            sent += len(block)
        yield b"\r\n--BOUNDARY--\r\n"

    httpx.get(f"{url}/health/live")
    before = status_kb(worker_pid, "VmHWM")
    started = time.monotonic()
    response = httpx.post(
        f"{url}{PATH}",
        content=body(),
        headers=tokens.headers() | {"content-type": "multipart/form-data; boundary=BOUNDARY"},
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    job = httpx.get(f"{url}/api/v1/jobs/{response.json()['job_id']}", headers=tokens.headers()).json()
    assert job["upload"]["format"] == "markdown"
    assert job["upload"]["size"] > size
    growth_mib = (status_kb(worker_pid, "VmHWM") - before) / 1024
    print(f"90 MB upload: {elapsed:.2f} s, API peak RSS growth {growth_mib:.1f} MiB")
    assert growth_mib < 40


def test_a_chunked_body_with_a_huge_preamble_is_refused_past_the_limit(
    upload_server: tuple[str, int],
) -> None:
    """The parser skips what comes before the first boundary; the body's total size still counts."""
    url, _ = upload_server
    port = _port(url)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, chunked=True))
        _send_until_refused(sock, b"preamble " * (CHUNK // 9), LIMIT + FORM_OVERHEAD_BYTES + 4 * CHUNK)
        status, response = _response_after(sock)
    assert status == 413
    assert b"payload_too_large" in response


def test_reading_stops_at_the_final_boundary(upload_server: tuple[str, int]) -> None:
    """A form then an endless epilogue: the job is accepted while the client still "has" more to send."""
    url, _ = upload_server
    port = _port(url)
    form = form_part_head("file", "notes.md") + b"# Notes\n\nThe plan for the week.\r\n--BOUNDARY--\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, chunked=True) + _chunk(form) + _chunk(b"epilogue " * (CHUNK // 9)))
        status, response = _response_after(sock)
    assert status == 202, response
    job_id = response.split(b'"job_id":"', 1)[1].split(b'"', 1)[0].decode()
    job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=tokens.headers()).json()
    assert job["upload"]["format"] == "markdown"
    assert job["upload"]["size"] == len(b"# Notes\n\nThe plan for the week.")


def test_a_client_gone_mid_upload_is_499_without_an_error(
    upload_server: tuple[str, int], upload_log: Path
) -> None:
    url, _ = upload_server
    port = _port(url)
    request_id = f"upload-gone-{time.time_ns()}"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = _head(port, chunked=True, request_id=request_id)
        sock.sendall(head + _chunk(form_part_head("file", "half.md") + b"# Half\n" + b"text " * 4000))
        time.sleep(0.3)  # the server is reading the file when the client goes away
    lines = _log_lines(upload_log, request_id)
    assert [line["status"] for line in lines if "status" in line] == [499]
    assert [line for line in lines if line["level"] == "ERROR" or "traceback" in line] == []
