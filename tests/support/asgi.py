"""In-process helpers: a raw ASGI request whose client goes away mid-body, and captured log records.

The test client always sends whole bodies; a client that disconnects half-way is spoken here as ASGI
messages, the way Granian delivers them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar import Litestar
from loguru import logger


async def send_then_disconnect(
    app: Litestar, method: str, path: str, headers: dict[str, str], body_start: bytes
) -> tuple[int, dict[str, Any]]:
    """``body_start`` as the first part of a longer body, then ``http.disconnect``; the response's status
    and JSON body."""
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": body_start, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if len(incoming) > 1 else incoming[0]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every loguru record written inside the block: level name, message, extra, exception."""
    records: list[dict[str, Any]] = []

    def sink(message: Any) -> None:
        record = message.record
        records.append(
            {
                "level": record["level"].name,
                "message": record["message"],
                "extra": dict(record["extra"]),
                "exception": record["exception"],
            }
        )

    handler = logger.add(sink, level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(handler)
