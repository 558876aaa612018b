"""A fake OpenRouter: a real aiohttp server speaking OpenRouter's chat-completions wire format.

It runs on its own event loop in a background thread, so sync tests, async tests on any loop and API
processes started as subprocesses can all call it over real HTTP::

    with FakeOpenRouter(api_key="test-key") as fake:
        fake.enqueue(Reply(status=503, retry_after=1), model="anthropic/claude-opus-4.5")
        ...  # point the service at fake.base_url ("http://127.0.0.1:PORT/api/v1")
        assert fake.requests[0].headers["x-title"] == "Xenios"

Each request gets a `Reply`: the one named by a ``[[fake:{...json fields of Reply...}]]`` trigger in the
last user message, else the first scripted one (`enqueue`) whose model matches, else `default`.

Standalone, for benchmarks: ``python -m tests.fakes.openrouter --port 8199`` prints the base URL once
listening.

Wire format (OpenRouter docs: API reference, streaming, errors): non-stream bodies are ``chat.completion``
objects with ``provider`` and ``usage.cost``; streams are SSE ``data:`` chunks, optional
``: OPENROUTER PROCESSING`` comments before the first one, a ``finish_reason`` chunk, a chunk with empty
``choices`` and the usage, then ``data: [DONE]``. Errors before the first byte are
``{"error": {"code", "message", "metadata"}}`` with the same HTTP status (a moderation refusal is a 403
whose metadata has ``reasons`` and ``flagged_input``); an error after the stream began is a chunk with a
top-level ``error`` and ``finish_reason: "error"``, after which the stream ends. ``Reply.gzip`` compresses
bodies as OpenRouter or a proxy in front of it may.

Prompt caching (as Anthropic's through OpenRouter): a request whose messages carry ``cache_control`` parts
caches its prefix up to the last such part, per model; a later request with the same prefix reads it
(``usage.prompt_tokens_details.cached_tokens``, priced at 0.1x the prompt price; writing costs 1.25x).
``prefill_seconds_per_1k_tokens`` makes the first byte wait in proportion to the uncached prompt tokens
(benchmarks; 0 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import itertools
import json as std_json
import math
import re
import signal
import socket
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgspec
from aiohttp import web

from tests.fakes.json_instance import minimal_instance

DEFAULT_CONTENT: Final = "This is a deterministic reply from the fake OpenRouter."
DEFAULT_MODELS: Final = ("anthropic/claude-opus-4.5", "anthropic/claude-sonnet-4", "openai/gpt-4o-mini")
TRIGGER: Final = "[[fake:"
PROCESSING_COMMENT: Final = b": OPENROUTER PROCESSING\n\n"
DONE: Final = b"data: [DONE]\n\n"

_ERROR_MESSAGES: Final = {
    400: "Bad request",
    401: "User not found.",
    402: "Insufficient credits",
    403: "Forbidden",
    404: "Not found",
    408: "Request timed out",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No instances available",
    504: "Gateway timeout",
}
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_MAX_GENERATIONS: Final = 10_000
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_encode = msgspec.json.Encoder().encode


class Reply(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the fake answers one request. Every field is optional; the default is a quick, correct reply.

    Stream-only faults count content chunks: ``stall_after=2`` stalls after the second chunk.
    """

    content: str | None = None
    """Reply text; None: `DEFAULT_CONTENT` (or the `json` value encoded)."""
    json: Any = msgspec.UNSET
    """A value serialised as the content (for typed JSON tasks)."""
    invalid_json: bool = False
    """Make the content deliberately broken JSON (the `json` value, else a small object, truncated)."""
    chunks: int | None = None
    """Split the content into this many stream chunks; None: one chunk per word (each chunk counts as a
    completion token)."""
    token_delay: float = 0.0
    """Stream: seconds between chunks (slow tokens)."""
    processing_comments: int = 0
    """Stream: ``: OPENROUTER PROCESSING`` comments sent before the first chunk."""
    comment_interval: float = 0.0
    """Stream: seconds after each processing comment ("thinking" time before the first token)."""
    hang: float = 0.0
    """Seconds to wait before sending any byte, headers included (a slow non-stream reply, or a hang)."""
    status: int = 200
    """An error status (400, 401, 429, 500, 502, 503, ...) answered with an OpenRouter error body."""
    error_message: str | None = None
    """Message of the error body or of the mid-stream error chunk."""
    retry_after: float | None = None
    """Seconds for a Retry-After header (with an error status)."""
    stall_after: int | None = None
    """Stream: stall for `stall_seconds` after this many chunks, then go on."""
    stall_seconds: float = 60.0
    cut_after: int | None = None
    """Stream: close the connection after this many chunks, mid chunked body. Non-stream (any value):
    send the headers and half of the body, then close."""
    schema_instance: bool = False
    """A request with a ``json_schema`` response_format gets the smallest value its schema accepts
    (tests/fakes/json_instance.py); others get the reply as it is."""
    mid_stream_error: int | None = None
    """Stream: after this many chunks send OpenRouter's mid-stream error chunk and end the stream."""
    prompt_tokens: int | None = None
    """Usage override; default: characters of all message contents // 4 (at least 1)."""
    completion_tokens: int | None = None
    """Usage override; default: the number of content chunks."""
    cost: float | None = None
    """Usage override; default: (prompt_tokens * 3 + completion_tokens * 15) / 1e6 (Claude Sonnet prices)."""
    finish_reason: str = "stop"
    provider: str = "Fake"
    moderation_reasons: list[str] | None = None
    """With ``status=403``: OpenRouter's moderation refusal, its metadata naming these ``reasons`` and the
    ``flagged_input``; unset, a 403 is a plain one (e.g. a model the account may not use)."""
    prefill_seconds_per_1k_tokens: float | None = None
    """Wait this long per 1,000 uncached prompt tokens before answering (None: the server's setting)."""
    usage_every_chunk: bool = False
    """Stream: every content chunk also carries the cumulative usage so far (as some providers send it)."""
    gzip: Literal["accepted", "always"] | None = None
    """Compress the body (JSON or SSE) with gzip: ``"accepted"`` when the request's Accept-Encoding allows
    it, ``"always"`` even when it does not (a misbehaving proxy). A stream is flushed at every write, so
    its chunks still arrive as they are sent."""


@dataclass(slots=True)
class RecordedRequest:
    """One ``POST /chat/completions`` as the fake saw it (rejected ones included)."""

    model: str | None
    body: Any
    """The JSON body as decoded (None when it was not JSON)."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    stream: bool
    received_at: float
    """`time.monotonic()` when the request arrived."""
    status: int = 200
    """HTTP status answered."""
    client_disconnected: bool = False
    """The client went away before the response was fully sent."""
    completed: bool = False
    """The response was fully sent."""
    compressed: bool = False
    """The body was sent gzip-compressed (`Reply.gzip`)."""
    reply: Reply | None = None
    _cut: bool = field(default=False, repr=False)


Predicate = Callable[[list[RecordedRequest]], object]


def last_disconnected(requests: list[RecordedRequest]) -> bool:
    """A `Predicate`: the latest request's client has gone away."""
    return bool(requests) and requests[-1].client_disconnected


class _Plan:
    """What a `Reply` sends, worked out once per reply (the default's is cached)."""

    __slots__ = ("content", "content_json", "pieces", "pieces_json")

    def __init__(self, reply: Reply) -> None:
        if reply.json is not msgspec.UNSET:
            content = _encode(reply.json).decode()
        elif reply.content is not None:
            content = reply.content
        else:
            content = '{"result": "ok"}' if reply.invalid_json else DEFAULT_CONTENT
        if reply.invalid_json:
            content = content[:-1] + ', "truncated": '
        self.content = content
        self.content_json = _encode(content)
        self.pieces = _split(content, reply.chunks)
        self.pieces_json = [_encode(piece) for piece in self.pieces]


def _split(content: str, chunks: int | None) -> list[str]:
    if not content:
        return []
    if chunks is None:
        return re.findall(r"\s*\S+\s*$|\s*\S+", content) or [content]
    count = max(1, min(chunks, len(content)))
    size, extra = divmod(len(content), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(content[start:end])
        start = end
    return pieces


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _gzipper(request: web.Request, record: RecordedRequest, reply: Reply | None) -> Any:
    """A gzip compressor when `Reply.gzip` asks for one for this request (noted in the record), else None."""
    if reply is None or reply.gzip is None:
        return None
    if reply.gzip == "accepted" and not _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        return None
    record.compressed = True
    return zlib.compressobj(wbits=31)  # 31: the gzip container


def _gzipped(body: bytes, gzipper: Any, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """``body`` and ``headers``, compressed and saying so when there is a ``gzipper``."""
    if gzipper is None:
        return body, headers
    return bytes(gzipper.compress(body) + gzipper.flush()), headers | {"Content-Encoding": "gzip"}


def _error_body(status: int, message: str, metadata: dict[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return _encode({"error": error, "user_id": "user_fake"})


class FakeOpenRouter:
    """A real HTTP server on a loopback port faking OpenRouter's ``/api/v1`` (see the module docstring).

    api_key: the bearer token required (None accepts any or none). models: an allow-list; other models
    get `unknown_model_status` with OpenRouter's "is not a valid model ID" (None accepts any model, and
    ``GET /models`` lists `DEFAULT_MODELS`). max_recorded: keep only the latest N requests (None: all).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        default: Reply | None = None,
        unknown_model_status: int = 400,
        max_recorded: int | None = None,
        prefill_seconds_per_1k_tokens: float = 0.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.api_key = api_key
        self.models = tuple(models) if models is not None else None
        self._initial_default = default or Reply()
        self.default = self._initial_default
        self.unknown_model_status = unknown_model_status
        self.prefill_seconds_per_1k_tokens = prefill_seconds_per_1k_tokens
        self._prompt_cache: set[tuple[str, int]] = set()
        self._generations: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        """(model, hash of a cached prefix)."""
        self._cond = threading.Condition()
        self._records: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._script: list[tuple[str | None, Reply]] = []
        self._plans: dict[int, tuple[Reply, _Plan]] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/api/v1``: the OpenAI SDK's base_url."""
        return f"http://{self.host}:{self.port}/api/v1"

    def start(self) -> Self:
        """Bind the port and serve from a background thread; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenRouter already started")
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        self._stopping = False
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"fake-openrouter-{self.port}", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Stop serving (in-flight handlers are cancelled) and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._stopping = True
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/api/v1/models", self._models)
        app.router.add_get("/api/v1/generation", self._generation)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.1
        )
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        self._runner = runner

    # -- scripting and records ----------------------------------------------------------------------

    def enqueue(self, *replies: Reply, model: str | None = None) -> None:
        """Queue replies, consumed FIFO by the next requests for `model` (None: for any model)."""
        with self._cond:
            self._script.extend((model, reply) for reply in replies)

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._cond:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot (copies) of the recorded requests, oldest first."""
        with self._cond:
            return [copy.copy(record) for record in self._records]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._cond:
            self._records.clear()

    def reset(self) -> None:
        """Forget recorded requests and queued replies, and restore the constructor's default."""
        with self._cond:
            self._records.clear()
            self._script.clear()
            self._prompt_cache.clear()
        self.default = self._initial_default

    def wait_for(self, predicate: Predicate, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until `predicate(requests)` is true and return that snapshot; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = [copy.copy(record) for record in self._records]
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(r.model, r.status, r.completed, r.client_disconnected) for r in snapshot]
                    raise TimeoutError(
                        f"not met within {timeout}s; (model, status, completed, client_disconnected): {seen}"
                    )
                self._cond.wait(remaining)

    async def wait_for_async(self, predicate: Predicate, timeout: float = 5.0) -> list[RecordedRequest]:
        """`wait_for` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def _update(self, record: RecordedRequest, **changes: Any) -> None:
        with self._cond:
            for name, value in changes.items():
                setattr(record, name, value)
            self._cond.notify_all()

    # -- HTTP handlers ------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": model,
                "canonical_slug": model,
                "name": model,
                "created": 1_700_000_000,
                "context_length": 200_000,
                "pricing": {"prompt": "0.000003", "completion": "0.000015", "request": "0", "image": "0"},
                "supported_parameters": ["max_tokens", "temperature", "response_format", "stop"],
            }
            for model in (self.models if self.models is not None else DEFAULT_MODELS)
        ]
        return web.Response(body=_encode({"data": data}), headers=_JSON_HEADERS)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        received_at = time.monotonic()
        raw = await request.read()
        try:
            body: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            body = None
        is_object = isinstance(body, dict)
        model = body.get("model") if is_object else None
        record = RecordedRequest(
            model=model if isinstance(model, str) else None,
            body=body,
            headers={name.lower(): value for name, value in request.headers.items()},
            stream=is_object and body.get("stream") is True,
            received_at=received_at,
        )
        with self._cond:
            self._records.append(record)
            self._cond.notify_all()
        try:
            return await self._answer(request, record)
        except asyncio.CancelledError:
            # handler_cancellation: aiohttp cancels the handler when the connection is lost.
            if not record._cut and not self._stopping:
                self._update(record, client_disconnected=True)
            raise
        except ConnectionResetError:  # a write to a connection the client closed
            self._update(record, client_disconnected=True)
            return web.Response(status=499)  # aiohttp fails to send it, quietly

    async def _answer(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        rejection = self._validate(request, record)
        if rejection is not None:
            return await self._send_error(request, record, *rejection)
        messages: list[Any] = record.body["messages"]
        try:
            reply = self._choose(record.model or "", messages)
        except (ValueError, msgspec.ValidationError) as exc:
            return await self._send_error(request, record, 400, f"invalid {TRIGGER}...]] trigger: {exc}")
        response_format = record.body.get("response_format")
        if reply.schema_instance and isinstance(response_format, dict) and "json_schema" in response_format:
            value = minimal_instance(response_format["json_schema"].get("schema", {}))
            reply = msgspec.structs.replace(reply, json=value, schema_instance=False)
        record.reply = reply
        if reply.hang > 0:
            await asyncio.sleep(reply.hang)
        if reply.status >= 400:
            return await self._send_error(request, record, reply.status, reply.error_message, reply)
        plan = self._plan(reply)
        prompt = sum(len(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, prompt // 4)
        completion_tokens = (
            reply.completion_tokens if reply.completion_tokens is not None else len(plan.pieces)
        )
        cached, written = self._cache_prompt(record.model or "", messages, prompt_tokens)
        prefill = reply.prefill_seconds_per_1k_tokens
        prefill = self.prefill_seconds_per_1k_tokens if prefill is None else prefill
        if prefill > 0:
            await asyncio.sleep((prompt_tokens - cached) / 1000 * prefill)
        cost = reply.cost
        if cost is None:
            fresh = prompt_tokens - cached - written
            cost = (fresh * 3 + written * 3.75 + cached * 0.3 + completion_tokens * 15) / 1e6
        usage = _encode(
            {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "cost": cost,
                "is_byok": False,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "cost_details": {"upstream_inference_cost": None},
                "completion_tokens_details": {"reasoning_tokens": 0},
            }
        )
        created = int(time.time())
        generation = f"gen-{created}-{next(self._ids):08d}"
        self._remember(generation, cost, prompt_tokens, completion_tokens, cached)
        # Fields every chunk (or the whole completion) starts with, already JSON.
        head = b'{"id":"%s","provider":%s,"model":%s,"created":%d,' % (
            generation.encode(),
            _encode(reply.provider),
            _encode(record.model),
            created,
        )
        if record.stream:
            return await self._send_stream(request, record, reply, plan, head, usage)
        return await self._send_completion(request, record, reply, plan, head, usage)

    def _remember(self, generation: str, cost: float, prompt: int, completion: int, cached: int) -> None:
        """What ``GET /generation?id=`` reports later (the whole answer's cost, even if it was cancelled)."""
        with self._cond:
            self._generations[generation] = {
                "id": generation,
                "total_cost": cost,
                "tokens_prompt": prompt,
                "tokens_completion": completion,
                "native_tokens_cached": cached,
            }
            while len(self._generations) > _MAX_GENERATIONS:
                self._generations.popitem(last=False)

    async def _generation(self, request: web.Request) -> web.Response:
        """OpenRouter's ``GET /generation?id=``: a generation's stats (404 until known, as right after it)."""
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.Response(status=401, body=_error_body(401, "User not found."), headers=_JSON_HEADERS)
        with self._cond:
            data = self._generations.get(request.query.get("id", ""))
        if data is None:
            body = _error_body(404, "Generation not found")
            return web.Response(status=404, body=body, headers=_JSON_HEADERS)
        return web.Response(body=_encode({"data": data}), headers=_JSON_HEADERS)

    def _validate(self, request: web.Request, record: RecordedRequest) -> tuple[int, str] | None:
        if self.api_key is not None:
            authorization = request.headers.get("Authorization")
            if not authorization:
                return 401, "No cookie auth credentials found"
            if authorization != f"Bearer {self.api_key}":
                return 401, "User not found."
        body = record.body
        if not isinstance(body, dict):
            return 400, "Invalid JSON body: expected an object"
        if not record.model:
            return 400, "Input required: specify a model"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, "Input required: specify prompt or messages"
        if self.models is not None and record.model not in self.models:
            return self.unknown_model_status, f"{record.model} is not a valid model ID"
        return None

    def _cache_prompt(self, model: str, messages: list[Any], prompt_tokens: int) -> tuple[int, int]:
        """(prompt tokens read from the cache, prompt tokens written to it) for this request."""
        prefix: list[str] = []
        cached_chars = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            for part in content if isinstance(content, list) else [content]:
                prefix.append(_text_of([part] if isinstance(part, dict) else part))
                if isinstance(part, dict) and part.get("cache_control") is not None:
                    cached_chars = sum(len(p) for p in prefix)
        if not cached_chars:
            return 0, 0
        tokens = min(prompt_tokens, cached_chars // 4)
        text = "".join(prefix)
        key = (model, hash(text[:cached_chars]))
        with self._cond:
            if key in self._prompt_cache:
                return tokens, 0
            self._prompt_cache.add(key)
        return 0, tokens

    def _choose(self, model: str, messages: list[Any]) -> Reply:
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                text = _text_of(message.get("content"))
                start = text.find(TRIGGER)
                if start >= 0:
                    fields, _ = std_json.JSONDecoder().raw_decode(text, start + len(TRIGGER))
                    return msgspec.convert(fields, Reply)
                break
        if self._script:
            with self._cond:
                for index, (wanted, reply) in enumerate(self._script):
                    if wanted is None or wanted == model:
                        del self._script[index]
                        return reply
        return self.default

    def _plan(self, reply: Reply) -> _Plan:
        cached = self._plans.get(id(reply))
        if cached is not None and cached[0] is reply:
            return cached[1]
        plan = _Plan(reply)
        if reply is self.default:
            self._plans = {id(reply): (reply, plan)}
        return plan

    async def _send_error(
        self,
        request: web.Request,
        record: RecordedRequest,
        status: int,
        message: str | None,
        reply: Reply | None = None,
    ) -> web.StreamResponse:
        metadata: dict[str, Any] | None = None
        if reply is not None and status >= 429:
            metadata = {
                "provider_name": reply.provider,
                "raw": message or _ERROR_MESSAGES.get(status, "error"),
            }
        elif reply is not None and reply.moderation_reasons is not None:
            text = next(
                (
                    _text_of(m.get("content"))
                    for m in reversed(record.body["messages"])
                    if isinstance(m, dict) and m.get("role") == "user"
                ),
                "",
            )
            metadata = {
                "reasons": reply.moderation_reasons,
                "flagged_input": text[:100],
                "provider_name": reply.provider,
                "model_slug": record.model,
            }
            message = (
                message or f"{record.model} requires moderation on {reply.provider}. Your input was flagged"
            )
        headers = dict(_JSON_HEADERS)
        if reply is not None and reply.retry_after is not None:
            seconds = reply.retry_after
            whole = math.isfinite(seconds) and seconds == int(seconds)
            headers["Retry-After"] = str(int(seconds)) if whole else str(seconds)  # inf: "inf"
        body = _error_body(status, message or _ERROR_MESSAGES.get(status, "Error"), metadata)
        body, headers = _gzipped(body, _gzipper(request, record, reply), headers)
        record.status = status
        response = web.Response(status=status, body=body, headers=headers)
        await response.prepare(request)
        await response.write_eof()
        self._update(record, completed=True)
        return response

    async def _send_completion(
        self,
        request: web.Request,
        record: RecordedRequest,
        reply: Reply,
        plan: _Plan,
        head: bytes,
        usage: bytes,
    ) -> web.StreamResponse:
        body = b"".join(
            (
                head,
                b'"object":"chat.completion","choices":[{"index":0,"logprobs":null,"finish_reason":',
                _encode(reply.finish_reason),
                b',"native_finish_reason":',
                _encode(reply.finish_reason),
                b',"message":{"role":"assistant","content":',
                plan.content_json,
                b',"refusal":null,"reasoning":null}}],"usage":',
                usage,
                b"}",
            )
        )
        body, headers = _gzipped(body, _gzipper(request, record, reply), _JSON_HEADERS)
        if reply.cut_after is not None:
            response = web.StreamResponse(headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            return await self._cut(request, record, response)
        response = web.Response(body=body, headers=headers)
        await response.prepare(request)
        await response.write_eof()
        self._update(record, completed=True)
        return response

    async def _send_stream(
        self,
        request: web.Request,
        record: RecordedRequest,
        reply: Reply,
        plan: _Plan,
        head: bytes,
        usage: bytes,
    ) -> web.StreamResponse:
        gzipper = _gzipper(request, record, reply)
        response = web.StreamResponse(headers=_SSE_HEADERS)
        if gzipper is not None:
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        pending: list[bytes] = []  # writes are coalesced until the next pause

        async def pause(seconds: float) -> None:
            if pending:
                data = b"".join(pending)
                if gzipper is not None:
                    data = gzipper.compress(data) + gzipper.flush(zlib.Z_SYNC_FLUSH)
                await response.write(data)
                pending.clear()
            if seconds > 0:
                await asyncio.sleep(seconds)

        async def end() -> None:
            await pause(0)
            if gzipper is not None:
                await response.write(gzipper.flush())  # the gzip trailer
            await response.write_eof()

        for _ in range(reply.processing_comments):
            pending.append(PROCESSING_COMMENT)
            await pause(reply.comment_interval)
        chunk_head = b"data: " + head + b'"object":"chat.completion.chunk","choices":[{"index":0,"delta":'
        count = len(plan.pieces)
        for index in range(count + 1):
            if reply.mid_stream_error is not None and index == min(reply.mid_stream_error, count):
                message = _encode(reply.error_message or "Provider disconnected unexpectedly")
                pending.append(
                    b"data: "
                    + head
                    + b'"object":"chat.completion.chunk","error":{"code":"server_error","message":%s},'
                    % message
                    + b'"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error",'
                    b'"native_finish_reason":"error","logprobs":null}]}\n\n'
                )
                await end()
                self._update(record, completed=True)
                return response
            if reply.cut_after is not None and index == min(reply.cut_after, count):
                await pause(0)
                return await self._cut(request, record, response)
            if index == count:
                break
            if index > 0 and reply.token_delay > 0:
                await pause(reply.token_delay)
            delta = b'{"role":"assistant","content":%s}' if index == 0 else b'{"content":%s}'
            pending.append(
                chunk_head
                + delta % plan.pieces_json[index]
                + b',"finish_reason":null,"native_finish_reason":null,"logprobs":null}]'
                + (_usage_so_far(usage, index + 1, count) if reply.usage_every_chunk else b"")
                + b"}\n\n"
            )
            if reply.stall_after is not None and index + 1 == reply.stall_after:
                await pause(reply.stall_seconds)
        finish = _encode(reply.finish_reason)
        pending.append(
            chunk_head
            + b'{"content":""},"finish_reason":%s,"native_finish_reason":%s,"logprobs":null}]}\n\n'
            % (finish, finish)
        )
        if _wants_usage(record.body):
            pending.append(
                b"data: "
                + head
                + b'"object":"chat.completion.chunk","choices":[],"usage":'
                + usage
                + b"}\n\n"
            )
        pending.append(DONE)
        await end()
        self._update(record, completed=True)
        return response

    async def _cut(
        self, request: web.Request, record: RecordedRequest, response: web.StreamResponse
    ) -> web.StreamResponse:
        """Close the connection mid-body; aiohttp then cancels this handler (handler_cancellation)."""
        record._cut = True
        transport = request.transport
        if transport is not None:
            transport.close()
        await asyncio.sleep(10)  # cancelled as soon as the connection is lost
        return response


def _usage_so_far(usage: bytes, sent: int, count: int) -> bytes:
    """``,"usage":{...}`` after ``sent`` of ``count`` chunks: the final usage, completion and cost pro rata."""
    final = msgspec.json.decode(usage)
    so_far = {
        "prompt_tokens": final["prompt_tokens"],
        "completion_tokens": round(final["completion_tokens"] * sent / count),
        "cost": final["cost"] * sent / count,
    }
    so_far["total_tokens"] = so_far["prompt_tokens"] + so_far["completion_tokens"]
    return b',"usage":' + _encode(so_far)


def _wants_usage(body: dict[str, Any]) -> bool:
    """OpenRouter sends usage in streams by default; only an explicit include_usage=false omits it."""
    options = body.get("stream_options")
    usage = body.get("usage")
    if isinstance(usage, dict) and usage.get("include") is True:
        return True
    return not (isinstance(options, dict) and options.get("include_usage") is False)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, printing the base URL once listening."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.openrouter", description="Serve a fake OpenRouter."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--api-key", default=None, help="require this bearer token (default: accept any)")
    parser.add_argument("--max-recorded", type=int, default=1000, help="requests kept in memory")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    fake = FakeOpenRouter(
        host=args.host, port=args.port, api_key=args.api_key, max_recorded=args.max_recorded
    )
    with fake:
        print(fake.base_url, flush=True)
        while not stop.wait(1.0):
            pass
    sys.exit(0)


if __name__ == "__main__":
    main()
