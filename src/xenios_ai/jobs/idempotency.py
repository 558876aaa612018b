"""What an Idempotency-Key stands for: a hash of the submit request it was first used with.

A later submit with the same key and the same hash replays the first job; another hash is a 409
(`JobService.submit`).
"""

from __future__ import annotations

import hashlib
from uuid import UUID

import msgspec

from xenios_ai.jobs.models import JobKind, Upload
from xenios_ai.storage.sources import Source

__all__ = ["request_hash"]

_encoder = msgspec.json.Encoder(order="sorted")


def request_hash(
    kind: JobKind,
    input_json: bytes,
    idempotency_key: str | None,
    webhook_url: str | None,
    source_job_id: UUID | None,
    upload: Upload | None,
    webhook_include_result: bool = False,
    source: Source | None = None,
) -> str | None:
    """What an Idempotency-Key stands for: the request's kind, input, webhook, source and file."""
    if idempotency_key is None:
        return None
    digest = hashlib.sha256(f"{kind.name}\0{webhook_url or ''}\0{source_job_id or ''}\0".encode())
    digest.update(input_json)
    if upload is not None:
        for file in upload.files:
            digest.update(f"\0{file.sha256}\0{file.filename or ''}".encode())
    if webhook_include_result:  # only then: the hashes of earlier requests stay the same
        digest.update(b"\0webhook_include_result")
    if source is not None:
        digest.update(b"\0source\0" + _encoder.encode(source))
    return digest.hexdigest()
