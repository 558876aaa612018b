"""Reading server-sent events (text/event-stream) as a client does: job events, LLM streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

Event = tuple[str, Any]
"""(event name, decoded JSON data)"""


class SSEParser:
    """Lines in, events out: an event is dispatched by the blank line that ends it; comments are skipped."""

    def __init__(self) -> None:
        self.name, self.data = "message", list[str]()

    def line(self, line: str) -> Event | None:
        """Feed one line (without its line break); the event it completes, if any."""
        if not line:
            event = (self.name, json.loads("\n".join(self.data))) if self.data else None
            self.name, self.data = "message", []
            return event
        if line.startswith("event:"):
            self.name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            self.data.append(line.removeprefix("data:").strip())
        return None


def sse_events(response: httpx.Response) -> Iterator[Event]:
    """The events of a streamed response, as they arrive."""
    parser = SSEParser()
    for line in response.iter_lines():
        if (event := parser.line(line)) is not None:
            yield event


async def async_sse_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of an async streamed response, as they arrive."""
    parser = SSEParser()
    async for line in response.aiter_lines():
        if (event := parser.line(line)) is not None:
            yield event
