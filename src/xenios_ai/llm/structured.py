"""JSON-output tasks: the JSON schema sent as ``response_format``, and decoding + validation with msgspec.

An `OutputSpec` pairs the schema with a ``parse(content) -> value`` that raises `InvalidOutput` when the
model's answer does not decode or does not satisfy the task's rules; the router then tries the next model.

Intent: the intent and every alternative must be one of the allowed labels; alternatives equal to the
intent are dropped and the rest sorted by confidence.

Entities: offsets are Unicode code points into the text (Python ``str`` indexes; JavaScript needs
``Array.from(text)`` to use them). Models are unreliable with offsets, so they are *fixed*, not trusted:
when ``text[start:end]`` is not the entity's text, the occurrence of that text nearest to the claimed
start is used (exact case first, then ignoring case, reporting the text as it is in the source). Only
whole-word occurrences count: where the mention starts (ends) with a word character, the text before
(after) it must not be one, so "Al" is never found inside "Normally". An entity whose text does not occur
that way, or of a type not asked for, is dropped. Duplicates are merged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple, TypeVar

import msgspec

DEFAULT_INTENT_LABELS: tuple[str, ...] = (
    "goal_setting",
    "progress_update",
    "question",
    "scheduling",
    "feedback",
    "emotional_support",
    "accountability",
    "smalltalk",
    "other",
)
DEFAULT_ENTITY_TYPES: tuple[str, ...] = (
    "person",
    "organization",
    "location",
    "date",
    "time",
    "duration",
    "goal",
    "metric",
    "activity",
    "food",
    "medication",
    "condition",
)

T = TypeVar("T")
Confidence = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class InvalidOutput(Exception):
    """The model's answer is not what the task's schema and rules require."""


class OutputSpec(NamedTuple):
    response_format: dict[str, Any]
    parse: Callable[[str], Any]


class Alternative(msgspec.Struct, frozen=True):
    intent: str
    confidence: Confidence


class IntentResult(msgspec.Struct, frozen=True):
    intent: str
    confidence: Confidence
    alternatives: list[Alternative] = msgspec.field(default_factory=list)


class Entity(msgspec.Struct, frozen=True):
    type: str
    text: str
    start: int
    end: int


class EntitiesResult(msgspec.Struct, frozen=True):
    entities: list[Entity] = msgspec.field(default_factory=list)


_decode_intent = msgspec.json.Decoder(IntentResult).decode
_decode_entities = msgspec.json.Decoder(EntitiesResult).decode


def _json_schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def unwrap_fence(content: str) -> str:
    """Models sometimes wrap JSON in a Markdown fence despite the schema; take what is inside."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def _decode(decode: Callable[[str], T], content: str) -> T:
    try:
        return decode(unwrap_fence(content))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidOutput(f"the answer is not valid JSON for the schema: {exc}") from None


# -- intent -----------------------------------------------------------------------------------------


def intent_spec(labels: Sequence[str]) -> OutputSpec:
    allowed = list(dict.fromkeys(labels))
    label = {"type": "string", "enum": allowed}
    confidence = {"type": "number", "minimum": 0, "maximum": 1}
    schema = _object(
        {
            "intent": label,
            "confidence": confidence,
            "alternatives": {
                "type": "array",
                "items": _object({"intent": label, "confidence": confidence}),
            },
        }
    )
    allowed_set = frozenset(allowed)

    def parse(content: str) -> IntentResult:
        result = _decode(_decode_intent, content)
        if result.intent not in allowed_set:
            raise InvalidOutput(f"intent {result.intent!r} is not an allowed label")
        alternatives: dict[str, Alternative] = {}
        for alt in result.alternatives:
            if alt.intent not in allowed_set:
                raise InvalidOutput(f"alternative {alt.intent!r} is not an allowed label")
            if alt.intent != result.intent and alt.intent not in alternatives:
                alternatives[alt.intent] = alt
        ranked = sorted(alternatives.values(), key=lambda alt: -alt.confidence)
        return IntentResult(result.intent, result.confidence, ranked)

    return OutputSpec(_json_schema("intent", schema), parse)


def intent_prompt(text: str, labels: Sequence[str], context: str | None = None) -> str:
    parts = [f"Allowed labels: {', '.join(labels)}"]
    if context:
        parts.append(f"Context:\n<<<CONTEXT\n{context}\nCONTEXT>>>")
    parts.append(f"Text:\n<<<TEXT\n{text}\nTEXT>>>")
    return "\n\n".join(parts)


# -- entities ---------------------------------------------------------------------------------------


def entities_spec(text: str, types: Sequence[str]) -> OutputSpec:
    allowed = list(dict.fromkeys(types))
    schema = _object(
        {
            "entities": {
                "type": "array",
                "items": _object(
                    {
                        "type": {"type": "string", "enum": allowed},
                        "text": {"type": "string"},
                        "start": {"type": "integer"},
                        "end": {"type": "integer"},
                    }
                ),
            }
        }
    )
    allowed_set = frozenset(allowed)

    def parse(content: str) -> EntitiesResult:
        result = _decode(_decode_entities, content)
        return EntitiesResult(fix_offsets(text, result.entities, allowed_set))

    return OutputSpec(_json_schema("entities", schema), parse)


def entities_prompt(text: str, types: Sequence[str]) -> str:
    return f"Entity types: {', '.join(types)}\n\n<<<TEXT\n{text}\nTEXT>>>"


def fix_offsets(text: str, entities: Sequence[Entity], types: frozenset[str]) -> list[Entity]:
    """Entities whose offsets match the text: wrong offsets fixed, unknown types and absent text dropped."""
    folded: str | None = None
    seen: set[tuple[str, int, int]] = set()
    fixed: list[Entity] = []
    for entity in entities:
        if entity.type not in types or not entity.text:
            continue
        start, end, mention = entity.start, entity.end, entity.text
        if not (0 <= start <= end <= len(text) and text[start:end] == mention):
            found = _nearest(text, mention, start)
            if found < 0:
                if folded is None:
                    folded = text.casefold() if len(text.casefold()) == len(text) else ""
                needle = mention.casefold()
                found = _nearest(folded, needle, start) if len(needle) == len(mention) else -1
                if found < 0:
                    continue
            start, end = found, found + len(mention)
            mention = text[start:end]
        key = (entity.type, start, end)
        if key not in seen:
            seen.add(key)
            fixed.append(Entity(entity.type, mention, start, end))
    fixed.sort(key=lambda e: (e.start, e.end))
    return fixed


def _nearest(haystack: str, needle: str, hint: int) -> int:
    """The whole-word occurrence of ``needle`` nearest to ``hint``, or -1."""
    check_start, check_end = _is_word_char(needle[0]), _is_word_char(needle[-1])
    best, position = -1, haystack.find(needle)
    while position >= 0:
        end = position + len(needle)
        if (
            (best < 0 or abs(position - hint) < abs(best - hint))
            and not (check_start and position > 0 and _is_word_char(haystack[position - 1]))
            and not (check_end and end < len(haystack) and _is_word_char(haystack[end]))
        ):
            best = position
        position = haystack.find(needle, position + 1)
    return best


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


# -- task defaults and service functions ------------------------------------------------------------


def default_request(task: str, text: str) -> tuple[str, OutputSpec]:
    """User message and output spec of a JSON task called with plain ``input`` (default labels/types)."""
    if task == "intent_classification":
        return intent_prompt(text, DEFAULT_INTENT_LABELS), intent_spec(DEFAULT_INTENT_LABELS)
    if task == "entity_extraction":
        return entities_prompt(text, DEFAULT_ENTITY_TYPES), entities_spec(text, DEFAULT_ENTITY_TYPES)
    raise KeyError(task)
