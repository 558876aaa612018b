"""The OpenAI chat-completions wire format, as far as the router reads it, decoded with msgspec.

Only the fields used are declared (msgspec skips the rest without building them), which is what makes
decoding a completion or a stream chunk cheap compared with the SDK's pydantic models. OpenRouter adds
``provider`` and ``usage.cost``; other OpenAI-compatible servers leave them out (cost is then unknown).
"""

from __future__ import annotations

from typing import Any

import httpx2
import msgspec


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None
    """Prompt tokens read from the provider's prompt cache."""


class WireUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    """OpenRouter: what the request cost, in USD credits."""
    prompt_tokens_details: PromptTokensDetails | None = None


class WireError(msgspec.Struct):
    code: int | str | None = None
    message: str = ""
    metadata: Any = None
    """OpenRouter: e.g. ``{"reasons": [...], "flagged_input": ...}`` on a moderation 403."""


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message = msgspec.field(default_factory=_Message)
    finish_reason: str | None = None


class WireCompletion(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: WireUsage | None = None
    model: str | None = None
    provider: str | None = None
    error: WireError | None = None


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None


class WireChunk(msgspec.Struct):
    id: str | None = None
    """OpenRouter: the generation id (``GET /generation?id=`` reports its cost later)."""
    choices: list[_ChunkChoice] = msgspec.field(default_factory=list)
    usage: WireUsage | None = None
    provider: str | None = None
    error: WireError | None = None
    """OpenRouter's mid-stream error: the stream ends after this chunk."""


class WireErrorBody(msgspec.Struct):
    error: WireError | None = None


class _GenerationData(msgspec.Struct):
    total_cost: float | None = None


class WireGeneration(msgspec.Struct):
    """OpenRouter's ``GET /generation?id=`` answer, as far as it is read."""

    data: _GenerationData


decode_generation = msgspec.json.Decoder(WireGeneration).decode
decode_completion = msgspec.json.Decoder(WireCompletion).decode
decode_chunk = msgspec.json.Decoder(WireChunk).decode
decode_error_body = msgspec.json.Decoder(WireErrorBody).decode
encode = msgspec.json.Encoder().encode


class Message(msgspec.Struct, frozen=True):
    """One chat message as sent upstream."""

    role: str
    content: str


EPHEMERAL: dict[str, str] = {"type": "ephemeral"}


class TextPart(msgspec.Struct, frozen=True, omit_defaults=True):
    """A text part of a message's content array, optionally a prompt-cache breakpoint."""

    type: str
    text: str
    cache_control: dict[str, str] | None = None


class PartsMessage(msgspec.Struct, frozen=True):
    """A message whose content is an array of parts (how ``cache_control`` markers are sent)."""

    role: str
    content: list[TextPart]


def mark_for_cache(messages: list[Message], marked: set[int]) -> list[Message | PartsMessage]:
    """``messages`` with the ones at the ``marked`` indexes turned into cache breakpoints."""
    return [
        PartsMessage(m.role, [TextPart("text", m.content, cache_control=EPHEMERAL)]) if i in marked else m
        for i, m in enumerate(messages)
    ]


def request_body(
    model: str,
    messages: list[Message] | list[Message | PartsMessage],
    *,
    temperature: float,
    max_tokens: int,
    stream: bool,
    response_format: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
) -> bytes:
    """The JSON body of ``POST /chat/completions``, encoded once per attempt."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if response_format is not None:
        body["response_format"] = response_format
    if provider:
        body["provider"] = provider
    return encode(body)


MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest upstream answer read: a completion body, or one line of a stream (a longer one fails the
attempt instead of growing without bound)."""


class TooLarge(Exception):
    """An upstream body or stream line is longer than `MAX_BODY_BYTES`."""


class SSELines:
    """Splits an SSE byte stream into its ``data:`` payloads; comments and other fields are counted only.

    OpenAI-style streams carry one JSON document per ``data:`` line, so no multi-line event assembly is
    needed. ``feed`` returns the payloads completed by ``data`` (a trailing partial line is kept; one
    longer than ``max_line`` bytes raises `TooLarge`).
    """

    __slots__ = ("_max_line", "_size", "_tail", "comments")

    def __init__(self, max_line: int = MAX_BODY_BYTES) -> None:
        self._tail: list[bytes] = []
        """The reads of a line not complete yet (joined once it is: a long line costs linear time)."""
        self._size = 0
        self._max_line = max_line
        self.comments = 0

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            newline = data.find(b"\n")
            if newline < 0 or self._size + newline > self._max_line:
                self._keep(data)  # raises TooLarge past the limit
                return []
            self._tail.append(data)
            data = b"".join(self._tail)
            self._tail, self._size = [], 0
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            self._keep(tail)
        payloads = []
        for line in lines:
            if line.startswith(b"data:"):
                payloads.append(line[5:].strip())
            elif line.startswith(b":"):
                self.comments += 1
        return payloads

    def _keep(self, part: bytes) -> None:
        self._size += len(part)
        if self._size > self._max_line:
            raise TooLarge(f"a stream line is longer than {self._max_line} bytes")
        self._tail.append(part)


async def read_body(response: httpx2.Response) -> bytes:
    """The (decoded) body of an unread response, raising `TooLarge` past `MAX_BODY_BYTES`."""
    reads = response.aiter_bytes() if encoded(response) else response.aiter_raw()
    parts: list[bytes] = []
    size = 0
    async for part in reads:
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise TooLarge(f"the answer is larger than {MAX_BODY_BYTES} bytes")
        parts.append(part)
    return b"".join(parts)


def encoded(response: httpx2.Response) -> bool:
    """Whether the body has a Content-Encoding to undo."""
    encoding = response.headers.get("content-encoding")
    return encoding is not None and encoding.strip().lower() not in ("", "identity")
