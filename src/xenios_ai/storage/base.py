"""The `BlobStorage` protocol every backend keeps, and what its implementations share.

Keys are relative, slash-separated paths (``jobs/<job id>/upload``). Every worker must reach the same
blobs: one machine shares a local directory (`storage.local`); workers spread over machines need an
S3-compatible bucket (`storage.s3`), whose ``local_file`` downloads to a temporary file on the worker.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from xenios_ai.errors import NotFound, PayloadTooLarge, XeniosError

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
STREAM_CHUNK_BYTES = 256 * 1024
"""Size of the chunks `BlobStorage.stream` yields (at most)."""


class StoredBlob(msgspec.Struct, frozen=True):
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BlobStream:
    """An opened blob: its size, and its bytes as they arrive (read once)."""

    size: int
    chunks: AsyncGenerator[bytes, None]


class BlobStorage(Protocol):
    """Where uploads and large results live. Writes are atomic: a key is complete or absent."""

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredBlob:
        """Store a stream; past ``max_bytes`` stop reading, keep nothing and raise PayloadTooLarge."""
        ...

    async def put_bytes(self, key: str, data: bytes) -> StoredBlob: ...

    async def read_bytes(self, key: str) -> bytes:
        """The blob's content; NotFound when absent."""
        ...

    async def stream(self, key: str) -> BlobStream:
        """The blob's size and a stream of its bytes (memory: one chunk); NotFound when absent."""
        ...

    async def size(self, key: str) -> int | None:
        """The blob's size in bytes, None when absent (nothing is read)."""
        ...

    async def read_head(self, key: str, length: int) -> bytes:
        """The blob's first ``length`` bytes (fewer if it is shorter); NotFound when absent."""
        ...

    def local_file(self, key: str) -> AbstractContextManager[Path]:
        """A path on local disk holding the blob while the context is open (engines want files). A
        remote blob is streamed to a temporary file, removed when the context closes. Blocking: call it
        from a job's thread, not from the event loop."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; an absent key is not an error."""
        ...

    def url(self, key: str) -> str: ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise XeniosError(f"invalid blob key {key!r}", code="invalid_blob_key")
    return key


def not_found(key: str) -> NotFound:
    return NotFound(f"blob {key} does not exist", code="blob_not_found")


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the file is larger than the limit of {max_bytes} bytes", extra={"max_bytes": max_bytes}
    )
