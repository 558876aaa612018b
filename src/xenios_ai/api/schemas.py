"""The base of every request and response Struct of the API (`Schema`), and the LLM routes' bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from xenios_ai.llm.failures import Attempt
from xenios_ai.llm.structured import Alternative, Entity
from xenios_ai.llm.types import RedactKind, RedactName, Usage


class Schema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies reject unknown fields (a typo is a 422, not a silently ignored option)."""


MAX_PROMPT_CHARS = 400_000
"""Characters of ``messages`` and ``input`` together (~100k tokens: fits every default model's context);
the app's body limit is derived from it (api.app.MAX_JSON_BODY_BYTES)."""
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\- ]+$")]


class ChatMessage(Schema):
    role: Literal["system", "user", "assistant"]
    """``system`` messages are added after the task's own prompt."""
    content: Annotated[str, msgspec.Meta(max_length=200_000)]


class LLMOptions(Schema):
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """At most the task's max_tokens (see GET /llm/tasks)."""
    redact: bool | list[RedactKind] | None = None
    """Personal details replaced by placeholders ([EMAIL_1], [PERSON_1]) before the LLM call and restored in
    the answer: true (every kind), a list of kinds, false (not even the task's default)."""
    redact_names: Annotated[list[RedactName], msgspec.Meta(max_length=100)] | None = None
    """Names to replace by [PERSON_n] (the client, people in their life); a full name covers its parts."""


class CompleteRequest(Schema):
    task: Name
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=500)] | None = None
    """A conversation (text tasks); exactly one of messages and input."""
    input: Text | None = None
    """One user message; for JSON tasks, the text to classify or to extract entities from."""
    options: LLMOptions | None = None

    def __post_init__(self) -> None:
        total = len(self.input or "") + sum(len(m.content) for m in self.messages or ())
        if total > MAX_PROMPT_CHARS:
            raise ValueError(f"messages and input hold at most {MAX_PROMPT_CHARS} characters in all")


class CompleteResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    content: str | None = None
    """Text tasks: the answer."""
    data: Any = None
    """JSON tasks: the validated output."""
    model: str
    fallback_used: bool
    finish_reason: str | None
    usage: Usage
    """Summed over every attempt that reported usage; cost_usd from OpenRouter's usage.cost."""
    attempts: list[Attempt]
    latency_ms: float
    request_id: str | None


class ClassifyIntentRequest(Schema):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    labels: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=50)] | None = None
    """Allowed intents; default: the coaching set (goal_setting, progress_update, question, ...)."""
    context: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None
    """E.g. the previous messages of the conversation."""


class IntentResponse(msgspec.Struct, kw_only=True):
    intent: str
    confidence: float
    alternatives: list[Alternative]
    model: str
    fallback_used: bool
    usage: Usage
    request_id: str | None


class ExtractEntitiesRequest(Schema):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    entity_types: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=50)] | None = None
    """Types to look for; default: person, organization, location, date, time, duration, goal, ..."""


class EntitiesResponse(msgspec.Struct, kw_only=True):
    entities: list[Entity]
    """Offsets are Unicode code points into ``text``, checked (and fixed) against it."""
    model: str
    fallback_used: bool
    usage: Usage
    request_id: str | None


class TaskInfo(msgspec.Struct, kw_only=True):
    name: str
    description: str
    primary_model: str
    fallback_models: list[str]
    output: Literal["text", "json"]
    temperature: float
    max_tokens: int
    streamable: bool


class TasksResponse(msgspec.Struct, kw_only=True):
    configured: bool
    """False when OPENROUTER_API_KEY is unset: the other LLM routes then answer 503 llm_not_configured."""
    tasks: list[TaskInfo]
