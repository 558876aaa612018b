"""What the router's callers see: per-request `Options`, `Usage`, and the outcome of a request (a
`Completion`, or a stream's `Delta` events and its final `Done`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

from xenios_ai.llm.failures import Attempt

RedactKind = Literal["email", "phone", "card", "iban", "postcode", "url", "name"]
"""What redaction replaces (`llm.redaction`)."""
RedactName = Annotated[str, msgspec.Meta(min_length=2, max_length=200)]


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-request sampling overrides (unset: the task's) and redaction."""

    temperature: float | None = None
    max_tokens: int | None = None
    redact: bool | list[RedactKind] | None = None
    """Replace personal details by placeholders before the LLM sees them, and restore them in the answer:
    true (every kind), a list of kinds, false (not even the task's default, LLM_REDACT_TASKS)."""
    redact_names: Annotated[list[RedactName], msgspec.Meta(max_length=100)] | None = None
    """Names to replace ([PERSON_n]): the client and people in their life; a full name also covers its
    parts ("Sarah Lee": "Sarah", "Lee")."""


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
    model: str | None = None
    """The model answering: set on every Delta the router yields (a stream that has sent text never changes
    model, so after a fallback it is the fallback); None only on one built elsewhere."""


class Done(Outcome, kw_only=True):
    ttft_ms: float | None


StreamEvent = Delta | Done
OutcomeT = TypeVar("OutcomeT", bound=Outcome)
