"""The operator dashboard under /ops: queues, workers, recent and failed jobs, a job with its log lines,
and the actions retry and cancel. Server-rendered (Jinja2), a little JS to refresh in place, no build step.

Off unless OPS_DASHBOARD_ENABLED (the routes do not exist). Login: HTTP basic with OPS_USERNAME and
OPS_PASSWORD, or any user name with a service API key as the password (or an X-API-Key header), all
compared in constant time. Actions are POSTs carrying a token bound to the login (HMAC of the configured
secrets) and must not come from another site (Origin and Sec-Fetch-Site checked); pages forbid framing
and inline scripts (CSP).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode, urlsplit
from uuid import UUID

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromPath, Parameter
from litestar.response import Redirect
from loguru import logger

from xenios_ai.api.auth import api_key_matches
from xenios_ai.api.deps import Services, ServicesDep
from xenios_ai.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from xenios_ai.jobs import ops
from xenios_ai.jobs.models import JOB_STATUSES, Job
from xenios_ai.jobs.queues import QUEUES, QueueDepth, WorkerInfo, alive_workers, queue_depths
from xenios_ai.jobs.registry import KINDS
from xenios_ai.observability import joblog
from xenios_ai.settings import Settings
from xenios_ai.version import VERSION

T = TypeVar("T")
_STATIC = Path(__file__).parent / "static" / "ops"
_STATIC_TYPES = {"ops.css": "text/css; charset=utf-8", "ops.js": "text/javascript; charset=utf-8"}
_static_cache: dict[str, bytes] = {}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_WORKERS_SHOWN_SECONDS = 600.0
"""Workers silent for up to this long are listed (as stale past three heartbeats)."""

# -- login and CSRF ------------------------------------------------------------------------------------


def operator_of(settings: Settings, authorization: str | None, x_api_key: str | None) -> str | None:
    """Who logs in: OPS_USERNAME with OPS_PASSWORD, or "api-key" for a service key; None: nobody."""
    if api_key_matches(x_api_key, settings.api_keys):
        return "api-key"
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if settings.ops_password:
        user_ok = hmac.compare_digest(user.encode(), settings.ops_username.encode())
        password_ok = hmac.compare_digest(password.encode(), settings.ops_password.get().encode())
        if user_ok & password_ok:
            return user
    return "api-key" if api_key_matches(password, settings.api_keys) else None


async def require_operator(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    settings: Settings = connection.app.state.settings
    who = operator_of(settings, connection.headers.get("authorization"), connection.headers.get("x-api-key"))
    if who is None:
        raise Unauthorized(
            "log in with the operator's user name and password, or an API key",
            code="ops_login_required",
            headers={"WWW-Authenticate": 'Basic realm="Xenios AI operations", charset="UTF-8"'},
        )
    connection.scope["state"]["operator"] = who


def csrf_token(settings: Settings, who: str) -> str:
    """Bound to the login and to the configured secrets: the same in every API process, unguessable."""
    secrets = [settings.ops_password.get() if settings.ops_password else "", *settings.api_keys]
    key = hashlib.sha256("\0".join(secrets).encode()).digest()
    return hmac.new(key, f"ops-csrf\0{who}".encode(), hashlib.sha256).hexdigest()


def _check_action(request: Request[Any, Any, Any], form: dict[str, str]) -> str:
    who: str = request.scope["state"]["operator"]
    token = form.get("csrf", "")
    if not hmac.compare_digest(token.encode(), csrf_token(request.app.state.settings, who).encode()):
        raise Forbidden("the form's token is missing or stale; reload the page", code="csrf_failed")
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("cross-site request refused", code="csrf_failed")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused", code="csrf_failed")
    return who


# -- rendering -----------------------------------------------------------------------------------------


def _ago(value: float | datetime | None) -> str:
    if value is None:
        return "-"
    stamp = value.timestamp() if isinstance(value, datetime) else value
    return _seconds(max(0.0, time.time() - stamp)) + " ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _when(value: datetime | float | None) -> str:
    if value is None:
        return "-"
    moment = datetime.fromtimestamp(value, UTC) if isinstance(value, float) else value.astimezone(UTC)
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def _duration(job: Job) -> str:
    if job.started_at is None:
        return "-"
    end = job.finished_at.timestamp() if job.finished_at else time.time()
    return _seconds(end - job.started_at.timestamp())


def _pretty_json(value: Any, limit: int = 4000) -> str:
    text = msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


_templates = Environment(
    loader=PackageLoader("xenios_ai.api", "templates/ops"), autoescape=select_autoescape(default=True)
)
_templates.filters.update(ago=_ago, seconds=_seconds, when=_when, duration=_duration, pretty=_pretty_json)


def _page(request: Request[Any, Any, Any], template: str, **context: Any) -> Response[str]:
    settings: Settings = request.app.state.settings
    who: str = request.scope["state"]["operator"]
    html = _templates.get_template(template).render(
        operator=who,
        csrf=csrf_token(settings, who),
        environment=settings.environment,
        version=VERSION,
        refresh=settings.ops_refresh_seconds,
        now=time.time(),
        path=_here(request),
        **context,
    )
    return Response(html, media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)


def _here(request: Request[Any, Any, Any]) -> str:
    """This page's path and query without the one-off ``notice``: where an action comes back to."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "notice"])
    return request.url.path + (f"?{query}" if query else "")


async def _source(name: str, work: Awaitable[T], default: T, problems: list[str]) -> T:
    """A part of the page; a failed source shows as a warning banner, not an error page."""
    try:
        return await asyncio.wait_for(work, 3.0)
    except Exception as exc:
        logger.warning("ops: reading {} failed: {}", name, type(exc).__name__)
        problems.append(f"{name} is not answering ({type(exc).__name__}); this part of the page is empty")
        return default


# -- routes --------------------------------------------------------------------------------------------


@get("/")
async def overview(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    status: Annotated[str | None, Parameter(query="status")] = None,
    kind: Annotated[str | None, Parameter(query="kind")] = None,
    queue: Annotated[str | None, Parameter(query="queue")] = None,
    notice: Annotated[str | None, Parameter(query="notice", max_length=400)] = None,
) -> Response[str]:
    settings, db, redis = services.settings, services.db, services.redis
    prefix = settings.redis_namespace
    where = ops.JobFilter(
        status=status if status in JOB_STATUSES else None,
        kind=kind if kind in KINDS else None,
        queue=queue if queue in QUEUES else None,
    )
    problems: list[str] = []
    depths, workers, counts, failed, recent = await asyncio.gather(
        _source("Redis", queue_depths(redis, prefix), list[QueueDepth](), problems),
        _source(
            "Redis",
            alive_workers(redis, prefix, max_age=_WORKERS_SHOWN_SECONDS),
            list[WorkerInfo](),
            problems,
        ),
        _source("PostgreSQL", ops.status_counts(db), dict[str, dict[str, int]](), problems),
        _source("PostgreSQL", ops.failed_jobs(db), list[Job](), problems),
        _source("PostgreSQL", ops.recent_jobs(db, where), list[Job](), problems),
    )
    stale_after = 3 * settings.worker_heartbeat_seconds
    alive_by_queue = {
        q: sum(1 for w in workers if q in w.queues and time.time() - w.seen_at <= stale_after) for q in QUEUES
    }
    return _page(
        request,
        "overview.html",
        problems=sorted(set(problems)),
        depths=depths,
        workers=workers,
        stale_after=stale_after,
        alive_by_queue=alive_by_queue,
        counts=counts,
        statuses=JOB_STATUSES,
        kinds=sorted(KINDS),
        queues=QUEUES,
        failed=failed,
        recent=recent,
        where=where,
        notice=notice,
    )


@get("/jobs/{job_id:uuid}")
async def job_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    job_id: FromPath[UUID],
    notice: Annotated[str | None, Parameter(query="notice", max_length=400)] = None,
) -> Response[str]:
    job = await ops.get_job(services.db, job_id)
    problems: list[str] = []
    lines = await _source(
        "Redis", joblog.read(services.redis, services.settings, job_id), list[joblog.LogLine](), problems
    )
    return _page(request, "job.html", job=job, lines=lines, problems=problems, notice=notice)


Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


@post("/jobs/{job_id:uuid}/retry", status_code=303)
async def retry_job(
    request: Request[Any, Any, Any], services: ServicesDep, job_id: FromPath[UUID], data: Form
) -> Redirect:
    return await _act(request, services, job_id, data, "retry", lambda: ops.retry(services.jobs, job_id))


@post("/jobs/{job_id:uuid}/cancel", status_code=303)
async def cancel_job(
    request: Request[Any, Any, Any], services: ServicesDep, job_id: FromPath[UUID], data: Form
) -> Redirect:
    return await _act(request, services, job_id, data, "cancel", lambda: ops.cancel(services.jobs, job_id))


async def _act(
    request: Request[Any, Any, Any],
    services: Services,
    job_id: UUID,
    form: dict[str, str],
    action: str,
    work: Callable[[], Awaitable[Job]],
) -> Redirect:
    """Check the form, do the action, note it in the job's log, and go back with a notice."""
    who = _check_action(request, form)
    try:
        job = await work()
    except (Conflict, InvalidInput) as exc:
        notice = f"{action} refused: {exc.detail}"
    else:
        notice = f"{action}: job {str(job_id)[:8]} is {job.status} now"
        logger.bind(job_id=str(job_id), operator=who).info("ops: {} of job {} by {}", action, job_id, who)
        try:
            await joblog.append(
                services.redis, services.settings, job_id, "INFO", f"operator {who}: {action}"
            )
        except Exception as exc:  # the action happened; only its note in the job's log is missing
            logger.warning("ops: job log note not written: {}", type(exc).__name__)
    target = form.get("next", "")
    if not target.startswith("/ops") or target.startswith("//"):
        target = f"/ops/jobs/{job_id}"
    target = f"{target}{'&' if '?' in target else '?'}{urlencode({'notice': notice[:300]})}"
    return Redirect(target, status_code=303)


@get("/static/{name:str}")
async def static(name: str) -> Response[bytes]:
    if name not in _STATIC_TYPES:
        raise NotFound("no such file")
    if name not in _static_cache:
        _static_cache[name] = (_STATIC / name).read_bytes()
    return Response(
        _static_cache[name], media_type=_STATIC_TYPES[name], headers={"Cache-Control": "max-age=300"}
    )


def ops_router(settings: Settings) -> list[Router]:
    """The dashboard's routes when OPS_DASHBOARD_ENABLED, else none."""
    if not settings.ops_dashboard_enabled:
        return []
    return [
        Router(
            path="/ops",
            guards=[require_operator],
            route_handlers=[overview, job_page, retry_job, cancel_job, static],
            include_in_schema=False,
        )
    ]
