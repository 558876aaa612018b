"""The worker's side of jobs submitted with a reference (``source``) instead of a file.

Before the handler runs, the source is copied into the job's own blob, ``jobs/<id>/upload``, exactly as
an upload would have been stored: sniffed from its first bytes (``unsupported_format``), the kind's size
limit enforced while streaming (``source_too_large``, nothing kept), and recorded as the job's ``upload``
(and blob, so retention and job deletion remove it). The handler then sees an ordinary upload; a later
attempt finds it there and fetches nothing. The API never touches the bytes.
"""

from __future__ import annotations

from xenios_ai.errors import NotFound, PayloadTooLarge
from xenios_ai.jobs import store
from xenios_ai.jobs.models import Job, JobKind
from xenios_ai.jobs.worker_services import WorkerServices
from xenios_ai.storage import open_source_storage
from xenios_ai.storage.sources import fetch_url, not_found, too_large


async def materialize(services: WorkerServices, job: Job, kind: JobKind) -> Job | None:
    """``job`` with its source stored as its upload (unchanged when it has no source or already has the
    upload); None when this attempt lost the job meanwhile."""
    source, spec = job.source, kind.upload
    if source is None or job.upload is not None or spec is None:
        return job
    settings = services.settings
    limit = spec.limit(settings)
    if source.storage_key is not None:
        origin = open_source_storage(settings)
        size = await origin.size(source.storage_key)
        if size is None:
            raise not_found(f"no object {source.storage_key} in the bucket")
        if size > limit:
            raise too_large(limit)
        try:
            chunks = (await origin.stream(source.storage_key)).chunks
        except NotFound:
            raise not_found(f"no object {source.storage_key} in the bucket") from None
    else:
        assert source.url is not None
        chunks = fetch_url(source.url, settings, limit)
    try:
        upload = await services.jobs.store_upload(kind, job.id, source.filename, chunks)
    except PayloadTooLarge as exc:
        if exc.code == "source_too_large":
            raise
        raise too_large(limit) from None
    finally:
        await chunks.aclose()
    return await store.set_upload(services.db, job.id, job.attempts, upload)
