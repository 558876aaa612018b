"""POST /v1/chat/completions: a task run through the LLM router, spoken in OpenAI's wire format.

``model`` names a task (GET /v1/models). What the router does on /api/v1 it does here: the task's prompt,
model chain, retries, fallback, deadlines, usage rows, rate limits and stream slots. The answer is a
``chat.completion`` whose ``model`` is the model that answered, with ``X-Xenios-Model`` and
``X-Xenios-Fallback-Used`` headers (and ``X-Request-ID``, as on every route).

Streams (``stream: true``) are ``chat.completion.chunk`` events ending ``data: [DONE]``. Headers are sent
once the first text has arrived, so a request that fails before any text (every model down, 429, a hung
primary past the first-token deadline with no fallback left) is an HTTP error the SDKs raise as theirs.
The chunks carry the task name as ``model`` until the last one, which names the model that answered (the
router tells it only then) and, with ``stream_options.include_usage``, is followed by the usage chunk
(empty ``choices``). A failure after text has streamed ends the stream with an OpenAI error event
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
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from xenios_ai.api.auth import require_user
from xenios_ai.api.llm import Caller, caller_for
from xenios_ai.api.openai.errors import ERROR_RESPONSES, error_chunk, invalid, unsupported
from xenios_ai.api.openai.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionUsage,
    ResponseFormat,
)
from xenios_ai.api.ratelimit import StreamSlot
from xenios_ai.api.schemas import MAX_PROMPT_CHARS
from xenios_ai.api.sse import EventStream
from xenios_ai.errors import InvalidInput
from xenios_ai.llm.structured import InvalidOutput, OutputSpec, default_request, unwrap_fence
from xenios_ai.llm.tasks import Task
from xenios_ai.llm.types import Completion, Delta, Done, Options, StreamEvent, Usage
from xenios_ai.llm.wire import Message

_encode = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode
DONE = b"data: [DONE]\n\n"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request as the router takes it."""

    task: Task
    messages: list[Message] | None
    input: str | None
    output: OutputSpec | None
    options: Options | None
    stream: bool
    include_usage: bool

    @property
    def one_shot(self) -> bool:
        """Served as one completion (typed task, or a response_format), even when streamed."""
        return self.output is not None or self.task.output == "json"


# -- request ------------------------------------------------------------------------------------------


def _text_of(index: int, content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part_index, part in enumerate(content):
        if part.type != "text":
            raise unsupported(
                f"messages[{index}].content[{part_index}].type",
                f"content parts of type {part.type[:40]!r} are not supported; send text",
            )
        if part.text is None or part.image_url is not None or part.input_audio is not None:
            raise invalid(f"messages[{index}].content[{part_index}]", "a text part holds `text` only")
        texts.append(part.text)
    return "".join(texts)


def _messages(data: ChatCompletionRequest) -> list[Message]:
    messages = []
    total = 0
    for index, message in enumerate(data.messages):
        role = _ROLES.get(message.role)
        if role is None:
            if message.role in ("tool", "function"):
                raise unsupported(f"messages[{index}].role", f"{message.role!r} messages are not supported")
            raise invalid(f"messages[{index}].role", f"unknown role {message.role[:40]!r}")
        text = _text_of(index, message.content)
        if role == "user" and not text:
            raise invalid(f"messages[{index}].content", "a user message needs text")
        total += len(text)
        messages.append(Message(role, text))
    if total > MAX_PROMPT_CHARS:
        raise invalid("messages", f"messages hold at most {MAX_PROMPT_CHARS} characters in all")
    return messages


def _options(data: ChatCompletionRequest, task: Task) -> Options | None:
    if data.temperature is not None and not 0.0 <= data.temperature <= 2.0:
        raise invalid("temperature", "temperature must be within 0..2")
    param, max_tokens = "max_completion_tokens", data.max_completion_tokens
    if data.max_tokens is not None:
        if max_tokens is not None and max_tokens != data.max_tokens:
            raise invalid("max_tokens", "max_tokens and max_completion_tokens differ; send one")
        param, max_tokens = "max_tokens", data.max_tokens
    if max_tokens is not None and not 1 <= max_tokens <= task.max_tokens:
        raise invalid(param, f"{param} must be within 1..{task.max_tokens} for {task.name}")
    if data.temperature is None and max_tokens is None:
        return None
    return Options(temperature=data.temperature, max_tokens=max_tokens)


def _object_spec(response_format: dict[str, Any], required: list[str]) -> OutputSpec:
    """A text task's JSON output: a JSON object with the ``required`` top-level keys."""

    def parse(content: str) -> Any:
        try:
            value = _decode_json(unwrap_fence(content))
        except msgspec.DecodeError as exc:
            raise InvalidOutput(f"the answer is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidOutput("the answer is not a JSON object")
        missing = [key for key in required if key not in value]
        if missing:
            raise InvalidOutput(f"the answer lacks {', '.join(missing)}")
        return value

    return OutputSpec(response_format, parse)


def _text_output(response_format: ResponseFormat | None) -> OutputSpec | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return _object_spec({"type": "json_object"}, [])
    spec = response_format.json_schema
    if spec is None:
        raise invalid("response_format.json_schema", "json_schema needs its `json_schema` object")
    wire_spec: dict[str, Any] = {"name": spec.name}
    if spec.schema is not None:
        wire_spec["schema"] = spec.schema
    if spec.strict is not None:
        wire_spec["strict"] = spec.strict
    required = (spec.schema or {}).get("required")
    keys = [key for key in required if isinstance(key, str)] if isinstance(required, list) else []
    return _object_spec({"type": "json_schema", "json_schema": wire_spec}, keys)


def _typed_format(task: Task, response_format: ResponseFormat | None) -> None:
    """A typed task answers its own schema; a client's schema must describe (part of) it."""
    if response_format is None or response_format.type == "json_object":
        return
    if response_format.type == "text":
        raise invalid("response_format.type", f"{task.name} answers JSON; ask for json_object or json_schema")
    client = response_format.json_schema.schema if response_format.json_schema is not None else None
    if client is None:
        return
    ours = default_request(task.name, "-")[1].response_format["json_schema"]["schema"]
    fields = set(ours["properties"])
    theirs = client.get("properties")
    required = client.get("required") or []
    if (
        client.get("type", "object") != "object"
        or not isinstance(theirs, dict)
        or not set(theirs) <= fields
        or not isinstance(required, list)
        or not set(required) <= fields
    ):
        raise invalid(
            "response_format.json_schema.schema",
            f"{task.name} answers an object with {', '.join(sorted(fields))}; the schema asks for another",
        )


def prepare(data: ChatCompletionRequest, tasks: Any) -> Prepared:
    """Check the request against what we serve; every refusal names its parameter."""
    task: Task | None = tasks.get(data.model)
    if task is None:
        raise InvalidInput(
            f"the model {data.model[:64]!r} does not exist; see GET /v1/models", code="unknown_task"
        )
    if data.n is not None and data.n != 1:
        raise unsupported("n", "only n=1 is supported")
    if data.logprobs:
        raise unsupported("logprobs", "logprobs are not supported")
    if data.stream_options is not None and not data.stream:
        raise invalid("stream_options", "stream_options is only allowed with stream: true")
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    messages = _messages(data)
    options = _options(data, task)
    if task.output == "json":
        _typed_format(task, data.response_format)
        if len(messages) != 1 or messages[0].role != "user":
            raise invalid("messages", f"{task.name} takes one user message: the text")
        return Prepared(task, None, messages[0].content, None, options, bool(data.stream), include_usage)
    output = _text_output(data.response_format)
    return Prepared(task, messages, None, output, options, bool(data.stream), include_usage)


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
    """``chat.completion.chunk`` events of one stream, their constant head encoded once."""

    def __init__(self, request_id: str | None, task: str) -> None:
        self.id = _completion_id(request_id)
        self.created = int(time.time())
        self.task = task
        self.head = b'data: {"id":' + _encode(self.id) + b',"object":"chat.completion.chunk","created":'
        self.head += str(self.created).encode() + b',"model":'
        self.text_head = self.head + _encode(task) + b',"choices":[{"index":0,"delta":{'

    def text(self, content: str, first: bool) -> bytes:
        role = b'"role":"assistant",' if first else b""
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
        item: StreamEvent | None = first
        is_first = True
        while item is not None:
            if type(item) is Delta:
                yield chunks.text(item.content, is_first)
                is_first = False
            else:
                assert isinstance(item, Done)
                yield chunks.finish(item.model, item.finish_reason, item.fallback_used)
                if include_usage:
                    yield chunks.usage(item.model, item.usage)
                yield DONE
                return
            item = await anext(events, None)
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
    yield chunks.text(_content(completion), True)
    yield chunks.finish(completion.model, completion.finish_reason, completion.fallback_used)
    if include_usage:
        yield chunks.usage(completion.model, completion.usage)
    yield DONE


async def _stream(request: Request[Any, Any, Any], prepared: Prepared) -> Response[Any]:
    services = request.app.state.services
    owner: str = request.scope["state"]["principal"].user_id
    slot = services.limiter.open_stream(owner)
    try:
        await services.limiter.check_llm(owner)
        caller = caller_for(request, slot)
        chunks = _Chunks(caller.request_id, prepared.task.name)
        heartbeat = caller.heartbeat_seconds
        if prepared.one_shot:
            completion = await _complete(caller, prepared)
            if slot is not None:
                slot.release()
            return EventStream(
                _one_shot_stream(chunks, completion, prepared.include_usage), heartbeat_seconds=heartbeat
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
    return EventStream(
        _relay(request, chunks, first, events, prepared.include_usage, slot), heartbeat_seconds=heartbeat
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
