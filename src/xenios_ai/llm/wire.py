"""The OpenAI chat-completions wire format, as far as the router reads it, decoded with msgspec.

Only the fields used are declared (msgspec skips the rest without building them), which is what makes
decoding a completion or a stream chunk cheap compared with the SDK's pydantic models. OpenRouter adds
``provider`` and ``usage.cost``; other OpenAI-compatible servers leave them out (cost is then unknown).
"""

from __future__ import annotations

from typing import Any

import msgspec


class WireUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    """OpenRouter: what the request cost, in USD credits."""


class WireError(msgspec.Struct):
    code: int | str | None = None
    message: str = ""


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
    choices: list[_ChunkChoice] = msgspec.field(default_factory=list)
    usage: WireUsage | None = None
    provider: str | None = None
    error: WireError | None = None
    """OpenRouter's mid-stream error: the stream ends after this chunk."""


class WireErrorBody(msgspec.Struct):
    error: WireError | None = None


decode_completion = msgspec.json.Decoder(WireCompletion).decode
decode_chunk = msgspec.json.Decoder(WireChunk).decode
decode_error_body = msgspec.json.Decoder(WireErrorBody).decode
encode = msgspec.json.Encoder().encode


class Message(msgspec.Struct, frozen=True):
    """One chat message as sent upstream."""

    role: str
    content: str


def request_body(
    model: str,
    messages: list[Message],
    *,
    temperature: float,
    max_tokens: int,
    stream: bool,
    response_format: dict[str, Any] | None = None,
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
    return encode(body)


class SSELines:
    """Splits an SSE byte stream into its ``data:`` payloads; comments and other fields are counted only.

    OpenAI-style streams carry one JSON document per ``data:`` line, so no multi-line event assembly is
    needed. ``feed`` returns the payloads completed by ``data`` (a trailing partial line is kept).
    """

    __slots__ = ("_tail", "comments")

    def __init__(self) -> None:
        self._tail = b""
        self.comments = 0

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        payloads = []
        for line in lines:
            if line.startswith(b"data:"):
                payloads.append(line[5:].strip())
            elif line.startswith(b":"):
                self.comments += 1
        return payloads
