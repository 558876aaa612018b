"""The bare relay the LLM benchmark compares the service with: a raw ASGI app, no framework, no auth, no
logging, no usage rows, calling the upstream through the openai SDK on its aiohttp transport.

    granian --interface asgi --workers 1 tests.benchmarks.llm_relay:app

Environment: RELAY_UPSTREAM (base URL), RELAY_KEY, RELAY_CALL = ``create`` (the documented path:
``chat.completions.with_raw_response.create`` / ``with_streaming_response.create``, bodies decoded with
msgspec) or ``post`` (``client.post`` with a msgspec-encoded body and ``cast_to=httpx2.Response``: the
call the service's router makes). ``POST /complete`` and ``POST /stream`` take ``{"input": "..."}``,
send the chat task's prompt and the input as the service does, and answer ``{content, usage}`` or SSE
``delta`` events and a ``done`` event.
"""

from __future__ import annotations

import os
from typing import Any

import httpx2
import msgspec
from openai import AsyncOpenAI, DefaultAioHttpClient
from openai.types.chat import ChatCompletionMessageParam

from xenios_ai.llm.tasks import build_catalogue
from xenios_ai.llm.wire import Message, SSELines, decode_chunk, decode_completion, request_body

MODEL = "anthropic/claude-opus-4.5"
CALL = os.environ.get("RELAY_CALL", "post")
_TASK = build_catalogue()["chat"]
_encode = msgspec.json.Encoder().encode
_decode_input = msgspec.json.Decoder(dict[str, str]).decode
_client: AsyncOpenAI | None = None


def client() -> AsyncOpenAI:
    global _client  # noqa: PLW0603 - one client per process, made on the serving loop
    if _client is None:
        _client = AsyncOpenAI(
            api_key=os.environ.get("RELAY_KEY", "relay"),
            base_url=os.environ["RELAY_UPSTREAM"],
            max_retries=0,
            http_client=DefaultAioHttpClient(
                limits=httpx2.Limits(max_connections=2000, max_keepalive_connections=2000)
            ),
        )
    return _client


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _sdk_messages(messages: list[Message]) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": m.content}
        if m.role == "system"
        else {"role": "user", "content": m.content}
        for m in messages
    ]


def _upstream_body(messages: list[Message], *, stream: bool) -> bytes:
    """The request body the service's router sends (msgspec-encoded)."""
    return request_body(
        MODEL, messages, temperature=_TASK.temperature, max_tokens=_TASK.max_tokens, stream=stream
    )


async def _complete(messages: list[Message]) -> bytes:
    if CALL == "create":
        raw = await client().chat.completions.with_raw_response.create(
            model=MODEL,
            messages=_sdk_messages(messages),
            temperature=_TASK.temperature,
            max_tokens=_TASK.max_tokens,
        )
        data = raw.content
    else:
        body = _upstream_body(messages, stream=False)
        data = (await client().post("/chat/completions", content=body, cast_to=httpx2.Response)).content
    completion = decode_completion(data)
    return _encode({"content": completion.choices[0].message.content, "usage": completion.usage})


async def _stream(messages: list[Message], send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    if CALL == "create":
        manager = client().chat.completions.with_streaming_response.create(
            model=MODEL,
            messages=_sdk_messages(messages),
            temperature=_TASK.temperature,
            max_tokens=_TASK.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with manager as response:
            await _relay(response.http_response, send)
    else:
        body = _upstream_body(messages, stream=True)
        raw: httpx2.Response = await client().post(
            "/chat/completions", content=body, cast_to=httpx2.Response, stream=True, stream_cls=None
        )
        try:
            await _relay(raw, send)
        finally:
            await raw.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _relay(response: httpx2.Response, send: Any) -> None:
    lines = SSELines()
    usage = None
    async for data in response.aiter_raw():
        pieces: list[str] = []
        for payload in lines.feed(data):
            if payload == b"[DONE]":
                continue
            chunk = decode_chunk(payload)
            usage = chunk.usage or usage
            pieces.extend(c.delta.content for c in chunk.choices if c.delta.content)
        if pieces:
            event = b"event: delta\ndata: " + _encode({"content": "".join(pieces)}) + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
    done = b"event: done\ndata: " + _encode({"usage": usage}) + b"\n\n"
    await send({"type": "http.response.body", "body": done, "more_body": True})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _client is not None:
                    await _client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    text = _decode_input(await _body(receive))["input"]
    messages = [Message("system", _TASK.system_prompt), Message("user", text)]
    if scope["path"] == "/stream":
        await _stream(messages, send)
        return
    body = await _complete(messages)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
