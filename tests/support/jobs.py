"""Helpers for job tests: fast job timings, a webhook receiver, and waiting on jobs over HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.support import tokens

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-0123456789abcdef").decode()

JOB_TIMINGS = {
    "WORKER_HEARTBEAT_SECONDS": "0.5",
    "STALE_JOB_SECONDS": "3",
    "BROKER_HEARTBEAT_TIMEOUT_MS": "3000",
    "JOB_SWEEP_INTERVAL_SECONDS": "0.5",
    "JOB_PROGRESS_INTERVAL_SECONDS": "0.05",
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
}
"""Short heartbeats and sweeps so crash recovery takes seconds in tests (production: see Settings)."""

TERMINAL = ("succeeded", "failed", "cancelled")


def wait_for_job(
    base_url: str,
    job_id: str,
    *,
    sub: str = "user-1",
    statuses: tuple[str, ...] = TERMINAL,
    timeout: float = 20,
) -> dict[str, Any]:
    """Poll GET /api/v1/jobs/{id} until its status is one of ``statuses``; returns the body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{base_url}/api/v1/jobs/{job_id}", headers=tokens.headers(sub), timeout=5)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} still {body.get('status')} after {timeout}s: {body}")


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, decoded data) pairs of a text/event-stream response; comments are skipped."""
    name, data = "message", list[str]()
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", list[str]()
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


class WebhookReceiver:
    """A real HTTP server recording webhook deliveries; answers the scripted statuses, then 204."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._cond:
                    receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/xenios"

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[dict[str, str], bytes]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.deliveries)} of {count} webhook deliveries after {timeout}s")
            return list(self.deliveries)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
