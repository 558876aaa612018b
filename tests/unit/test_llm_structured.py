"""Validation of JSON task outputs: intent labels and confidences, entity offsets fixed against the text."""

from __future__ import annotations

import json

import pytest

from xenios_ai.llm.structured import (
    Entity,
    InvalidOutput,
    entities_spec,
    fix_offsets,
    intent_spec,
)

TEXT = "Met Sam at the gym. Sam lifted 80 kg; sam was happy."
TYPES = frozenset({"person", "location", "metric"})


def entity(type_: str, text: str, start: int, end: int) -> Entity:
    return Entity(type_, text, start, end)


def test_correct_offsets_are_kept() -> None:
    assert fix_offsets(TEXT, [entity("person", "Sam", 4, 7)], TYPES) == [entity("person", "Sam", 4, 7)]


def test_wrong_offsets_move_to_the_nearest_occurrence() -> None:
    second = TEXT.index("Sam", 5)
    fixed = fix_offsets(
        TEXT, [entity("person", "Sam", second + 3, second + 6), entity("person", "Sam", 1, 9)], TYPES
    )
    assert fixed == [entity("person", "Sam", 4, 7), entity("person", "Sam", second, second + 3)]


def test_out_of_range_offsets_are_fixed() -> None:
    assert fix_offsets(TEXT, [entity("metric", "80 kg", -5, 999)], TYPES) == [
        entity("metric", "80 kg", TEXT.index("80 kg"), TEXT.index("80 kg") + 5)
    ]


def test_a_case_mismatch_reports_the_texts_own_spelling() -> None:
    assert fix_offsets(TEXT, [entity("location", "GYM", 0, 3)], TYPES) == [entity("location", "gym", 15, 18)]


def test_absent_text_unknown_types_empty_text_and_duplicates_are_dropped() -> None:
    entities = [
        entity("person", "Alex", 0, 4),
        entity("food", "Sam", 4, 7),
        entity("person", "", 0, 0),
        entity("person", "Sam", 4, 7),
        entity("person", "Sam", 4, 7),
    ]
    assert fix_offsets(TEXT, entities, TYPES) == [entity("person", "Sam", 4, 7)]


def test_offsets_count_code_points() -> None:
    text = "🏃 Zoë ran"
    assert fix_offsets(text, [entity("person", "Zoë", 0, 3)], TYPES) == [entity("person", "Zoë", 2, 5)]


def test_repair_only_finds_whole_words() -> None:
    text = "Normally I may run. Later Al joined; also AlphaCorp."
    fixed = fix_offsets(
        text,
        [entity("person", "Al", 0, 2), entity("person", "al", 3, 5), entity("organization", "Corp", 0, 4)],
        TYPES | {"organization"},
    )
    assert fixed == [entity("person", "Al", text.index(" Al ") + 1, text.index(" Al ") + 3)]


def test_a_mention_found_only_inside_words_is_dropped() -> None:
    assert fix_offsets("Normally I may run.", [entity("person", "Al", 0, 2)], TYPES) == []


def test_mention_edges_that_are_not_word_characters_need_no_boundary() -> None:
    text = "Goal:80 kg by June"  # ":" follows a letter: fine, the mention does not start with a word char
    assert fix_offsets(text, [entity("metric", ":80", 0, 3)], TYPES) == [entity("metric", ":80", 4, 7)]


def test_entities_spec_schema_and_parse() -> None:
    spec = entities_spec(TEXT, ["person"])
    schema = spec.response_format["json_schema"]["schema"]
    assert spec.response_format["json_schema"]["strict"] is True
    assert schema["properties"]["entities"]["items"]["required"] == ["type", "text", "start", "end"]
    parsed = spec.parse(json.dumps({"entities": [{"type": "person", "text": "Sam", "start": 0, "end": 3}]}))
    assert parsed.entities == [entity("person", "Sam", 4, 7)]
    with pytest.raises(InvalidOutput):
        spec.parse('{"entities": [{"type": "person", "text": "Sam"}]}')


def test_intent_parse_orders_and_dedupes_alternatives() -> None:
    spec = intent_spec(["a", "b", "c"])
    result = spec.parse(
        '{"intent": "a", "confidence": 0.6, "alternatives": '
        '[{"intent": "b", "confidence": 0.1}, {"intent": "c", "confidence": 0.3}, '
        '{"intent": "a", "confidence": 0.6}, {"intent": "b", "confidence": 0.05}]}'
    )
    assert (result.intent, [(a.intent, a.confidence) for a in result.alternatives]) == (
        "a",
        [("c", 0.3), ("b", 0.1)],
    )


@pytest.mark.parametrize(
    "content",
    [
        '{"intent": "z", "confidence": 0.5, "alternatives": []}',
        '{"intent": "a", "confidence": -0.1, "alternatives": []}',
        '{"intent": "a", "confidence": 0.5, "alternatives": [{"intent": "z", "confidence": 0.1}]}',
        '{"intent": "a"',
        "",
        "a",
    ],
)
def test_intent_parse_rejects_invalid_output(content: str) -> None:
    with pytest.raises(InvalidOutput):
        intent_spec(["a", "b"]).parse(content)


def test_a_markdown_fence_around_the_json_is_tolerated() -> None:
    spec = intent_spec(["a"])
    assert spec.parse('```json\n{"intent": "a", "confidence": 1, "alternatives": []}\n```').intent == "a"
    assert spec.parse('```\n{"intent": "a", "confidence": 1, "alternatives": []}```').intent == "a"
