"""Slow and stalled clients, each cut off after a documented time, so they cannot hold the API:

- headers: Granian closes a connection whose request head is not all in within HTTP_HEADER_TIMEOUT_SECONDS
  (`granian_http1`, used by `xenios-ai serve`);
- a request body that stops arriving: `BodyTimeout` wraps the app's ``receive``; a wait for the next
  body chunk longer than REQUEST_BODY_TIMEOUT_SECONDS raises `RequestTimeout` (408 ``request_timeout``
  problem) inside the handler that reads it, so uploads stop and their partial files are removed;
- an event stream the client stops reading: the server's write blocks once its buffers are full, and
  `api.sse` gives each write SSE_WRITE_TIMEOUT_SECONDS before it treats the client as gone (the stream's
  upstream, an LLM request or a job subscription, is closed with it). The socket itself: Granian keeps a
  connection whose write is blocked until the client goes (the app ending its response does not free
  it), so `SendDeadline` sets TCP_USER_TIMEOUT (SSE_WRITE_TIMEOUT_SECONDS) on the listening socket, which
  every accepted connection inherits: the kernel aborts a connection whose client has acknowledged
  nothing (zero window included) for that long, and Granian drops it. Measured in
  tests/e2e/test_stalled_streams.py and docs/decisions/0004-fault-handling.md.

Waiting for the client to leave (``http.disconnect`` after the body, as the SSE relay does) is not timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat

from granian.http import HTTP1Settings
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send
from loguru import logger

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


def send_deadline_on_listeners(port: int, seconds: float) -> int:
    """TCP_USER_TIMEOUT on this process's listening TCP sockets bound to ``port`` (Linux; the count set).

    Connections accepted afterwards inherit it. Found through /proc/self/fd because Granian builds its
    listening socket in Rust and exposes no socket options."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None or not os.path.isdir("/proc/self/fd"):
        return 0
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if (
                    sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.type == socket.SOCK_STREAM
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and sock.getsockname()[1] == port
                ):
                    sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(seconds * 1000)))
                    count += 1
    return count


class SendDeadline:
    """ASGI middleware: on the first HTTP request, `send_deadline_on_listeners` for the port it came in
    on (the app cannot know it earlier: Granian binds it). In-process test clients have no such socket."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.done: set[int] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # type: ignore[comparison-overlap]
            server = scope.get("server")
            port = int(server[1]) if server and server[1] is not None else 0  # Granian: a string
            if port and port not in self.done:
                self.done.add(port)
                found = send_deadline_on_listeners(port, self.seconds)
                logger.info("send deadline {:g} s set on {} listening socket(s)", self.seconds, found)
        await self.app(scope, receive, send)
