"""The OpenRouter upstream: the one client per router, and one attempt's stream read under its deadlines.

`Upstream.attempt` opens ``/chat/completions`` as a stream and yields the answer's text read by read,
raising `xenios_ai.llm.failures.Failed` for any failure (classified by `failures.classify`); the router
(`xenios_ai.llm.router`) owns the chain around it: retries, fallback, budgets and the usage record.
Deadlines: the first text within ``llm_first_token_timeout_seconds`` (``: OPENROUTER PROCESSING``
comments do not count), then data at least every ``llm_stream_idle_timeout_seconds``; a completion's
attempt also ends at ``llm_timeout_seconds``. Streams ask for ``Accept-Encoding: identity`` (SSE must
reach us as it is sent) and are decoded anyway when a proxy compresses them.

Performance: one ``AsyncOpenAI`` client on the aiohttp transport; requests go through the SDK's ``post``
with a msgspec-encoded body and come back as raw bytes decoded by msgspec (`wire`), so neither pydantic
request transforms nor response models run on the hot path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator

import httpx2
import msgspec
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient, RequestOptions

from xenios_ai.llm import wire
from xenios_ai.llm.call import Call
from xenios_ai.llm.failures import Failed, classify, interrupted
from xenios_ai.llm.requests import request_body
from xenios_ai.settings import Settings

__all__ = ["Upstream"]

_CHAT = "/chat/completions"
_STREAM_OPTIONS: RequestOptions = {"headers": {"Accept-Encoding": "identity"}}
"""Streams uncompressed: the transport does not decode compressed bodies, and compression would buffer."""


class Upstream:
    """OpenRouter through one ``AsyncOpenAI`` client (``key`` is the API key). Use it on one event loop."""

    def __init__(self, settings: Settings, key: str, http_client: httpx2.AsyncClient | None = None) -> None:
        self._key = key
        self._timeout = settings.llm_timeout_seconds
        self._first_token_timeout = settings.llm_first_token_timeout_seconds
        self._idle_timeout = settings.llm_stream_idle_timeout_seconds
        limit = settings.llm_max_connections
        self._client = AsyncOpenAI(
            api_key=key,
            base_url=settings.openrouter_base_url,
            max_retries=0,  # retries and fallback are the router's
            timeout=httpx2.Timeout(max(self._timeout, self._idle_timeout), connect=10.0),
            default_headers={
                "HTTP-Referer": settings.openrouter_referer,
                "X-Title": settings.openrouter_title,
            },
            http_client=http_client
            or DefaultAioHttpClient(
                limits=httpx2.Limits(max_connections=limit, max_keepalive_connections=limit),
            ),
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def generation_cost(self, generation_id: str) -> float | None:
        """What OpenRouter says a generation cost (``GET /generation?id=``), or None while it does not know
        (it reports a generation shortly after it ends) or cannot be asked."""
        try:
            async with asyncio.timeout(10.0):
                response = await self._client.get(
                    "/generation",
                    cast_to=httpx2.Response,
                    options={"params": {"id": generation_id}},
                )
            return wire.decode_generation(response.content).data.total_cost
        except (
            openai.APIError,
            httpx2.HTTPError,
            TimeoutError,
            msgspec.DecodeError,
            msgspec.ValidationError,
        ):
            return None

    async def _open(self, call: Call, model: str, deadline: float, limit: float) -> httpx2.Response:
        try:
            async with asyncio.timeout_at(min(deadline, limit)):
                return await self._client.post(
                    _CHAT,
                    content=request_body(call, model),
                    cast_to=httpx2.Response,
                    options=_STREAM_OPTIONS,
                    stream=True,
                    stream_cls=None,  # cast_to=Response: the raw, unread response
                )
        except Exception as exc:
            failed = classify(exc, self._key)
            if isinstance(exc, TimeoutError):
                failed.error = "first_token_timeout" if deadline <= limit else "timeout"
            raise failed from None

    async def attempt(self, call: Call, model: str) -> AsyncGenerator[str, None]:
        """Yield the text of one upstream stream, read by read; raise `Failed` on any failure.

        Deadlines: the first text within ``llm_first_token_timeout_seconds``, then data at least every
        ``llm_stream_idle_timeout_seconds``; a completion's attempt also ends at ``llm_timeout_seconds``.
        """
        loop = asyncio.get_running_loop()
        streaming = call.mode == "stream"
        now = loop.time()
        deadline = now + self._first_token_timeout
        limit = math.inf if streaming else now + self._timeout
        response = await self._open(call, model, deadline, limit)
        sent_text = False
        size = 0
        try:
            lines = wire.SSELines()
            # aiter_raw does not undo a Content-Encoding (the transport does not either): a proxy may
            # compress despite Accept-Encoding: identity, and only then is aiter_bytes' decoding needed.
            reads = response.aiter_bytes() if wire.encoded(response) else response.aiter_raw()
            finished = False
            while True:
                try:
                    async with asyncio.timeout_at(min(deadline, limit)):
                        data = await anext(reads)
                except StopAsyncIteration:
                    break
                payloads = lines.feed(data)
                if not payloads:
                    continue  # a partial line, or comments (": OPENROUTER PROCESSING")
                text, done, error = call.read_chunks(payloads)
                finished = finished or done
                if error and not sent_text:
                    raise Failed("retry", "stream_error")  # nothing reached the client: try again
                if sent_text or text:
                    deadline = loop.time() + self._idle_timeout
                if text:
                    if not sent_text:
                        sent_text = True
                        call.ttft_ms = call.elapsed_ms
                    size += len(text)
                    if size > wire.MAX_BODY_BYTES:
                        raise wire.TooLarge(f"the answer is larger than {wire.MAX_BODY_BYTES} bytes")
                    yield text
                if error:
                    raise Failed("retry", "stream_error")
            if not finished and call.finish_reason is None:
                raise Failed("retry", "incomplete_stream")
        except Exception as exc:
            raise self._failure(exc, model, sent_text=sent_text, streaming=streaming, limit=limit) from None
        finally:
            call.add_usage(call.attempt_usage)  # also when cancelled: what the provider reported so far
            call.attempt_usage = None
            await response.aclose()

    def _failure(
        self, exc: Exception, model: str, *, sent_text: bool, streaming: bool, limit: float
    ) -> Failed:
        """What an exception during an attempt's reads means (a stream that sent text never restarts)."""
        failure = exc if isinstance(exc, Failed) else classify(exc, self._key)
        if isinstance(exc, TimeoutError):
            if asyncio.get_running_loop().time() >= limit:
                failure.error = "timeout"
            else:
                failure.error = "stream_stalled" if sent_text else "first_token_timeout"
        if sent_text and streaming:
            interrupted(failure, model, self._idle_timeout)
        return failure
