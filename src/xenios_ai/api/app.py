"""The Litestar application factory."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from xenios_ai import kinds  # noqa: F401 - the composition root: registers every job kind
from xenios_ai.analysis import MAX_TEXT_CHARS
from xenios_ai.api.auth import JWTVerifier, require_api_key
from xenios_ai.api.deps import provide_principal, provide_reader, provide_services, services_lifespan
from xenios_ai.api.health import HealthController
from xenios_ai.api.jobs import JobsController, signed_result
from xenios_ai.api.llm import LLMController
from xenios_ai.api.metrics import metrics
from xenios_ai.api.openai import openai_router
from xenios_ai.api.openapi import render_plugins, swagger_assets
from xenios_ai.api.ops import ops_router
from xenios_ai.api.problems import EXCEPTION_HANDLERS
from xenios_ai.api.request_log import RequestLogMiddleware
from xenios_ai.api.schemas import MAX_PROMPT_CHARS
from xenios_ai.api.status import StatusController, whoami
from xenios_ai.api.stewardship import erase_my_data, erase_user_data
from xenios_ai.api.timeouts import BodyTimeout, SendDeadline
from xenios_ai.api.usage import usage
from xenios_ai.errors import UnsupportedMediaType
from xenios_ai.llm.tasks import catalogue_from_settings
from xenios_ai.log import setup_logging
from xenios_ai.settings import Settings
from xenios_ai.settings_load import load_settings
from xenios_ai.version import VERSION

BYTES_PER_CHAR = 6
"""What one character of a JSON string may take on the wire: 1-4 bytes of UTF-8, or a six-byte \\u escape."""
MAX_JSON_BODY_BYTES = BYTES_PER_CHAR * max(MAX_PROMPT_CHARS, MAX_TEXT_CHARS) + 64 * 1024
"""The body limit of every JSON route (413 past it), derived from the largest text a body may hold:
an LLM prompt (MAX_PROMPT_CHARS) or an analysis text (MAX_TEXT_CHARS), plus 64 KiB of JSON structure
(500 messages, labels, options). Upload routes set their own limits."""


class APIRequest(Request[Any, Any, Any]):
    """Refuses a JSON body sent as another media type (415) instead of decoding it anyway, as Litestar
    does. ``json()`` runs only for routes with a JSON ``data`` parameter: one header lookup there."""

    async def json(self) -> Any:
        content_type = self.headers.get("content-type")
        if content_type is not None:
            media_type = content_type.partition(";")[0].strip().lower()
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise UnsupportedMediaType("send the body as application/json")
        return await super().json()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    api_v1 = Router(
        path="/api/v1",
        guards=[require_api_key],
        route_handlers=[
            StatusController,
            whoami,
            LLMController,
            usage,
            JobsController,
            erase_user_data,
            erase_my_data,
        ],
        # No `security` here: Litestar concatenates it across layers (alternatives, in OpenAPI), so each
        # handler or controller declares all it needs: apiKey, or apiKey AND supabaseJWT.
    )
    app = Litestar(
        route_handlers=[
            HealthController,
            swagger_assets,
            api_v1,
            openai_router(),
            signed_result,
            metrics,
            *ops_router(settings),
        ],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "principal": Provide(provide_principal, sync_to_thread=False),
            "reader": Provide(provide_reader, sync_to_thread=False),
        },
        lifespan=[services_lifespan],
        state=State({"settings": settings, "jwt": JWTVerifier(settings)}),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="Xenios AI backend",
            version=VERSION,
            path="/schema",
            description="The AI engine behind Xenios. The API contract: docs/api.md in the repository.",
            render_plugins=render_plugins(catalogue_from_settings(settings), settings.whisper_model),
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
                    "supabaseJWT": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                }
            ),
        ),
        logging_config=None,
        request_class=APIRequest,
        request_max_body_size=MAX_JSON_BODY_BYTES,
    )
    _fix_options_allow(app)
    app.asgi_handler = SendDeadline(
        RequestLogMiddleware(BodyTimeout(app.asgi_handler, settings.request_body_timeout_seconds)),
        settings.sse_write_timeout_seconds,
    )
    return app


def _fix_options_allow(app: Litestar) -> None:
    """OPTIONS answers every method of its path in ``Allow``.

    Litestar (2.25) keeps the automatic OPTIONS handler of the first route it built for a path when it
    merges later handlers into a new route, and that handler lists the first route's methods: OPTIONS
    /api/v1/jobs/{id} said ``DELETE, OPTIONS`` (schemathesis, ST205). The stale route's method set is
    brought up to date.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler = route.route_handler_map["OPTIONS"][0]
        for cell in getattr(handler.fn, "__closure__", None) or ():
            stale = cell.cell_contents
            if isinstance(stale, HTTPRoute) and stale is not route:
                stale.methods = set(route.methods)


def app_factory() -> Litestar:
    """Entry point for Granian workers: settings from the environment, logging, then the app."""
    settings = load_settings()
    setup_logging(settings, component="api")
    return create_app(settings)
