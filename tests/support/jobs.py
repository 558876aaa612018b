"""Helpers for job tests: fast job timings, a webhook receiver, submitting jobs and following them over
HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, BinaryIO

import httpx

from tests.support import tokens
from tests.support.http import LocalServer, QuietHandler
from tests.support.sse import Event, sse_events

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-0123456789abcdef").decode()

JOB_TIMINGS = {
    "WORKER_HEARTBEAT_SECONDS": "0.5",
    "STALE_JOB_SECONDS": "3",
    "BROKER_HEARTBEAT_TIMEOUT_MS": "5000",
    "JOB_SWEEP_INTERVAL_SECONDS": "0.5",
    "JOB_PROGRESS_INTERVAL_SECONDS": "0.05",
    "WEBHOOK_RESEND_SECONDS": "2",
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
}
"""Short heartbeats and sweeps so crash recovery takes seconds in tests (production: see Settings)."""

TERMINAL = ("succeeded", "failed", "cancelled")


def submit_analysis(
    base_url: str, body: dict[str, Any], sub: str = "user-1", **headers: str
) -> httpx.Response:
    """POST /api/v1/jobs/analysis as ``sub``, with extra ``headers`` (e.g. Idempotency-Key)."""
    return httpx.post(
        f"{base_url}/api/v1/jobs/analysis", json=body, headers=tokens.headers(sub) | headers, timeout=10
    )


def upload(
    base_url: str,
    kind: str,
    name: str,
    data: bytes | BinaryIO,
    options: dict[str, Any] | None = None,
    *,
    sub: str = "user-1",
    timeout: float = 30,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST a file (multipart field ``file``) and its ``options`` (JSON) to /api/v1/jobs/{kind}; on
    ``client``'s connections when given (a new client costs milliseconds: its TLS context)."""
    form = {"options": json.dumps(options)} if options is not None else {}
    post = client.post if client is not None else httpx.post
    return post(
        f"{base_url}/api/v1/jobs/{kind}",
        files={"file": (name, data, "application/octet-stream")},  # the type is read from the bytes
        data=form,
        headers=tokens.headers(sub),
        timeout=timeout,
    )


def form_part_head(name: str, filename: str | None = None) -> bytes:
    """The head of one part of a hand-written multipart body (boundary ``BOUNDARY``)."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--BOUNDARY\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def multipart_form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    """A multipart body of (name, filename, data) parts written by hand, and its content type."""
    body = b"".join(form_part_head(name, filename) + data + b"\r\n" for name, filename, data in parts)
    return body + b"--BOUNDARY--\r\n", "multipart/form-data; boundary=BOUNDARY"


def accepted_id(response: httpx.Response) -> str:
    """The job id of a submit answered 202."""
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def job_events(
    base_url: str,
    job_id: str,
    *,
    sub: str = "user-1",
    timeout: float | httpx.Timeout = 60,
    client: httpx.Client | None = None,
) -> list[Event]:
    """Every event of GET /api/v1/jobs/{id}/events, until the stream ends (after a terminal state); on
    ``client``'s connections when given."""
    url = f"{base_url}/api/v1/jobs/{job_id}/events"
    stream = client.stream if client is not None else httpx.stream
    with stream("GET", url, headers=tokens.headers(sub), timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        return list(sse_events(response))


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


class WebhookReceiver(LocalServer):
    """A real HTTP server recording webhook deliveries; answers the scripted statuses, then 204."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._cond:
                    receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        super().__init__(Handler)

    @property
    def url(self) -> str:
        """Where the service delivers its webhooks."""
        return f"{self.base_url}/hooks/xenios"

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[dict[str, str], bytes]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.deliveries)} of {count} webhook deliveries after {timeout}s")
            return list(self.deliveries)
