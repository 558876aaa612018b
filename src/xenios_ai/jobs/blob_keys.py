"""Where a job's own files are kept in blob storage: its uploads and its secret (a PDF's password).

The job service writes them at submit, the runner's context reads the secret, the API refuses to serve
either as a job file.
"""

from __future__ import annotations

from uuid import UUID

__all__ = ["is_upload_key", "secret_key", "upload_key"]


def upload_key(job_id: UUID, index: int = 0) -> str:
    """Where a job's uploaded file is kept (``index``: the further files of a several-file submit)."""
    return f"jobs/{job_id}/upload" + (f"-{index + 1}" if index else "")


def is_upload_key(job_id: UUID, key: str) -> bool:
    """Whether ``key`` is one of the job's uploaded files."""
    base = upload_key(job_id)
    return key == base or (key.startswith(f"{base}-") and key[len(base) + 1 :].isdigit())


def secret_key(job_id: UUID) -> str:
    """Where a job's secret (see `JobService.submit`) is kept."""
    return f"jobs/{job_id}/secret"
