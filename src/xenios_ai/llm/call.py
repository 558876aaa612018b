"""One request through the router's chain (`Call`): what is sent, and what has been learnt so far
(attempts, usage, provider, finish reason), turned into the request's outcome at its end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from xenios_ai.errors import XeniosError
from xenios_ai.llm import wire
from xenios_ai.llm.budgets import Hold
from xenios_ai.llm.failures import Attempt, Failed
from xenios_ai.llm.redaction import Redactor
from xenios_ai.llm.structured import OutputSpec
from xenios_ai.llm.tasks import Task
from xenios_ai.llm.types import OutcomeT, Usage
from xenios_ai.llm.usage import UsageRecord


@dataclass(slots=True)
class Call:
    """One request through the chain: what is sent and what has been learnt so far."""

    task: Task
    mode: Literal["complete", "stream"]
    messages: list[wire.Message]
    temperature: float
    max_tokens: int
    output: OutputSpec | None
    owner: str | None
    request_id: str | None
    job_id: str | None
    marked: list[wire.Message | wire.PartsMessage] | None = None
    """The messages with prompt-cache breakpoints, for models that need explicit markers (None: none)."""
    started: float = field(default_factory=time.perf_counter)
    created_at: float = field(default_factory=time.time)
    attempts: list[Attempt] = field(default_factory=list)
    model: str | None = None
    """The model of the attempt in flight (None between attempts)."""
    attempt_started: float = 0.0
    attempt_usage: wire.WireUsage | None = None
    """A stream attempt's latest usage (cumulative: the last one counts)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    cached_tokens: int | None = None
    generation_id: str | None = None
    """OpenRouter's id of the latest attempt's generation."""
    provider: str | None = None
    finish_reason: str | None = None
    ttft_ms: float | None = None
    fallback_used: bool = False
    retry_after: float | None = None
    """The latest Retry-After an upstream gave (passed on when every model failed)."""
    hold: Hold | None = None
    """The call's hold on its owner's budget (budgets on, and an owner)."""
    redactor: Redactor | None = None
    """The call's redaction (its messages are redacted; the answer is restored by the router's caller-facing
    methods), None when it is not redacted."""

    def begin(self, model: str) -> None:
        """An attempt on ``model`` starts: what the previous attempt learnt about its answer is reset."""
        self.model = model
        self.attempt_started = time.perf_counter()
        self.provider = self.finish_reason = None

    def end(self, error: str | None = None, status: int | None = None) -> None:
        """The attempt in flight is over (``error`` unset: it succeeded)."""
        if self.model is not None:
            self.attempts.append(Attempt(self.model, _ms(self.attempt_started), error, status))
            self.model = None

    def add_usage(self, usage: wire.WireUsage | None) -> None:
        if usage is None:
            return
        if usage.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + usage.prompt_tokens
        if usage.completion_tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + usage.completion_tokens
        if usage.cost is not None:
            self.cost = (self.cost or 0.0) + usage.cost
        details = usage.prompt_tokens_details
        if details is not None and details.cached_tokens is not None:
            self.cached_tokens = (self.cached_tokens or 0) + details.cached_tokens

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.cost)

    @property
    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def outcome(self, kind: type[OutcomeT], model: str, **fields: Any) -> OutcomeT:
        """The request's `Completion` or `Done`, ``model`` having answered."""
        return kind(
            model=model,
            provider=self.provider,
            fallback_used=self.fallback_used,
            finish_reason=self.finish_reason,
            usage=self.usage,
            attempts=self.attempts,
            latency_ms=self.elapsed_ms,
            request_id=self.request_id,
            **fields,
        )

    def final_error(self, failed: Failed) -> XeniosError:
        """The error that ends the request, with every attempt so far."""
        error = failed.final_error()
        error.extra.setdefault("attempts", self.attempt_dicts())
        return error

    def attempt_dicts(self) -> list[dict[str, Any]]:
        """The attempts as plain data (error bodies, the usage row)."""
        return [msgspec.to_builtins(a) for a in self.attempts]

    def read_chunks(self, payloads: list[bytes]) -> tuple[str, bool, bool]:
        """The text of some stream chunks (usage, provider and finish reason noted), whether [DONE] came,
        and whether an error chunk ended the stream (the text before it is returned)."""
        pieces: list[str] = []
        finished = False
        for payload in payloads:
            if payload == b"[DONE]":
                finished = True
                continue
            chunk = wire.decode_chunk(payload)
            if chunk.id is not None and chunk.id != self.generation_id:
                self.generation_id = chunk.id
            if chunk.error is not None:
                return "".join(pieces), finished, True
            if chunk.usage is not None:
                self.attempt_usage = chunk.usage
            if chunk.provider is not None:
                self.provider = chunk.provider
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason is not None:
                    self.finish_reason = choice.finish_reason
        return "".join(pieces), finished, False

    def usage_record(
        self,
        status: Literal["succeeded", "failed", "cancelled"],
        error_code: str | None,
        *,
        content: str | None,
        charged: float | None,
        store_content: bool,
    ) -> UsageRecord:
        """The request's row in ``ai_backend.llm_requests`` (text only with LLM_STORE_CONTENT)."""
        return UsageRecord(
            created_at=self.created_at,
            request_id=self.request_id,
            job_id=self.job_id,
            owner=self.owner,
            task=self.task.name,
            mode=self.mode,
            status=status,
            error_code=error_code,
            model=self.attempts[-1].model if self.attempts else None,
            provider=self.provider,
            fallback_used=self.fallback_used,
            attempts=self.attempt_dicts(),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost,
            latency_ms=self.elapsed_ms,
            ttft_ms=self.ttft_ms,
            finish_reason=self.finish_reason,
            cached_tokens=self.cached_tokens,
            generation_id=self.generation_id,
            budget_charged_usd=charged,
            prompt=msgspec.to_builtins(self.messages) if store_content else None,
            response=content if store_content else None,
        )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
