"""GET /metrics: the Prometheus exposition (see `observability.exposition` for what it holds).

Protected: X-API-Key or ``Authorization: Bearer`` equal to METRICS_API_KEY or a service key. The files of
the host's processes are merged in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from xenios_ai.api.deps import ServicesDep
from xenios_ai.errors import Unauthorized
from xenios_ai.jobs.gauges import SystemState
from xenios_ai.observability.exposition import CONTENT_TYPE, key_matches, process_metrics, render


async def require_metrics_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    headers = connection.headers
    if not key_matches(connection.app.state.settings, headers.get("x-api-key"), headers.get("authorization")):
        raise Unauthorized(
            "/metrics needs X-API-Key or a Bearer token (METRICS_API_KEY or a service key)",
            code="invalid_metrics_key",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )


@get("/metrics", guards=[require_metrics_key], include_in_schema=False)
async def metrics(request: Request[Any, Any, Any], services: ServicesDep) -> Response[bytes]:
    state = request.app.state
    system: SystemState | None = state.get("system_metrics")
    if system is None:
        system = state.system_metrics = SystemState(services.settings, services.db, services.redis)
    families = await system.families()
    body = await asyncio.to_thread(lambda: render([*process_metrics("host"), *families]))
    return Response(body, media_type=CONTENT_TYPE)
