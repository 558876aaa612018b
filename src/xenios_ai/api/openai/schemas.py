"""The OpenAI wire format of the /v1 routes (the subset we serve), as msgspec Structs.

Requests forbid unknown fields: a parameter we do not support (``tools``, ``top_p``, ``stop``, ...) is a
400 naming it (`api.openai.errors`), never silently ignored. Responses follow OpenAI's objects field for
field (``chat.completion``, ``chat.completion.chunk``, ``list`` of ``model``); ``usage.cost`` is the cost
in USD as OpenRouter reports it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from xenios_ai.api.schemas import Schema
from xenios_ai.llm.types import RedactKind, RedactName


class ContentPart(Schema):
    """One part of a message's content: only ``text`` parts are served (images, audio, files: 400)."""

    type: str
    text: str | None = None
    image_url: Any = None
    input_audio: Any = None
    file: Any = None


class ChatMessage(Schema):
    role: str
    """``system``, ``developer`` (as system), ``user`` or ``assistant``; ``tool`` and ``function``: 400."""
    content: Annotated[str, msgspec.Meta(max_length=200_000)] | list[ContentPart] | None = None


class StreamOptions(Schema):
    include_usage: bool | None = None
    """Send a last chunk with empty ``choices`` and the request's ``usage`` before ``[DONE]``."""


class JSONSchemaFormat(Schema):
    name: str
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Schema):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(Schema):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """A task name (GET /v1/models)."""
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=500)]
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    """Preferred over ``max_tokens`` (the same meaning); at most the task's max_tokens."""
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: int | None = None
    """Only 1."""
    logprobs: bool | None = None
    """Only false."""
    redact: bool | list[RedactKind] | None = None
    """Extension (the SDKs' ``extra_body``), as on /api/v1/llm: personal details replaced by placeholders
    ([EMAIL_1], [PERSON_1]) before the model sees them and restored in the answer: true (every kind), a
    list of kinds, false (not even the task's default)."""
    redact_names: Annotated[list[RedactName], msgspec.Meta(max_length=100)] | None = None
    """Extension: names to replace by [PERSON_n] (the client, people in their life); a full name covers its
    parts."""


# -- responses ----------------------------------------------------------------------------------------


class CompletionUsage(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = None
    """USD, summed over every attempt (OpenRouter's ``usage.cost``)."""


class AssistantMessage(msgspec.Struct):
    content: str
    role: Literal["assistant"] = "assistant"
    refusal: None = None


class Choice(msgspec.Struct):
    message: AssistantMessage
    finish_reason: str
    index: int = 0
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    """The model that answered (a fallback when the primary failed)."""
    choices: list[Choice]
    usage: CompletionUsage
    object: Literal["chat.completion"] = "chat.completion"


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: str | None
    param: str | None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail
