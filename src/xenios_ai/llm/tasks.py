"""The task catalogue: what each LLM task is, as data.

A task names its model chain (primary first, then fallbacks), sampling parameters and its output kind;
its system prompt is ``llm/prompts/<name>.md``. The chains are DESIGN.md section 4's defaults; the setting
``LLM_MODELS`` (JSON, ``{"chat": "openai/gpt-4o,openai/gpt-4o-mini"}``) replaces the chain of any task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Literal

from xenios_ai.settings import Settings, SettingsError

OutputKind = Literal["text", "json"]
AnalysisTask = Literal["session_summary", "insight_generation"]
"""The tasks an analysis job (and a job's ``then``) may run over a text."""

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
    ),
    Task(
        name="insight_generation",
        description="Patterns, progress, risks and suggestions across a client's sessions and notes.",
        models=(OPUS, SONNET),
        temperature=0.5,
        max_tokens=2048,
        output="text",
    ),
    Task(
        name="chat",
        description="Conversational assistant for coaches and clients.",
        models=(OPUS, SONNET),
        temperature=0.7,
        max_tokens=1024,
        output="text",
    ),
    Task(
        name="intent_classification",
        description="The intent of one message, among given labels, with confidence and alternatives.",
        models=(SONNET, GPT_4O_MINI),
        temperature=0.0,
        max_tokens=256,
        output="json",
    ),
    Task(
        name="entity_extraction",
        description="Named entities of given types in a text, with character offsets.",
        models=(SONNET, GPT_4O_MINI),
        temperature=0.0,
        max_tokens=2048,
        output="json",
    ),
)


def load_prompt(file_name: str) -> str:
    """A prompt file's text (package data, so it ships in the wheel)."""
    return (resources.files("xenios_ai.llm") / "prompts" / file_name).read_text(encoding="utf-8").strip()


def build_catalogue(
    overrides: Mapping[str, str] | None = None, tasks: tuple[Task, ...] = DEFAULT_TASKS
) -> dict[str, Task]:
    """Tasks by name, prompts loaded, model chains overridden; unknown names or empty chains are errors."""
    overrides = overrides or {}
    by_name = {task.name: task for task in tasks}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise SettingsError(f"LLM_MODELS: unknown task(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    catalogue = {}
    for name, task in by_name.items():
        models = task.models
        if name in overrides:
            models = tuple(m.strip() for m in overrides[name].split(",") if m.strip())
            if not models:
                raise SettingsError(f"LLM_MODELS: the chain of {name!r} names no model")
        catalogue[name] = replace(task, models=models, system_prompt=load_prompt(task.prompt_file))
    return catalogue


def catalogue_from_settings(settings: Settings) -> dict[str, Task]:
    return build_catalogue(settings.llm_models)
