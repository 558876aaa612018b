"""Blob storage for uploads and large results: the `BlobStorage` protocol (`storage.base`), a local
directory (`storage.local`) and an S3-compatible bucket (`storage.s3`); `storage.factory` opens the one
STORAGE_BACKEND names. The job core imports the protocol and the factory from here."""

from xenios_ai.storage.base import BlobStorage, BlobStream, StoredBlob, check_key
from xenios_ai.storage.factory import open_source_storage, open_storage
from xenios_ai.storage.local import LocalStorage

__all__ = [
    "BlobStorage",
    "BlobStream",
    "LocalStorage",
    "StoredBlob",
    "check_key",
    "open_source_storage",
    "open_storage",
]
