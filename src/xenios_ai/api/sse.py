"""Server-sent events: a response that relays already encoded events as they come, with heartbeats.

Each event from the iterator is sent as its own ASGI body message at once (no buffering), with
``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` so nginx-like proxies do not buffer either.
After ``heartbeat_seconds`` without an event a comment line (``: heartbeat``) is sent, so idle proxies and
load balancers keep the connection. A client that goes away (``http.disconnect``, or a failed send)
cancels the iteration at once, so whatever the iterator holds upstream is closed in its ``finally``.
The heartbeat is a timer, not a task per event: relaying an event costs one send. A send still blocked
after SSE_WRITE_TIMEOUT_SECONDS (the client stopped reading and the server's buffers are full) counts as
the client gone, too (see `api.timeouts`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Send, TypeEncodersMap
from loguru import logger

from xenios_ai.errors import ClientGone

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
HEARTBEAT = b": heartbeat\n\n"
DEFAULT_WRITE_TIMEOUT = 30.0


def event(name: str, data: bytes) -> bytes:
    """One SSE event whose data is a single line (JSON has no raw newlines)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class EventStream(Response[None]):
    """``text/event-stream`` from an async iterator of encoded events (see the module docstring)."""

    __slots__ = ("events", "heartbeat_seconds")

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        heartbeat_seconds: float = 15.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            None, media_type="text/event-stream", headers={**HEADERS, **headers} if headers else HEADERS
        )
        self.events = events
        self.heartbeat_seconds = heartbeat_seconds

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Any = None,
        encoded_headers: Any = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        merged = {**headers, **self.headers} if headers else self.headers
        cookie_list: list[Cookie] = [*self.cookies, *(cookies or ())]
        settings = request.app.state.get("settings")
        write_timeout = settings.sse_write_timeout_seconds if settings is not None else DEFAULT_WRITE_TIMEOUT
        return _ASGIEventStream(
            self.events,
            self.heartbeat_seconds,
            write_timeout,
            background=self.background or background,
            cookies=cookie_list,
            headers=merged,
            is_head_response=is_head_response,
            media_type=self.media_type,
            status_code=self.status_code or status_code,
        )


class _ASGIEventStream(ASGIStreamingResponse):
    __slots__ = ("events", "heartbeat_seconds", "write_timeout")

    def __init__(
        self, events: AsyncIterator[bytes], heartbeat_seconds: float, write_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(iterator=events, content_length=0, **kwargs)
        self.events = events
        self.heartbeat_seconds = heartbeat_seconds
        self.write_timeout = write_timeout

    async def send_body(self, send: Send, receive: Receive) -> None:
        relay = _Relay(send, self.heartbeat_seconds, self.write_timeout)
        watcher = asyncio.get_running_loop().create_task(relay.watch(receive))
        try:
            async with contextlib.aclosing(self.events) as events:  # type: ignore[type-var]
                async for body in events:
                    await relay.emit(body)
        except ClientGone:
            return
        except asyncio.CancelledError:
            if relay.disconnected and relay.main.uncancel() == 0:
                return
            raise
        finally:
            relay.stop()
            watcher.cancel()
            if relay.stalled:
                logger.info("event stream closed: the client read nothing for {:g} s", self.write_timeout)
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Relay:
    """Sends body chunks one at a time, heartbeats when idle, and cancels the request when the client
    leaves."""

    def __init__(self, send: Send, heartbeat_seconds: float, write_timeout: float) -> None:
        self.send = send
        self.write_timeout = write_timeout
        self.loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        self.main = main
        self.lock = asyncio.Lock()
        self.heartbeat_seconds = heartbeat_seconds
        self.disconnected = False
        self.stalled = False
        self.last_sent = self.loop.time()
        self.beating: asyncio.Task[None] | None = None
        self.timer = self.loop.call_later(heartbeat_seconds, self._on_timer)

    async def emit(self, body: bytes) -> None:
        self.last_sent = self.loop.time()
        async with self.lock:
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self.send({"type": "http.response.body", "body": body, "more_body": True})
            except TimeoutError:  # the client stopped reading: the server's buffers stayed full
                self.stalled = True
                raise ClientGone("the client stopped reading") from None
            except Exception:  # the server could not write: the client is gone
                raise ClientGone("the client disconnected") from None

    async def watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._gone()

    def stop(self) -> None:
        self.timer.cancel()
        if self.beating is not None:
            self.beating.cancel()

    def _gone(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            self.main.cancel()

    def _on_timer(self) -> None:
        idle = self.loop.time() - self.last_sent
        if idle >= self.heartbeat_seconds and (self.beating is None or self.beating.done()):
            self.beating = self.loop.create_task(self._beat())
            idle = 0.0
        self.timer = self.loop.call_later(max(0.01, self.heartbeat_seconds - idle), self._on_timer)

    async def _beat(self) -> None:
        try:
            await self.emit(HEARTBEAT)
        except ClientGone:
            self._gone()
