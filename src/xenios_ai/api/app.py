"""The Litestar application factory."""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from xenios_ai.api.auth import JWTVerifier, require_api_key
from xenios_ai.api.deps import provide_principal, provide_services, services_lifespan
from xenios_ai.api.health import HealthController
from xenios_ai.api.jobs import JobsController
from xenios_ai.api.llm import LLMController
from xenios_ai.api.metrics import metrics
from xenios_ai.api.ops import ops_router
from xenios_ai.api.problems import EXCEPTION_HANDLERS
from xenios_ai.api.request_log import RequestLogMiddleware
from xenios_ai.api.status import StatusController, whoami
from xenios_ai.settings import Settings, load_settings
from xenios_ai.version import VERSION


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    api_v1 = Router(
        path="/api/v1",
        guards=[require_api_key],
        route_handlers=[StatusController, whoami, LLMController, JobsController],
        security=[{"apiKey": []}],
    )
    app = Litestar(
        route_handlers=[HealthController, api_v1, metrics, *ops_router(settings)],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        lifespan=[services_lifespan],
        state=State({"settings": settings, "jwt": JWTVerifier(settings)}),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="Xenios AI backend",
            version=VERSION,
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
                    "supabaseJWT": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                }
            ),
        ),
        logging_config=None,
        request_max_body_size=1_000_000,
    )
    app.asgi_handler = RequestLogMiddleware(app.asgi_handler)
    return app


def app_factory() -> Litestar:
    """Entry point for Granian workers: settings from the environment, logging, then the app."""
    from xenios_ai.log import setup_logging

    settings = load_settings()
    setup_logging(settings, component="api")
    return create_app(settings)
