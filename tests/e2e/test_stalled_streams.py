"""A hundred LLM streams whose clients stop reading, against one API process (`xenios-ai serve`).

Granian keeps a connection whose write is blocked until its client goes, even after the app has ended the
response (measured: all 100 sockets still established 30 s later). `api.timeouts.SendDeadline` sets
TCP_USER_TIMEOUT (SSE_WRITE_TIMEOUT_SECONDS, 3 s in tests) on the listening socket: the kernel aborts a
connection whose client acknowledges nothing for that long, Granian's write fails, the app's stream ends
and its upstream LLM request is cancelled. Others are served throughout.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time

import httpx

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens

READERS = 100
TIMEOUT = 3.0
SLACK = 6.0
"""Beyond the timeout: the kernel's zero-window probes back off (0.2, 0.4, 0.8 ... s), and the machine is
a loaded 2-core one."""


def _established(port: int, clients: set[int]) -> int:
    """How many of ``clients`` (their local ports) the server still holds open."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if int(line.split()[-1].rsplit(":", 1)[1]) in clients)


def _served(url: str) -> float:
    started = time.monotonic()
    response = httpx.get(f"{url}/api/v1/status", headers={"X-API-Key": tokens.API_KEY}, timeout=10)
    assert response.status_code == 200
    return time.monotonic() - started


def test_a_hundred_stalled_stream_readers_are_cut_off_and_their_upstreams_cancelled(
    api_server_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    port = int(api_server_url.rsplit(":", 1)[1])
    _served(api_server_url)  # the first request sets the deadline on the listening socket
    fake_openrouter.clear()
    # 1 MB over 12 s each: more than a stalled client's window, and still going when it is cut off.
    text = "y" * 1_000_000
    fake_openrouter.enqueue(*[Reply(content=text, chunks=48, token_delay=0.25) for _ in range(READERS)])
    request = json.dumps({"task": "chat", "input": "say a lot"}).encode()
    sockets = []
    try:
        for n in range(READERS):
            auth = "".join(f"{k}: {v}\r\n" for k, v in tokens.headers(f"stalled-{n}").items())
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(
                f"POST /api/v1/llm/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(request)}\r\n{auth}\r\n".encode()
                + request
            )
            sockets.append(sock)
        assert all(sock.recv(12) == b"HTTP/1.1 200" for sock in sockets)  # then they read nothing more
        started = time.monotonic()
        clients = {sock.getsockname()[1] for sock in sockets}
        assert _established(port, clients) == READERS
        assert _served(api_server_url) < 2.0  # 100 stalled streams hold nothing the others need

        fake_openrouter.wait_for(
            lambda requests: len(requests) == READERS and all(r.client_disconnected for r in requests),
            timeout=TIMEOUT + SLACK,
        )
        upstreams_cancelled = time.monotonic() - started
        deadline = started + TIMEOUT + SLACK
        while _established(port, clients) and time.monotonic() < deadline:
            time.sleep(0.2)
        cut_off = time.monotonic() - started
        assert _established(port, clients) == 0
        assert not any(r.completed for r in fake_openrouter.requests)
        assert _served(api_server_url) < 2.0
        print(
            f"\n{READERS} stalled readers: upstreams cancelled within {upstreams_cancelled:.1f} s, "
            f"sockets closed by the server within {cut_off:.1f} s (deadline {TIMEOUT:g} s)"
        )
    finally:
        for sock in sockets:
            sock.close()
