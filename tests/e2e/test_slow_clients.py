"""Slow and stalled clients against one API process (Granian, `xenios-ai serve`): a few hundred of them
at once, each cut off after its timeout (3 s in tests: tests/conftest.py), while others are served.

- 120 clients send part of a request head and stop, 40 more send it a byte every half second: Granian
  closes them after HTTP_HEADER_TIMEOUT_SECONDS;
- 100 clients send complete headers and part of a JSON body, then nothing: 408 ``request_timeout``
  (problem details) after REQUEST_BODY_TIMEOUT_SECONDS, and the connection is closed;
- an LLM stream whose client stops reading: the kernel aborts the connection once the client has
  acknowledged nothing for SSE_WRITE_TIMEOUT_SECONDS (TCP_USER_TIMEOUT, `api.timeouts.SendDeadline`;
  Granian 2.8 alone kept the half-sent response's socket until the client went), the app's stream ends
  and the upstream request is cancelled (a hundred at once: test_stalled_streams.py).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import httpx

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens

TIMEOUT = 3.0
SLACK = 4.0
"""Beyond the timeout, for a loaded 2-core machine."""


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def _read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection before ``deadline``."""
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except OSError:  # reset by the server: closed
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def _served(url: str) -> float:
    started = time.monotonic()
    response = httpx.get(f"{url}/api/v1/status", headers={"X-API-Key": tokens.API_KEY}, timeout=10)
    assert response.status_code == 200
    return time.monotonic() - started


def test_stalled_heads_and_bodies_are_cut_off_while_others_are_served(api_server_url: str) -> None:
    port = _port(api_server_url)
    _served(api_server_url)  # warm: the app is up
    stalled_heads = []
    for _ in range(120):
        sock = _connect(port)
        sock.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-API-Key: ")
        stalled_heads.append(sock)
    trickling = [_connect(port) for _ in range(40)]
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    stop = threading.Event()

    def trickle() -> None:  # a byte every half second on each, never the end of the head
        for n in range(len(head)):
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.send(head[n : n + 1])
            if stop.wait(0.5):
                return

    threading.Thread(target=trickle, daemon=True).start()
    body = json.dumps({"task": "chat", "input": "x" * 1000}).encode()
    auth = "".join(f"{k}: {v}\r\n" for k, v in tokens.headers("slow-body").items())
    stalled_bodies = []
    for _ in range(100):
        sock = _connect(port)
        sock.sendall(
            f"POST /api/v1/llm/complete HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{auth}\r\n".encode()
            + body[:100]
        )
        stalled_bodies.append(sock)
    started = time.monotonic()

    try:
        assert _served(api_server_url) < 2.0  # 260 stalled clients hold nothing the others need
        deadline = started + TIMEOUT + SLACK
        heads = [_read_until_closed(sock, deadline) for sock in stalled_heads + trickling]
        bodies = [_read_until_closed(sock, deadline) for sock in stalled_bodies]
        cut_after = time.monotonic() - started
    finally:
        stop.set()
        for sock in stalled_heads + trickling + stalled_bodies:
            sock.close()

    assert [closed for _, closed in heads] == [True] * 160
    assert all(not data.startswith(b"HTTP/1.1 2") for data, _ in heads)
    assert [closed for _, closed in bodies] == [True] * 100
    for data, _ in bodies:
        status, _, rest = data.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 408"), data[:200]
        problem = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert (problem["status"], problem["code"]) == (408, "request_timeout")
    assert cut_after < TIMEOUT + SLACK
    assert _served(api_server_url) < 2.0


def test_a_stream_whose_client_stops_reading_is_closed_and_its_upstream_cancelled(
    api_server_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    # 12 MB in 12 s: more than the buffers between the API and its client hold (~5 MB), and slow enough
    # that the upstream answer is still going when the stalled stream is closed.
    fake_openrouter.enqueue(Reply(content="y" * 12_000_000, chunks=120, token_delay=0.1))
    port = _port(api_server_url)
    request = json.dumps({"task": "chat", "input": "say a lot"}).encode()
    auth = "".join(f"{k}: {v}\r\n" for k, v in tokens.headers("stalled-reader").items())
    sock = _connect(port)
    try:
        sock.sendall(
            f"POST /api/v1/llm/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(request)}\r\n{auth}\r\n".encode()
            + request
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # then it reads nothing more
        started = time.monotonic()
        fake_openrouter.wait_for(
            lambda requests: bool(requests) and requests[-1].client_disconnected,
            timeout=12,
        )
        assert time.monotonic() - started < 12
        assert _served(api_server_url) < 2.0
        # The server closed the socket (it used to hold it until the client went): what is left to read
        # ends in a reset or EOF. The kernel's deadline now comes before the app's own write timeout
        # (whose "event stream closed: the client read nothing" log line this asserted before).
        _, closed = _read_until_closed(sock, time.monotonic() + SLACK)
        assert closed
    finally:
        sock.close()
