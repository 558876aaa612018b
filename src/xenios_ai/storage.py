"""Blob storage for uploads and large results: a small protocol and its local-directory implementation.

Keys are relative, slash-separated paths (``jobs/<job id>/upload``). Every worker must reach the same
blobs: one machine shares a local directory; workers spread over machines need an S3-compatible bucket,
which implements the same protocol (``local_file`` downloads to a temporary file there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import msgspec

from xenios_ai.errors import NotFound, PayloadTooLarge, XeniosError
from xenios_ai.settings import Settings

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_WRITE_BUFFER = 1024 * 1024


class StoredBlob(msgspec.Struct, frozen=True):
    key: str
    size: int
    sha256: str


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

    def local_file(self, key: str) -> AbstractContextManager[Path]:
        """A path on local disk holding the blob while the context is open (engines want files)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; an absent key is not an error."""
        ...

    def url(self, key: str) -> str: ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise XeniosError(f"invalid blob key {key!r}", code="invalid_blob_key")
    return key


class LocalStorage:
    """Blobs as files under one directory; written to a temporary file, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredBlob:
        final = self.path(key)
        tmp = self._tmp / uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        try:
            # Buffered writes land in the page cache in microseconds; fsync is slow, so it runs once,
            # at the end, in a thread.
            out = await asyncio.to_thread(open, tmp, "wb", buffering=_WRITE_BUFFER)
            with out:
                async for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(
                            f"the file is larger than the limit of {max_bytes} bytes",
                            extra={"max_bytes": max_bytes},
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return StoredBlob(key, size, digest.hexdigest())

    async def put_bytes(self, key: str, data: bytes) -> StoredBlob:
        async def one() -> AsyncIterable[bytes]:
            yield data

        return await self.put(key, one())

    async def read_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {key} does not exist", code="blob_not_found") from None

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"blob {key} does not exist", code="blob_not_found")
        yield path

    async def delete(self, key: str) -> None:
        path = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Drop emptied folders up to the root (jobs/<id>/ once its last blob is gone).
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def url(self, key: str) -> str:
        return self.path(key).as_uri()


def open_storage(settings: Settings) -> BlobStorage:
    """The configured storage: a local directory (STORAGE_DIR, default <DATA_DIR>/storage)."""
    return LocalStorage(settings.storage_path)
