"""Uploads over real HTTP (Granian): limits act while the body streams in, and memory stays flat.

Raw sockets send part of a body and then wait: a server that answered only after reading everything
would never answer, so a response proves the rest was not read.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.data.make_documents import DOCUMENTS
from tests.support import tokens
from tests.support.jobs import form_part_head
from tests.support.processes import ApiServer, child_pid, status_kb

LIMIT = 100 * 1024 * 1024
CHUNK = 64 * 1024
PATH = "/api/v1/jobs/docs-test"


@pytest.fixture(scope="module")
def upload_server(
    fresh_env: Callable[..., dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """Granian serving the API plus a test upload route; yields (base URL, worker pid)."""
    server = ApiServer(
        fresh_env(MAX_UPLOAD_BYTES=str(LIMIT)),
        log_path=tmp_path_factory.mktemp("logs") / "upload-api.log",
        factory="tests.support.upload_app:app_factory",
    )
    server.start()
    try:
        yield server.url, child_pid(server.process)
    finally:
        server.stop()


def _head(port: int, *, chunked: bool, content_length: int | None = None) -> bytes:
    headers = [
        f"POST {PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: multipart/form-data; boundary=BOUNDARY",
        *(f"{name}: {value}" for name, value in tokens.headers().items()),
    ]
    if chunked:
        headers.append("Transfer-Encoding: chunked")
    if content_length is not None:
        headers.append(f"Content-Length: {content_length}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _status_after(sock: socket.socket, timeout: float = 10) -> int:
    """Read the response status line; the request body is left unfinished."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        received = sock.recv(4096)
        if not received:
            break
        data += received
    return int(data.split(b" ", 2)[1])


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
