"""GET /v1/models and /v1/models/{id}: the LLM tasks as OpenAI models (``id`` = the task's name)."""

from __future__ import annotations

from litestar import get
from litestar.params import FromPath

from xenios_ai.api.deps import ServicesDep
from xenios_ai.api.openai.errors import ERROR_RESPONSES
from xenios_ai.api.openai.schemas import Model, ModelList
from xenios_ai.errors import InvalidInput

CREATED = 1_735_689_600
"""``created`` of every model (2025-01-01): tasks have no creation date; OpenAI's clients require one."""
OWNER = "xenios"


@get(
    "/models",
    security=[{"apiKey": []}],
    summary="The tasks, as OpenAI models (id = task name)",
    responses={401: ERROR_RESPONSES[401]},
)
async def list_models(services: ServicesDep) -> ModelList:
    return ModelList([Model(name, CREATED, OWNER) for name in services.llm.tasks])


@get(
    "/models/{model_id:str}",
    security=[{"apiKey": []}],
    summary="One task, as an OpenAI model",
    responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]},
)
async def get_model(services: ServicesDep, model_id: FromPath[str]) -> Model:
    if model_id not in services.llm.tasks:
        raise InvalidInput(f"the model {model_id[:64]!r} does not exist", code="unknown_task")
    return Model(model_id, CREATED, OWNER)
