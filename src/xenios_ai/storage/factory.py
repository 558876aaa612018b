"""The configured storage (STORAGE_BACKEND), for the job service and for job sources."""

from __future__ import annotations

import tempfile
from pathlib import Path

from xenios_ai.settings import Settings
from xenios_ai.storage.base import BlobStorage
from xenios_ai.storage.local import LocalStorage
from xenios_ai.storage.s3 import S3Storage, make_store


def _temp_dir(settings: Settings) -> Path:
    folder = Path(settings.data_dir) / "tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path(tempfile.gettempdir())
    return folder


def open_storage(settings: Settings) -> BlobStorage:
    """Where this service keeps its blobs: STORAGE_DIR (default <DATA_DIR>/storage), or the bucket under
    S3_KEY_PREFIX."""
    if settings.storage_backend == "s3":
        prefix = settings.s3_key_prefix.strip("/")
        return S3Storage(
            make_store(settings, prefix=prefix or None),
            temp_dir=_temp_dir(settings),
            label=f"{settings.s3_bucket}/{prefix}".rstrip("/"),
        )
    return LocalStorage(settings.storage_path)


def open_source_storage(settings: Settings) -> BlobStorage:
    """The same place seen from its root: where a job's ``{"source": {"storage_key": ...}}`` is read (the
    MVP's own files in the bucket, outside S3_KEY_PREFIX)."""
    if settings.storage_backend == "s3":
        return S3Storage(
            make_store(settings, prefix=None), temp_dir=_temp_dir(settings), label=str(settings.s3_bucket)
        )
    return LocalStorage(settings.storage_path)
