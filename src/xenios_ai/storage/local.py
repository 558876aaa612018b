"""Blobs as files under one directory (one machine: the API and its workers share the directory)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from pathlib import Path

from xenios_ai.storage.base import (
    STREAM_CHUNK_BYTES,
    BlobStream,
    StoredBlob,
    check_key,
    not_found,
    too_large,
)

_WRITE_BUFFER = 1024 * 1024


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
                        raise too_large(max_bytes)
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
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.put(key, one())

    async def read_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise not_found(key) from None

    async def stream(self, key: str) -> BlobStream:
        try:
            file = self.path(key).open("rb")
        except FileNotFoundError:
            raise not_found(key) from None
        size = os.fstat(file.fileno()).st_size

        async def chunks() -> AsyncGenerator[bytes, None]:
            with file:
                while chunk := await asyncio.to_thread(file.read, STREAM_CHUNK_BYTES):
                    yield chunk

        return BlobStream(size, chunks())

    async def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    async def read_head(self, key: str, length: int) -> bytes:
        try:
            with self.path(key).open("rb") as file:
                return file.read(length)
        except FileNotFoundError:
            raise not_found(key) from None

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise not_found(key)
        yield path

    async def delete(self, key: str) -> None:
        # In a thread: removing a folder takes ~5 ms on a disk mounted with `discard` (measured here), which
        # must not stall the event loop; and concurrent deletes (an erasure's) then overlap.
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
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
