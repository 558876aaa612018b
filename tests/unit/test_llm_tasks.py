"""The task catalogue: DESIGN.md's model table, prompts shipped as package data, overrides by setting."""

from __future__ import annotations

import calendar

import pytest

from xenios_ai.llm.budgets import month_of
from xenios_ai.llm.tasks import DEFAULT_TASKS, build_catalogue
from xenios_ai.settings import SettingsError
from xenios_ai.settings_load import load_settings


def test_defaults_follow_the_design_model_table() -> None:
    catalogue = build_catalogue()
    assert {name: task.models for name, task in catalogue.items()} == {
        "session_summary": ("anthropic/claude-opus-4.5", "anthropic/claude-sonnet-4"),
        "insight_generation": ("anthropic/claude-opus-4.5", "anthropic/claude-sonnet-4"),
        "chat": ("anthropic/claude-opus-4.5", "anthropic/claude-sonnet-4"),
        "intent_classification": ("anthropic/claude-sonnet-4", "openai/gpt-4o-mini"),
        "entity_extraction": ("anthropic/claude-sonnet-4", "openai/gpt-4o-mini"),
    }
    assert {t.name for t in DEFAULT_TASKS if t.output == "json"} == {
        "intent_classification",
        "entity_extraction",
    }


def test_every_task_has_its_prompt_loaded() -> None:
    for task in build_catalogue().values():
        assert len(task.system_prompt) > 100, task.name
        assert task.system_prompt == task.system_prompt.strip()


def test_the_llm_models_setting_overrides_chains() -> None:
    settings = load_settings({"LLM_MODELS": '{"chat": "openai/gpt-4o , openai/gpt-4o-mini,"}'}, dotenv=False)
    catalogue = build_catalogue(settings.llm_models)
    assert catalogue["chat"].models == ("openai/gpt-4o", "openai/gpt-4o-mini")
    assert catalogue["chat"].primary_model == "openai/gpt-4o"
    assert catalogue["session_summary"].models[0] == "anthropic/claude-opus-4.5"


@pytest.mark.parametrize(
    ("overrides", "message"), [({"poems": "x"}, "unknown task"), ({"chat": " , "}, "names no model")]
)
def test_bad_overrides_stop_start_up(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build_catalogue(overrides)


def test_provider_preferences_default_to_private_and_json_tasks_require_the_schema() -> None:
    catalogue = build_catalogue()
    private = {"data_collection": "deny", "zdr": True}
    assert {name: task.provider for name, task in catalogue.items()} == {
        "session_summary": private,
        "insight_generation": private,
        "chat": private,
        "intent_classification": private | {"require_parameters": True},
        "entity_extraction": private | {"require_parameters": True},
    }


def test_provider_preferences_are_replaced_per_task_and_unknown_tasks_stop_start_up() -> None:
    settings = load_settings(
        {"LLM_PROVIDER_PREFERENCES": '{"chat": {}, "entity_extraction": {}}'}, dotenv=False
    )
    catalogue = build_catalogue(providers=settings.llm_provider_preferences)
    assert catalogue["chat"].provider is None
    assert catalogue["entity_extraction"].provider == {"require_parameters": True}
    with pytest.raises(SettingsError, match="LLM_PROVIDER_PREFERENCES: unknown task"):
        build_catalogue(providers={"nope": {}})


def test_a_budget_month_is_the_utc_calendar_month() -> None:
    assert month_of(calendar.timegm((2026, 12, 31, 23, 59, 59))) == (
        "2026-12",
        calendar.timegm((2026, 12, 1, 0, 0, 0)),
        calendar.timegm((2027, 1, 1, 0, 0, 0)),
    )
    assert month_of(calendar.timegm((2027, 2, 1, 0, 0, 0)))[0] == "2027-02"
