"""The task catalogue: what each LLM task is, as data.

A task names its model chain (primary first, then fallbacks), sampling parameters and its output kind;
its system prompt is ``llm/prompts/<name>.md``. The chains are DESIGN.md section 4's defaults; the setting
``LLM_MODELS`` (JSON, ``{"chat": "openai/gpt-4o,openai/gpt-4o-mini"}``) replaces the chain of any task.

Privacy routing: every task sends OpenRouter provider preferences (its ``provider`` request field).
Every default task handles coaching content, so each defaults to `PRIVATE` (only providers that do not
collect data for training and have a zero-data-retention policy); ``LLM_PROVIDER_PREFERENCES`` (JSON,
``{"chat": {"order": ["anthropic"]}}``) replaces a task's preferences (``{}``: none). JSON tasks always add
``require_parameters: true``, so a provider that would ignore ``response_format`` is not chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Literal

from xenios_ai.settings import Settings, SettingsError

OutputKind = Literal["text", "json"]
AnalysisTask = Literal["session_summary", "insight_generation"]
"""The tasks an analysis job (and a job's ``then``) may run over a text."""

PRIVATE: dict[str, Any] = {"data_collection": "deny", "zdr": True}
"""OpenRouter provider preferences of the coaching-content tasks: no provider that may train on the data
or keep it (OpenRouter applies them; they are a routing filter, not a contract with the provider)."""

OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"
GPT_4O_MINI = "openai/gpt-4o-mini"


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    description: str
    models: tuple[str, ...]
    """Tried in order: the primary model, then the fallbacks."""
    temperature: float
    max_tokens: int
    """Default and ceiling of a request's ``max_tokens``."""
    output: OutputKind
    """``json`` tasks ask for JSON-schema output and validate it (see `xenios_ai.llm.structured`)."""
    system_prompt: str = ""
    """The prompt file's text, loaded with the catalogue."""
    provider: dict[str, Any] | None = None
    """OpenRouter provider preferences sent with every request (None or empty: none)."""
    cache_input: bool = False
    """Analyses: mark the (long) input for prompt caching too, not only the system prompt."""

    @property
    def prompt_file(self) -> str:
        """Under ``llm/prompts/``, named for the task."""
        return f"{self.name}.md"

    @property
    def primary_model(self) -> str:
        return self.models[0]

    @property
    def fallback_models(self) -> tuple[str, ...]:
        return self.models[1:]


DEFAULT_TASKS: tuple[Task, ...] = (
    Task(
        name="session_summary",
        description="Summary of one coaching session: overview, key points, commitments, follow-ups.",
        models=(OPUS, SONNET),
        temperature=0.3,
        max_tokens=2048,
        output="text",
        provider=PRIVATE,
        cache_input=True,
    ),
    Task(
        name="insight_generation",
        description="Patterns, progress, risks and suggestions across a client's sessions and notes.",
        models=(OPUS, SONNET),
        temperature=0.5,
        max_tokens=2048,
        output="text",
        provider=PRIVATE,
        cache_input=True,
    ),
    Task(
        name="chat",
        description="Conversational assistant for coaches and clients.",
        models=(OPUS, SONNET),
        temperature=0.7,
        max_tokens=1024,
        output="text",
        provider=PRIVATE,
    ),
    Task(
        name="intent_classification",
        description="The intent of one message, among given labels, with confidence and alternatives.",
        models=(SONNET, GPT_4O_MINI),
        temperature=0.0,
        max_tokens=256,
        output="json",
        provider=PRIVATE,
    ),
    Task(
        name="entity_extraction",
        description="Named entities of given types in a text, with character offsets.",
        models=(SONNET, GPT_4O_MINI),
        temperature=0.0,
        max_tokens=2048,
        output="json",
        provider=PRIVATE,
    ),
)


def load_prompt(file_name: str) -> str:
    """A prompt file's text (package data, so it ships in the wheel)."""
    return (resources.files("xenios_ai.llm") / "prompts" / file_name).read_text(encoding="utf-8").strip()


def build_catalogue(
    overrides: Mapping[str, str] | None = None,
    tasks: tuple[Task, ...] = DEFAULT_TASKS,
    providers: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Task]:
    """Tasks by name, prompts loaded, model chains and provider preferences overridden; unknown names or
    empty chains are errors."""
    overrides = overrides or {}
    providers = providers or {}
    by_name = {task.name: task for task in tasks}
    for setting, given in (("LLM_MODELS", overrides), ("LLM_PROVIDER_PREFERENCES", providers)):
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            raise SettingsError(
                f"{setting}: unknown task(s) {', '.join(unknown)}; known: {', '.join(by_name)}"
            )
    catalogue = {}
    for name, task in by_name.items():
        models = task.models
        if name in overrides:
            models = tuple(m.strip() for m in overrides[name].split(",") if m.strip())
            if not models:
                raise SettingsError(f"LLM_MODELS: the chain of {name!r} names no model")
        provider = dict(providers[name]) if name in providers else dict(task.provider or {})
        if task.output == "json":
            provider["require_parameters"] = True  # a provider that would ignore the schema is not chosen
        catalogue[name] = replace(
            task, models=models, system_prompt=load_prompt(task.prompt_file), provider=provider or None
        )
    return catalogue


def catalogue_from_settings(settings: Settings) -> dict[str, Task]:
    return build_catalogue(settings.llm_models, providers=settings.llm_provider_preferences)
