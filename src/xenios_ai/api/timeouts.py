"""Slow and stalled clients, each cut off after a documented time, so they cannot hold the API:

- headers: Granian closes a connection whose request head is not all in within HTTP_HEADER_TIMEOUT_SECONDS
  (`granian_http1`, used by `xenios-ai serve`);
- a request body that stops arriving: `BodyTimeout` wraps the app's ``receive``; a wait for the next
  body chunk longer than REQUEST_BODY_TIMEOUT_SECONDS raises `RequestTimeout` (408 ``request_timeout``
  problem) inside the handler that reads it, so uploads stop and their partial files are removed;
- an event stream the client stops reading: the server's write blocks once its buffers are full, and
  `api.sse` gives each write SSE_WRITE_TIMEOUT_SECONDS before it treats the client as gone (the stream's
  upstream, an LLM request or a job subscription, is closed with it).

Waiting for the client to leave (``http.disconnect`` after the body, as the SSE relay does) is not timed.
"""

from __future__ import annotations

import asyncio

from granian.http import HTTP1Settings
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from xenios_ai.errors import RequestTimeout
from xenios_ai.settings import Settings


def granian_http1(settings: Settings) -> HTTP1Settings:
    """Granian's HTTP/1 settings with the header timeout (milliseconds there)."""
    return HTTP1Settings(header_read_timeout=max(1, round(settings.http_header_timeout_seconds * 1000)))


class BodyTimeout:
    """ASGI middleware: each wait for a request body chunk is limited to ``seconds``."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        seconds = self.seconds
        body_done = False

        async def timed_receive() -> ReceiveMessage:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(seconds):
                    message = await receive()
            except TimeoutError:
                body_done = True
                raise RequestTimeout(
                    f"the request body stopped arriving (nothing for {seconds:g} s)"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)
