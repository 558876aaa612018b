"""What the router's callers see: per-request `Options`, `Usage`, and the outcome of a request (a
`Completion`, or a stream's `Delta` events and its final `Done`)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from xenios_ai.llm.failures import Attempt


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-request sampling overrides; unset: the task's."""

    temperature: float | None = None
    max_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None


class Outcome(msgspec.Struct, kw_only=True):
    """How a request was served: what `Completion` and the stream's `Done` both report."""

    model: str
    provider: str | None
    fallback_used: bool
    finish_reason: str | None
    usage: Usage
    attempts: list[Attempt]
    latency_ms: float
    request_id: str | None


class Completion(Outcome, kw_only=True):
    content: str
    data: Any = None
    """JSON tasks: the validated output (e.g. `structured.IntentResult`)."""


class Delta(msgspec.Struct):
    """Text received from the model since the previous event."""

    content: str


class Done(Outcome, kw_only=True):
    ttft_ms: float | None


StreamEvent = Delta | Done
OutcomeT = TypeVar("OutcomeT", bound=Outcome)
