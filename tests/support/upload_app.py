"""The API plus an upload route for a test job kind, as the extraction and transcription routes will be.

``python -m granian --interface asgi --factory tests.support.upload_app:app_factory`` serves it with
settings from the environment.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post

from xenios_ai.api.app import app_factory as api_factory
from xenios_ai.api.auth import require_api_key, require_user
from xenios_ai.api.deps import PrincipalDep, ServicesDep
from xenios_ai.api.job_schemas import JobAccepted, accepted
from xenios_ai.api.jobs import IdempotencyKey
from xenios_ai.api.uploads import receive_upload
from xenios_ai.extraction import sniff_document_format
from xenios_ai.jobs.models import JobKind, UploadSpec


class DocOptions(msgspec.Struct, forbid_unknown_fields=True):
    pages: int | None = None


DOCS = JobKind(
    name="docs_test",
    queue="extraction",
    input_type=DocOptions,
    upload=UploadSpec(sniff=sniff_document_format, sniff_bytes=8192, formats_hint="PDF, DOCX, Markdown"),
)


@post(
    "/api/v1/jobs/docs-test",
    guards=[require_api_key, require_user],
    status_code=202,
    request_max_body_size=None,
)
async def submit_docs(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[JobAccepted]:
    return accepted(
        await receive_upload(request, services.jobs, DOCS, principal.user_id, idempotency_key=idempotency_key)
    )


def with_upload_route(app: Litestar) -> Litestar:
    app.register(submit_docs)
    return app


def app_factory() -> Litestar:
    return with_upload_route(api_factory())
