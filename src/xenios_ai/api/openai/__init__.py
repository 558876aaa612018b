"""The OpenAI-compatible face under /v1: models, chat completions, audio transcriptions (errors in OpenAI's
shape).

The SDKs' ``apiKey`` carries the user's Supabase JWT (``Authorization: Bearer``) and the service key
rides in ``X-API-Key`` (the SDKs' default headers): the same guards as /api/v1.
"""

from __future__ import annotations

from litestar import Router

from xenios_ai.api.auth import require_api_key
from xenios_ai.api.openai.audio import transcriptions
from xenios_ai.api.openai.chat import chat_completions
from xenios_ai.api.openai.errors import OPENAI_EXCEPTION_HANDLERS
from xenios_ai.api.openai.models import get_model, list_models


def openai_router() -> Router:
    return Router(
        path="/v1",
        guards=[require_api_key],
        route_handlers=[list_models, get_model, chat_completions, transcriptions],
        exception_handlers=OPENAI_EXCEPTION_HANDLERS,
        tags=["openai"],
    )
