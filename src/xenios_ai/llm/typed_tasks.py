"""The typed JSON tasks as calls: `classify_intent` and `extract_entities` over the router, with their
prompts and output specs from `llm.structured` (which the router also uses, so it cannot import the
router back)."""

from __future__ import annotations

from collections.abc import Sequence

from xenios_ai.llm.router import LLMRouter
from xenios_ai.llm.structured import (
    DEFAULT_ENTITY_TYPES,
    DEFAULT_INTENT_LABELS,
    EntitiesResult,
    IntentResult,
    entities_prompt,
    entities_spec,
    intent_prompt,
    intent_spec,
)
from xenios_ai.llm.types import Completion, Options
from xenios_ai.llm.wire import Message


async def classify_intent(
    router: LLMRouter,
    text: str,
    labels: Sequence[str] | None = None,
    context: str | None = None,
    *,
    owner: str | None = None,
    request_id: str | None = None,
    job_id: str | None = None,
    options: Options | None = None,
) -> tuple[IntentResult, Completion]:
    labels = tuple(dict.fromkeys(labels)) if labels else DEFAULT_INTENT_LABELS
    completion = await router.complete(
        "intent_classification",
        [Message("user", intent_prompt(text, labels, context))],
        output=intent_spec(labels),
        owner=owner,
        request_id=request_id,
        job_id=job_id,
        options=options,
    )
    result: IntentResult = completion.data
    return result, completion


async def extract_entities(
    router: LLMRouter,
    text: str,
    entity_types: Sequence[str] | None = None,
    *,
    owner: str | None = None,
    request_id: str | None = None,
    job_id: str | None = None,
    options: Options | None = None,
) -> tuple[EntitiesResult, Completion]:
    types = tuple(dict.fromkeys(entity_types)) if entity_types else DEFAULT_ENTITY_TYPES
    completion = await router.complete(
        "entity_extraction",
        [Message("user", entities_prompt(text, types))],
        output=entities_spec(text, types),
        owner=owner,
        request_id=request_id,
        job_id=job_id,
        options=options,
    )
    result: EntitiesResult = completion.data
    return result, completion
