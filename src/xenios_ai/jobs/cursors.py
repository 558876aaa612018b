"""The opaque cursor of a job listing's next page: the last job's creation time and id, base64url."""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID

from xenios_ai.errors import InvalidInput
from xenios_ai.jobs.models import Job

__all__ = ["decode_cursor", "encode_cursor"]


def encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), UUID(job_id)
    except ValueError:
        raise InvalidInput("cursor: not a cursor this API returned", code="invalid_cursor") from None
