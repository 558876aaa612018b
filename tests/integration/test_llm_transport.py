"""The LLM client's transport against real sockets: compressed answers (OpenRouter or a proxy may gzip
them) and connection failures (refused, reset before the headers), which must be retried and end as 503
upstream_unavailable, not as timeouts."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import DEFAULT_CONTENT, FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.sse import SSEParser
from xenios_ai.api.app import create_app

OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"
FAST = {"llm_retry_backoff_seconds": 0.01, "llm_usage_flush_seconds": 0.05}


@pytest.fixture
async def client(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> AsyncIterator[AsyncTestClient[Any]]:
    fake_openrouter.reset()
    async with AsyncTestClient(create_app(make_settings(test_env, **FAST))) as test_client:
        yield test_client


async def stream_events(client: AsyncTestClient[Any]) -> list[tuple[str, Any]]:
    response = await client.post(
        "/api/v1/llm/stream", json={"task": "chat", "input": "hi"}, headers=tokens.headers()
    )
    assert response.status_code == 200
    parser = SSEParser()
    return [event for line in response.text.splitlines() if (event := parser.line(line)) is not None]


# -- compression -----------------------------------------------------------------------------------


async def test_a_completion_asks_for_an_uncompressed_stream_and_a_gzipped_one_is_decoded(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(gzip="always"))

    response = await client.post(
        "/api/v1/llm/complete", json={"task": "chat", "input": "hi"}, headers=tokens.headers()
    )

    assert response.status_code == 200
    assert response.json()["content"] == DEFAULT_CONTENT
    [request] = fake_openrouter.requests
    assert (request.stream, request.headers["accept-encoding"]) == (True, "identity")
    assert request.compressed


async def test_a_stream_asks_for_an_uncompressed_body(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(gzip="accepted"))

    events = await stream_events(client)

    assert "".join(data["content"] for name, data in events if name == "delta") == DEFAULT_CONTENT
    assert events[-1][0] == "done"
    [request] = fake_openrouter.requests
    assert request.headers["accept-encoding"] == "identity"
    assert not request.compressed


async def test_a_stream_gzipped_anyway_is_decoded(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(
        Reply(gzip="always", token_delay=0.05, prompt_tokens=5, completion_tokens=9, cost=0.001)
    )  # one gzip-flushed write per chunk

    events = await stream_events(client)

    deltas = [data["content"] for name, data in events if name == "delta"]
    assert "".join(deltas) == DEFAULT_CONTENT
    assert len(deltas) == len(DEFAULT_CONTENT.split())  # still relayed chunk by chunk
    name, done = events[-1]
    assert name == "done"
    assert (done["model"], done["fallback_used"]) == (OPUS, False)
    assert done["usage"] == {"prompt_tokens": 5, "completion_tokens": 9, "cost_usd": 0.001}
    [request] = fake_openrouter.requests
    assert request.compressed


# -- connection failures ---------------------------------------------------------------------------


class ResettingServer:
    """Accepts connections, reads the request head, then resets the connection before any response."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.settimeout(0.05)  # accept() wakes up to notice the stop
        self.requests = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST

    def __enter__(self) -> ResettingServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def resetting_server() -> Iterator[ResettingServer]:
    with ResettingServer() as server:
        yield server


def assert_unavailable_after_retries(status: int, body: dict[str, Any]) -> None:
    assert (status, body["code"]) == (503, "upstream_unavailable")
    assert [(a["model"], a["error"]) for a in body["attempts"]] == [
        (OPUS, "connection_error"),
        (OPUS, "connection_error"),  # retried on the same model, not skipped like a timeout
        (SONNET, "connection_error"),
        (SONNET, "connection_error"),
    ]


@pytest.mark.parametrize("server", ["refused", "reset"])
async def test_a_connection_failure_is_retried_and_ends_unavailable(
    test_env: dict[str, str], request: pytest.FixtureRequest, server: str
) -> None:
    if server == "refused":
        port: int = request.getfixturevalue("closed_port")
    else:
        resetting: ResettingServer = request.getfixturevalue("resetting_server")
        port = resetting.port
    settings = make_settings(test_env, openrouter_base_url=f"http://127.0.0.1:{port}/api/v1", **FAST)

    async with AsyncTestClient(create_app(settings)) as client:
        response = await client.post(
            "/api/v1/llm/complete", json={"task": "chat", "input": "hi"}, headers=tokens.headers()
        )
        streamed = await client.post(
            "/api/v1/llm/stream", json={"task": "chat", "input": "hi"}, headers=tokens.headers()
        )

    assert_unavailable_after_retries(response.status_code, response.json())
    # A stream that fails before any text answers its problem, like the completion (issue 20).
    assert_unavailable_after_retries(streamed.status_code, streamed.json())
    if server == "reset":
        assert resetting.requests == 8  # every attempt reached the server: 4 completions, 4 streams
