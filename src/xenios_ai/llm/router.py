"""The LLM router: one task, a chain of models, retries and fallback, deadlines, usage and cost.

Service API (independent of HTTP; the API and the analysis jobs both use it)::

    router = LLMRouter(settings, usage_sink, metrics=LLM_METRICS)  # one per process, on its loop
    completion = await router.complete("session_summary", input=transcript, owner=user_id,
                                       request_id=rid, job_id=None, options=Options(max_tokens=800))
    completion.content, completion.data, completion.model, completion.fallback_used, completion.usage
    async with contextlib.aclosing(router.stream("chat", messages, owner=user_id)) as events:
        async for event in events:   # Delta(content) ..., then one Done(model, usage, ...)
            ...
    await router.aclose()

``messages`` are ``wire.Message`` (or ``{"role", "content"}`` dicts) following the task's system prompt;
``input`` is one user message (JSON tasks build theirs, see `xenios_ai.llm.structured`). Failures raise the
service's errors (`xenios_ai.errors`) with ``extra["attempts"]`` = ``[{model, duration_ms, error, status}]``:
`InvalidInput` for a bad call (``unknown_task``, ``invalid_llm_input``, ``task_not_streamable``) or a
request the provider refused (``upstream_rejected``: never retried, never sent to another model),
`UpstreamTimeout` (504), `UpstreamUnavailable` (503, Retry-After when the upstream gave one) or
`UpstreamError` (502) when every model failed, and ``llm_not_configured`` (503) without an OpenRouter key.

Rules (DESIGN.md section 4; the status policy is data in `xenios_ai.llm.failures`). Per model, transient
failures (connection error, 408/409/429/5xx, a mid-stream error before any text reached the caller) are
retried ``llm_max_retries`` times after a jittered exponential backoff, or after the upstream's
Retry-After when it is at most ``llm_max_retry_after_seconds`` (a longer one moves on to the next model
at once). Timeouts, an unknown model (404, or 400 "not a valid model ID") and JSON output failing
validation move on to the next model without a retry. Deadlines, one model for every call: every
attempt streams from the upstream (a completion assembles the text itself), so every attempt has
``llm_first_token_timeout_seconds`` until its first text (``: OPENROUTER PROCESSING`` comments do not
count) and then ``llm_stream_idle_timeout_seconds`` between data; a completion's attempt also has the
whole-answer limit ``llm_timeout_seconds``. A hung primary therefore falls back within the first-token
deadline whether the caller streams or not. Once a stream has yielded text it never restarts: a later failure raises ``upstream_stalled`` (504),
``upstream_disconnected`` or ``upstream_stream_error`` (502), after any text that came before it.
Closing the stream (client gone) closes the upstream connection. An answer larger than
``wire.MAX_BODY_BYTES`` (a completion body, or one stream line) fails its attempt (``response_too_large``,
next model). Streams ask for ``Accept-Encoding: identity`` (SSE must reach us as it is sent) and are
decoded anyway when a proxy compresses them.

Usage (tokens, OpenRouter's ``usage.cost``) goes to the `UsageSink` once per request, whatever the
outcome, including cancellation: per attempt the last usage reported counts (a provider may repeat its
cumulative usage in every chunk), summed over the attempts. A cancelled request's row names the model that
was running and its attempt (error ``cancelled``), with any usage the provider had sent.

The upstream itself (the OpenRouter client, one attempt's reads and deadlines, what its failures mean)
is `xenios_ai.llm.upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Literal

import httpx2
from loguru import logger

from xenios_ai.backoff import exponential
from xenios_ai.errors import InvalidInput, UpstreamUnavailable, XeniosError
from xenios_ai.llm import redaction, wire
from xenios_ai.llm.budget_seeding import History
from xenios_ai.llm.budgets import Budgets
from xenios_ai.llm.call import Call
from xenios_ai.llm.failures import Failed, all_failed
from xenios_ai.llm.requests import build_call
from xenios_ai.llm.structured import InvalidOutput, OutputSpec
from xenios_ai.llm.tasks import Task, catalogue_from_settings
from xenios_ai.llm.types import Completion, Delta, Done, Options, StreamEvent, Usage
from xenios_ai.llm.upstream import Upstream
from xenios_ai.llm.usage import NullSink, UsageSink
from xenios_ai.settings import Settings, SettingsError

__all__ = ["Completion", "Delta", "Done", "LLMRouter", "Options", "StreamEvent", "Usage"]


class LLMRouter:
    """Routes task requests to models (see the module docstring). Create and use it on one event loop."""

    def __init__(
        self,
        settings: Settings,
        usage_sink: UsageSink | None = None,
        *,
        metrics: UsageSink | None = None,
        http_client: httpx2.AsyncClient | None = None,
        tasks: Mapping[str, Task] | None = None,
        budget_history: History | None = None,
    ) -> None:
        self.tasks: Mapping[str, Task] = tasks if tasks is not None else catalogue_from_settings(settings)
        self._sink = usage_sink or NullSink()
        self._metrics = metrics or NullSink()
        """Also told of every finished request (the process's LLM metrics: `observability.metrics`)."""
        self._store_content = settings.llm_store_content
        self._redact_tasks = settings.redact_tasks
        self._max_retries = max(0, settings.llm_max_retries)
        self._backoff = settings.llm_retry_backoff_seconds
        self._max_retry_after = settings.llm_max_retry_after_seconds
        self._cache_min_chars = settings.llm_cache_min_chars
        self.budgets = Budgets.from_settings(settings, budget_history)
        """Per-user monthly budgets (None: no budget set)."""
        if self.budgets is not None:
            unknown = sorted(set(self.budgets.task_caps) - set(self.tasks))
            if unknown:
                raise SettingsError(f"BUDGET_USD_PER_TASK_MONTH: unknown task(s) {', '.join(unknown)}")
        key = settings.openrouter_api_key.get() if settings.openrouter_api_key else ""
        self._upstream = Upstream(settings, key, http_client) if key else None
        """The OpenRouter client and one attempt's reads (None without an API key)."""

    @property
    def configured(self) -> bool:
        return self._upstream is not None

    async def aclose(self) -> None:
        if self.budgets is not None:
            await self.budgets.aclose()
        if self._upstream is not None:
            await self._upstream.aclose()

    # -- public API ---------------------------------------------------------------------------------

    async def complete(
        self,
        task: str,
        messages: Sequence[wire.Message | Mapping[str, str]] | None = None,
        *,
        input: str | None = None,
        output: OutputSpec | None = None,
        owner: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
        options: Options | None = None,
    ) -> Completion:
        """Run ``task`` to completion through its model chain (see the module docstring)."""
        call = self._prepare(task, messages, input, output, options, "complete", owner, request_id, job_id)
        async with contextlib.aclosing(self._chain(call)) as events:
            async for item in events:
                if type(item) is Completion:
                    return (
                        item if call.redactor is None else redaction.restore_completion(call.redactor, item)
                    )
        raise AssertionError("the chain ended without an answer")  # pragma: no cover

    def stream(
        self,
        task: str,
        messages: Sequence[wire.Message | Mapping[str, str]] | None = None,
        *,
        input: str | None = None,
        owner: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
        options: Options | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Validate now (errors raise here), then stream: `Delta` events and one final `Done`.

        Close the iterator (``contextlib.aclosing``) when abandoning it: that closes the upstream request.
        """
        return self._restored(self._stream_call(task, messages, input, options, owner, request_id, job_id))

    async def open_stream(
        self,
        task: str,
        messages: Sequence[wire.Message | Mapping[str, str]] | None = None,
        *,
        input: str | None = None,
        owner: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
        options: Options | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """`stream`, with the owner's budget checked before it returns: a refusal (429
        ``budget_exceeded``) raises here rather than ending the stream (`stream` checks it on the first
        iteration). Close the iterator when abandoning it."""
        call = self._stream_call(task, messages, input, options, owner, request_id, job_id)
        await self._admit(call)
        return self._restored(call)

    def _stream_call(
        self,
        task: str,
        messages: Sequence[wire.Message | Mapping[str, str]] | None,
        input: str | None,
        options: Options | None,
        owner: str | None,
        request_id: str | None,
        job_id: str | None,
    ) -> Call:
        """A stream's call, validated: only text tasks stream."""
        call = self._prepare(task, messages, input, None, options, "stream", owner, request_id, job_id)
        if call.task.output != "text":
            raise InvalidInput(
                f"task {task!r} answers JSON and cannot be streamed; use complete", code="task_not_streamable"
            )
        return call

    def _restored(self, call: Call) -> AsyncGenerator[StreamEvent, None]:
        """A stream's chain, its placeholders restored when the call is redacted."""
        events: AsyncGenerator[StreamEvent, None] = self._chain(call)  # type: ignore[assignment]  # no Completion in a stream
        if call.redactor is None:
            return events
        return _with_model(call, redaction.restore_stream(call.redactor, events))

    async def _admit(self, call: Call) -> None:
        """Hold the call's estimated cost on its owner's budget (429 ``budget_exceeded`` when it is used up)."""
        if self.budgets is not None and call.owner is not None and call.hold is None:
            call.hold = await self.budgets.admit(call.owner, call.task.name)

    async def generation_cost(self, generation_id: str) -> float | None:
        """What OpenRouter says a generation cost, or None while it does not know or cannot be asked."""
        return None if self._upstream is None else await self._upstream.generation_cost(generation_id)

    # -- preparation --------------------------------------------------------------------------------

    def _prepare(
        self,
        task_name: str,
        messages: Sequence[wire.Message | Mapping[str, str]] | None,
        input: str | None,
        output: OutputSpec | None,
        options: Options | None,
        mode: Literal["complete", "stream"],
        owner: str | None,
        request_id: str | None,
        job_id: str | None,
    ) -> Call:
        if self._upstream is None:
            raise UpstreamUnavailable(
                "LLM routes need OPENROUTER_API_KEY; it is not configured", code="llm_not_configured"
            )
        task = self.tasks.get(task_name)
        if task is None:
            raise InvalidInput(
                f"unknown task {task_name!r}; known: {', '.join(self.tasks)}", code="unknown_task"
            )
        return build_call(
            task, messages, input, output, options, mode, owner, request_id, job_id,
            redact_tasks=self._redact_tasks, cache_min_chars=self._cache_min_chars,
        )  # fmt: skip

    # -- the chain: one loop for completions and streams -------------------------------------------------

    async def _chain(self, call: Call) -> AsyncGenerator[Delta | Done | Completion, None]:
        """Every model of the chain in turn, with retries, until one answers.

        Both modes stream from the upstream, so the first-token deadline holds for every call. A stream
        yields `Delta` events as text arrives, then `Done`; once it has yielded text it never restarts. A
        completion keeps an attempt's text until the attempt ends (a failure mid-answer moves on like any
        other), checks JSON output, and yields one `Completion`.
        """
        streaming = call.mode == "stream"
        await self._admit(call)  # a refused call leaves no usage row: nothing was sent
        status: Literal["succeeded", "failed", "cancelled"] = "failed"
        error_code: str | None = None
        text: list[str] = []
        try:
            for index, model in enumerate(call.task.models):
                call.fallback_used = index > 0
                for retry in range(self._max_retries + 1):
                    call.begin(model)
                    if not streaming:
                        text.clear()  # an attempt's text counts only if the attempt succeeds
                        call.ttft_ms = None
                    try:
                        assert self._upstream is not None  # _prepare refused the call otherwise
                        async with contextlib.aclosing(self._upstream.attempt(call, model)) as pieces:
                            async for piece in pieces:
                                if streaming:
                                    if self._store_content:
                                        text.append(piece)
                                    yield Delta(piece, model)
                                else:
                                    text.append(piece)
                        outcome = self._finish(call, model, text)
                    except Failed as failed:
                        if streaming and call.ttft_ms is not None:  # text was sent: never restart
                            call.end(failed.error, failed.status)
                            raise call.final_error(failed) from None
                        if not await self._after_failure(call, model, failed, retry):
                            break
                        continue
                    call.end()
                    status = "succeeded"
                    yield outcome
                    return
            raise all_failed(call.task.name, call.attempts, call.retry_after)
        except XeniosError as exc:
            error_code = exc.code
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if status != "succeeded":
                status, error_code = "cancelled", "cancelled"
            raise
        finally:
            content = "".join(text) if (self._store_content or not streaming) and text else None
            self._record(call, status, error_code, content)

    def _finish(self, call: Call, model: str, text: list[str]) -> Done | Completion:
        """The outcome of an attempt that ended well (a completion's JSON output checked here)."""
        if call.mode == "stream":
            return call.outcome(Done, model, ttft_ms=call.ttft_ms)
        content = "".join(text)
        data = None
        if call.output is not None:
            try:
                data = call.output.parse(content)
            except InvalidOutput as exc:
                logger.bind(task=call.task.name, model=model).info("invalid output: {}", exc)
                raise Failed("next", "invalid_output") from None
        return call.outcome(Completion, model, content=content, data=data)

    async def _after_failure(self, call: Call, model: str, failed: Failed, retry: int) -> bool:
        """Note the failed attempt; raise when it ends the request; else wait and say whether to retry."""
        call.end(failed.error, failed.status)
        if failed.retry_after is not None:
            call.retry_after = failed.retry_after
        logger.bind(task=call.task.name, model=model).warning(
            "LLM attempt failed: {}{}", failed.error, f" (HTTP {failed.status})" if failed.status else ""
        )
        if failed.kind == "fatal":
            raise call.final_error(failed)
        if failed.kind == "next" or retry >= self._max_retries:
            return False
        if failed.retry_after is not None:
            if failed.retry_after > self._max_retry_after:
                return False
            delay = failed.retry_after * random.uniform(1.0, 1.1)  # noqa: S311 - jitter, not crypto
        else:
            delay = exponential(self._backoff, retry, jitter=(0.5, 1.5))
        await asyncio.sleep(delay)
        return True

    # -- usage ---------------------------------------------------------------------------------------

    def _record(
        self,
        call: Call,
        status: Literal["succeeded", "failed", "cancelled"],
        error_code: str | None,
        content: str | None,
    ) -> None:
        if call.model is not None:  # the attempt in flight when cancelled (or an unexpected error escaped)
            call.end("cancelled" if status == "cancelled" else "unexpected_error")
        charged = None
        if call.hold is not None and self.budgets is not None:
            # No usage reported but a generation began (a cancelled stream): its estimate is charged now,
            # the real cost looked up by generation id later (`reconcile`).
            unpriced = call.cost is None and call.generation_id is not None
            charged = self.budgets.settle(call.hold, call.cost if call.cost is not None or unpriced else 0.0)
        usage = call.usage_record(
            status, error_code, content=content, charged=charged, store_content=self._store_content
        )
        self._sink.record(usage)
        self._metrics.record(usage)


async def _with_model(
    call: Call, events: AsyncGenerator[StreamEvent, None]
) -> AsyncGenerator[StreamEvent, None]:
    """A redacted stream's restored deltas (new `Delta` objects) named after the model answering: the
    attempt in flight, or once it has ended (the restorer's flush before `Done` or an error) the last one."""
    try:
        async for item in events:
            if type(item) is Delta and item.model is None:
                item.model = call.model or (call.attempts[-1].model if call.attempts else None)
            yield item
    finally:
        await events.aclose()
