"""POST /v1/chat/completions: a task run through the LLM router, spoken in OpenAI's wire format.

``model`` names a task (GET /v1/models). What the router does on /api/v1 it does here: the task's prompt,
model chain, retries, fallback, deadlines, usage rows, rate limits and stream slots. The answer is a
``chat.completion`` whose ``model`` is the model that answered, with ``X-Xenios-Model`` and
``X-Xenios-Fallback-Used`` headers (and ``X-Request-ID``, as on every route).

Streams (``stream: true``) are ``chat.completion.chunk`` events ending ``data: [DONE]``. Headers are sent
once the first text has arrived, so a request that fails before any text (every model down, 429, a hung
primary past the first-token deadline with no fallback left) is an HTTP error the SDKs raise as theirs.
Every chunk's ``model`` is the model answering (after a fallback, the fallback: a stream that has sent text
never changes model), as are the stream's ``X-Xenios-Model`` and ``X-Xenios-Fallback-Used`` headers; with
``stream_options.include_usage`` the finish chunk is followed by the usage chunk (empty ``choices``). A failure after text has streamed ends the stream with an OpenAI error event
(``data: {"error": {...}}``), which the SDKs raise; a stream is never silently cut.

Typed tasks (``intent_classification``, ``entity_extraction``) take one user message, the text, and
answer the task's JSON, validated as on /api/v1 (``response_format`` may be omitted, ``json_object``, or a
``json_schema`` whose properties are the task's). On a text task ``json_object`` asks the model for a
JSON object and ``json_schema`` passes the schema on; the answer must then be a JSON object (with the
schema's required top-level properties), else the next model is tried. A request with a
``response_format`` or on a typed task is served as one completion, streamed as one chunk when asked to.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from xenios_ai.api.auth import require_user
from xenios_ai.api.llm import Caller, caller_for
from xenios_ai.api.openai.errors import ERROR_RESPONSES, error_chunk
from xenios_ai.api.openai.prepare import Prepared, prepare
from xenios_ai.api.openai.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionUsage,
)
from xenios_ai.api.ratelimit import StreamSlot
from xenios_ai.api.sse import EventStream
from xenios_ai.llm.types import Completion, Delta, Done, StreamEvent, Usage

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


# -- response -----------------------------------------------------------------------------------------


def _usage(usage: Usage) -> CompletionUsage:
    prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
    return CompletionUsage(prompt, completion, prompt + completion, usage.cost_usd)


def _content(completion: Completion) -> str:
    return completion.content if completion.data is None else _encode(completion.data).decode()


def _headers(model: str, fallback_used: bool) -> dict[str, str]:
    return {"X-Xenios-Model": model, "X-Xenios-Fallback-Used": "true" if fallback_used else "false"}


def _completion_id(request_id: str | None) -> str:
    return f"chatcmpl-{request_id or time.time_ns()}"


async def _complete(caller: Caller, prepared: Prepared) -> Completion:
    return await caller.until_disconnect(
        caller.llm.complete(
            prepared.task.name,
            prepared.messages,
            input=prepared.input,
            output=prepared.output,
            owner=caller.owner,
            request_id=caller.request_id,
            options=prepared.options,
        )
    )


class _Chunks:
    """``chat.completion.chunk`` events of one stream, their constant heads encoded once."""

    def __init__(self, request_id: str | None, model: str) -> None:
        self.id = _completion_id(request_id)
        self.created = int(time.time())
        self.head = b'data: {"id":' + _encode(self.id) + b',"object":"chat.completion.chunk","created":'
        self.head += str(self.created).encode() + b',"model":'
        self.model = model
        self.text_head = self._text_head(model)
        self.role = b'"role":"assistant",'
        """Sent in the first text chunk only."""

    def _text_head(self, model: str) -> bytes:
        return self.head + _encode(model) + b',"choices":[{"index":0,"delta":{'

    def text(self, content: str, model: str | None) -> bytes:
        """A text chunk; ``model``: the model answering (a stream's deltas all name the same one)."""
        if model is not None and model != self.model:
            self.model, self.text_head = model, self._text_head(model)
        role, self.role = self.role, b""
        return self.text_head + role + b'"content":' + _encode(content) + b'},"finish_reason":null}]}\n\n'

    def finish(self, model: str, finish_reason: str | None, fallback_used: bool) -> bytes:
        reason = _encode(finish_reason or "stop")
        return (
            self.head
            + _encode(model)
            + b',"choices":[{"index":0,"delta":{},"finish_reason":'
            + reason
            + b'}],"x_xenios":{"fallback_used":'
            + (b"true" if fallback_used else b"false")
            + b"}}\n\n"
        )

    def usage(self, model: str, usage: Usage) -> bytes:
        return self.head + _encode(model) + b',"choices":[],"usage":' + _encode(_usage(usage)) + b"}\n\n"

    def end(self, outcome: Done | Completion, include_usage: bool) -> bytes:
        """The finish chunk, the usage chunk when asked for, and ``[DONE]``: one write, not three."""
        end = self.finish(outcome.model, outcome.finish_reason, outcome.fallback_used)
        if include_usage:
            end += self.usage(outcome.model, outcome.usage)
        return end + DONE


async def _relay(
    request: Request[Any, Any, Any],
    chunks: _Chunks,
    first: StreamEvent,
    events: AsyncGenerator[StreamEvent, None],
    include_usage: bool,
    slot: StreamSlot | None,
) -> AsyncIterator[bytes]:
    """The router's events as chunks; a failure ends the stream with an OpenAI error event."""
    try:
        if type(first) is not Delta:
            assert isinstance(first, Done)
            yield chunks.end(first, include_usage)
            return
        yield chunks.text(first.content, first.model)
        async for item in events:
            if type(item) is Delta:
                yield chunks.text(item.content, item.model)
            else:
                assert isinstance(item, Done)
                yield chunks.end(item, include_usage)
                return
    except Exception as exc:  # logged as on any route (api.problems), then told to the client
        yield b"data: " + error_chunk(exc, request) + b"\n\n"
    finally:
        try:
            await events.aclose()
        finally:
            if slot is not None:
                slot.release()


async def _one_shot_stream(
    chunks: _Chunks, completion: Completion, include_usage: bool
) -> AsyncIterator[bytes]:
    yield chunks.text(_content(completion), completion.model) + chunks.end(completion, include_usage)


async def _stream(request: Request[Any, Any, Any], prepared: Prepared) -> Response[Any]:
    services = request.app.state.services
    owner: str = request.scope["state"]["principal"].user_id
    slot = services.limiter.open_stream(owner)
    try:
        await services.limiter.check_llm(owner)
        caller = caller_for(request, slot)
        heartbeat = caller.heartbeat_seconds
        if prepared.one_shot:
            completion = await _complete(caller, prepared)
            if slot is not None:
                slot.release()
            return EventStream(
                _one_shot_stream(
                    _Chunks(caller.request_id, completion.model), completion, prepared.include_usage
                ),
                heartbeat_seconds=heartbeat,
                headers=_headers(completion.model, completion.fallback_used),
            )
        events = await caller.llm.open_stream(
            prepared.task.name,
            prepared.messages,
            owner=caller.owner,
            request_id=caller.request_id,
            options=prepared.options,
        )
        try:
            first = await caller.until_disconnect(anext(events))
        except BaseException:
            await events.aclose()
            raise
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    if type(first) is Delta:
        model = first.model or prepared.task.primary_model
        fallback_used = model != prepared.task.primary_model
    else:
        assert isinstance(first, Done)
        model, fallback_used = first.model, first.fallback_used
    chunks = _Chunks(caller.request_id, model)
    return EventStream(
        _relay(request, chunks, first, events, prepared.include_usage, slot),
        heartbeat_seconds=heartbeat,
        headers=_headers(model, fallback_used),
    )


@post(
    "/chat/completions",
    guards=[require_user],
    security=[{"apiKey": [], "supabaseJWT": []}],
    status_code=200,
    summary="OpenAI-compatible chat completion: model = a task name; stream or not",
    description=__doc__,
    responses={
        200: ResponseSpec(
            ChatCompletion,
            description="A chat.completion; with stream: true, text/event-stream of chat.completion.chunk"
            " events ending `data: [DONE]`",
        ),
        **ERROR_RESPONSES,
    },
)
async def chat_completions(
    request: Request[Any, Any, Any], data: JSONBody[ChatCompletionRequest]
) -> Response[Any]:
    services = request.app.state.services
    prepared = prepare(data, services.llm.tasks)
    if prepared.stream:
        return await _stream(request, prepared)
    owner: str = request.scope["state"]["principal"].user_id
    await services.limiter.check_llm(owner)
    caller = caller_for(request)
    completion = await _complete(caller, prepared)
    body = ChatCompletion(
        id=_completion_id(completion.request_id),
        created=int(time.time()),
        model=completion.model,
        choices=[Choice(AssistantMessage(_content(completion)), completion.finish_reason or "stop")],
        usage=_usage(completion.usage),
    )
    return Response(
        _encode(body),
        media_type="application/json",
        headers=_headers(completion.model, completion.fallback_used),
    )
