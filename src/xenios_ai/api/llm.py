"""LLM routes: the task catalogue, completion, SSE streaming, intent classification, entity extraction.

Thin: bodies are validated by msgspec, the work is `xenios_ai.llm`'s. The stream holds its HTTP status
until the chain has its first text (each model within the first-token deadline, falling back as usual) or
has failed: a chain that fails before any text answers its problem (5xx: 502/503/504, with the attempts),
never 200 and an ``error`` event. Once the first text is there it sends ``start``, ``delta`` {content} as
text arrives, then ``done`` {model, fallback_used, usage, ...} or, for a failure after text, ``error``
{code, message, status, attempts}; a stream that has sent text is never restarted on another model. Other
errors before the stream starts (bad body, unknown task, LLM not configured, the user's budget used up)
are problems too.
Every user route counts against the user's LLM rate limit, and a stream holds one of the user's stream
slots until it ends (`api.ratelimit`: 429 past either).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.types import Receive
from loguru import logger

from xenios_ai.api.auth import Principal, require_user
from xenios_ai.api.deps import Services, ServicesDep
from xenios_ai.api.ratelimit import StreamSlot
from xenios_ai.api.schemas import (
    ClassifyIntentRequest,
    CompleteRequest,
    CompleteResponse,
    EntitiesResponse,
    ExtractEntitiesRequest,
    IntentResponse,
    LLMOptions,
    TaskInfo,
    TasksResponse,
)
from xenios_ai.api.sse import EventStream, event
from xenios_ai.errors import ClientGone, XeniosError
from xenios_ai.llm.router import LLMRouter
from xenios_ai.llm.typed_tasks import classify_intent, extract_entities
from xenios_ai.llm.types import Completion, Delta, Options, StreamEvent
from xenios_ai.llm.wire import Message

_encode = msgspec.json.Encoder().encode
T = TypeVar("T")
WATCH_AFTER = 0.25
"""Seconds into a completion after which a client disconnect is watched for (see Caller.until_disconnect)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """What a user LLM route needs, provided as ONE dependency: Litestar resolves two or more dependencies
    of the same level in an anyio task group, two tasks per request (~5% of a relayed request's CPU)."""

    llm: LLMRouter
    owner: str
    request_id: str | None
    heartbeat_seconds: float
    receive: Receive
    stream_slot: StreamSlot | None = None
    """/stream only: the user's stream slot, released when the stream ends."""

    async def until_disconnect(self, work: Awaitable[T]) -> T:
        """Await ``work``, cancelling it (and so the upstream request) if the client disconnects first.

        The watch starts after `WATCH_AFTER` seconds (a timer, not a task, until then): quick answers pay
        nothing, and an LLM call left by its client runs on for at most that long.
        """
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        gone = False
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            nonlocal gone
            while (await self.receive())["type"] != "http.disconnect":
                pass
            gone = True
            main.cancel()

        def arm() -> None:
            nonlocal watcher
            watcher = loop.create_task(watch())

        timer = loop.call_later(WATCH_AFTER, arm)
        try:
            return await work
        except asyncio.CancelledError:
            if gone and main.uncancel() == 0:
                raise ClientGone("the client disconnected; the LLM request was cancelled") from None
            raise
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()


def caller_for(request: Request[Any, Any, Any], slot: StreamSlot | None = None) -> Caller:
    """The caller of a user route (the require_user guard has run); /v1 builds its own with it."""
    services: Services = request.app.state.services
    state = request.scope["state"]
    principal: Principal = state["principal"]  # set by the require_user guard
    request_id = state.get("request_id")
    return Caller(
        services.llm,
        principal.user_id,
        request_id if isinstance(request_id, str) else None,
        services.settings.llm_heartbeat_seconds,
        request.receive,
        slot,
    )


async def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    """The caller, once within the user's LLM rate limit (a Redis round trip only when this process has
    used up the permits it took for the user; none when the limit is off)."""
    caller = caller_for(request)
    await request.app.state.services.limiter.check_llm(caller.owner)
    return caller


async def provide_stream_caller(request: Request[Any, Any, Any]) -> AsyncGenerator[Caller, None]:
    """/stream's caller: a stream slot, then the rate limit. Once the route has returned its stream, the
    stream releases the slot when it ends; if the request fails before that, this does."""
    owner: str = request.scope["state"]["principal"].user_id
    limiter = request.app.state.services.limiter
    slot: StreamSlot | None = limiter.open_stream(owner)
    try:
        await limiter.check_llm(owner)
        yield caller_for(request, slot)
    except BaseException:
        if slot is not None:
            slot.release()
        raise


CallerDep = NamedDependency[Caller]
_USER: list[dict[str, list[str]]] = [{"apiKey": [], "supabaseJWT": []}]
"""OpenAPI security of the user routes: the key AND the user's JWT."""


def _options(options: LLMOptions | None) -> Options | None:
    if options is None:
        return None
    return Options(
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        redact=options.redact,
        redact_names=options.redact_names,
    )


def _messages(data: CompleteRequest) -> list[Message] | None:
    return None if data.messages is None else [Message(m.role, m.content) for m in data.messages]


def _event(item: StreamEvent) -> bytes:
    """``delta`` {content} (the model is told once, by ``done``) or ``done`` {model, usage, ...}."""
    if type(item) is Delta:
        return b'event: delta\ndata: {"content":' + _encode(item.content) + b"}\n\n"
    return event("done", _encode(item))


async def _sse(
    start: bytes,
    events: AsyncGenerator[StreamEvent, None],
    slot: StreamSlot | None = None,
    first: StreamEvent | None = None,
) -> AsyncIterator[bytes]:
    """The router's events as SSE, ``first`` (already taken from ``events``) first; a failure after it
    ends the stream with ``error``."""
    yield start
    try:
        if first is not None:
            yield _event(first)
        async for item in events:
            yield _event(item)
    except XeniosError as exc:
        body = {"code": exc.code, "message": exc.detail, "status": exc.status, **exc.extra}
        yield event("error", _encode(body))
    except Exception:
        logger.exception("LLM stream failed")
        body = {"code": "internal_error", "message": "an unexpected error occurred", "status": 500}
        yield event("error", _encode(body))
    finally:
        try:
            await events.aclose()
        finally:
            if slot is not None:
                slot.release()


class LLMController(Controller):
    path = "/llm"
    tags = ["llm"]
    dependencies = {"caller": Provide(provide_caller)}

    @get(
        "/tasks",
        security=[{"apiKey": []}],
        summary="The task catalogue: models (primary, fallbacks), output kind, limits",
    )
    async def tasks(self, services: ServicesDep) -> TasksResponse:
        tasks = [
            TaskInfo(
                name=t.name,
                description=t.description,
                primary_model=t.primary_model,
                fallback_models=list(t.fallback_models),
                output=t.output,
                temperature=t.temperature,
                max_tokens=t.max_tokens,
                streamable=t.output == "text",
            )
            for t in services.llm.tasks.values()
        ]
        return TasksResponse(configured=services.llm.configured, tasks=tasks)

    @post(
        "/complete",
        guards=[require_user],
        security=_USER,
        status_code=200,
        summary="Run a task to completion",
    )
    async def complete(
        self,
        data: JSONBody[CompleteRequest],
        caller: CallerDep,
    ) -> CompleteResponse:
        completion: Completion = await caller.until_disconnect(
            caller.llm.complete(
                data.task,
                _messages(data),
                input=data.input,
                owner=caller.owner,
                request_id=caller.request_id,
                options=_options(data.options),
            )
        )
        return CompleteResponse(
            content=None if completion.data is not None else completion.content,
            data=completion.data,
            model=completion.model,
            fallback_used=completion.fallback_used,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            attempts=completion.attempts,
            latency_ms=completion.latency_ms,
            request_id=completion.request_id,
        )

    @post(
        "/stream",
        guards=[require_user],
        security=_USER,
        status_code=200,
        media_type="text/event-stream",
        dependencies={"caller": Provide(provide_stream_caller)},
        summary="Stream a text task as server-sent events: start, delta*, done | error",
        response_description=(
            "event: start {request_id, task}; event: delta {content} per piece of text; then event: done"
            " {model, provider, fallback_used, finish_reason, usage, attempts, latency_ms, ttft_ms,"
            " request_id} or event: error {code, message, status, attempts}; ': heartbeat' comments"
        ),
    )
    async def stream(
        self,
        data: JSONBody[CompleteRequest],
        caller: CallerDep,
    ) -> EventStream:
        events = await caller.llm.open_stream(
            data.task,
            _messages(data),
            input=data.input,
            owner=caller.owner,
            request_id=caller.request_id,
            options=_options(data.options),
        )
        try:  # the status waits for the first text or the chain's failure (a problem, not 200 + error)
            first: StreamEvent | None = await caller.until_disconnect(anext(events))
        except StopAsyncIteration:
            first = None
        except BaseException:
            await events.aclose()
            raise
        start = event("start", _encode({"request_id": caller.request_id, "task": data.task}))
        return EventStream(
            _sse(start, events, caller.stream_slot, first), heartbeat_seconds=caller.heartbeat_seconds
        )

    @post(
        "/classify-intent",
        guards=[require_user],
        security=_USER,
        status_code=200,
        summary="Intent of a message",
    )
    async def classify_intent(
        self,
        data: JSONBody[ClassifyIntentRequest],
        caller: CallerDep,
    ) -> IntentResponse:
        result, completion = await caller.until_disconnect(
            classify_intent(
                caller.llm,
                data.text,
                data.labels,
                data.context,
                owner=caller.owner,
                request_id=caller.request_id,
            )
        )
        return IntentResponse(
            intent=result.intent,
            confidence=result.confidence,
            alternatives=result.alternatives,
            model=completion.model,
            fallback_used=completion.fallback_used,
            usage=completion.usage,
            request_id=completion.request_id,
        )

    @post(
        "/extract-entities",
        guards=[require_user],
        security=_USER,
        status_code=200,
        summary="Entities with offsets",
    )
    async def extract_entities(
        self,
        data: JSONBody[ExtractEntitiesRequest],
        caller: CallerDep,
    ) -> EntitiesResponse:
        result, completion = await caller.until_disconnect(
            extract_entities(
                caller.llm, data.text, data.entity_types, owner=caller.owner, request_id=caller.request_id
            )
        )
        return EntitiesResponse(
            entities=result.entities,
            model=completion.model,
            fallback_used=completion.fallback_used,
            usage=completion.usage,
            request_id=completion.request_id,
        )
