"""One log line per request (method, path, status, duration, request id); X-Request-ID in and out; the
request's duration in the HTTP metrics, by route template (``scope["path_template"]``, set by routing).

It wraps Litestar's ASGI handler (outside routing), so 404s and 405s are logged too. Header values
are never logged: neither X-API-Key nor Authorization can leak through it.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from loguru import logger

from xenios_ai.observability.metrics import observe_http

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_QUIET_PREFIXES = ("/health", "/metrics", "/ops")  # probes, scrapes, dashboard refreshes


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        http: Any = scope
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _VALID_ID.match(candidate) else ""
                break
        request_id = request_id or uuid.uuid4().hex
        scope["state"]["request_id"] = request_id
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        started = time.perf_counter()
        with logger.contextualize(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                ms = seconds * 1000
                path = scope["path"]
                observe_http(http["method"], http.get("path_template"), status, seconds)
                if status >= 500:
                    level = "WARNING"  # what operators alert on; the cause is logged by the handler
                else:
                    level = "DEBUG" if path.startswith(_QUIET_PREFIXES) else "INFO"
                logger.bind(
                    component="http",
                    method=http["method"],
                    path=path,
                    status=status,
                    duration_ms=round(ms, 2),
                ).log(level, "{} {} {} {:.1f}ms", http["method"], path, status, ms)
