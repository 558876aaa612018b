"""Blobs in an S3-compatible bucket (AWS S3, Supabase Storage's S3 endpoint, SeaweedFS, MinIO), via obstore.

obstore (Rust's object_store behind an async Python face) signs requests (SigV4), retries transient
failures and uploads streams as multipart uploads, aborting them when the stream fails: an object is
complete or absent, and a failed or oversized upload leaves nothing in the bucket (no dangling parts).
See docs/decisions/0006-s3-storage.md for the choice and the measurements.

Memory: a stream is uploaded in parts of `PART_BYTES`, at most `PART_CONCURRENCY` in flight, so one
upload holds about (PART_CONCURRENCY + 1) x PART_BYTES whatever its size. A stream shorter than one part
is a single PUT.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from xenios_ai.errors import UpstreamUnavailable
from xenios_ai.storage.base import (
    STREAM_CHUNK_BYTES,
    BlobStream,
    StoredBlob,
    check_key,
    not_found,
    too_large,
)

if TYPE_CHECKING:
    from xenios_ai.settings import Settings

PART_BYTES = 5 * 1024 * 1024
"""Size of a multipart upload's parts (S3's minimum for every part but the last)."""
PART_CONCURRENCY = 4
"""Parts of one upload in flight at once."""
_DOWNLOAD_CHUNK = 1024 * 1024


def _unavailable(key: str, exc: Exception) -> UpstreamUnavailable:
    # obstore's message names the endpoint and the key, never the credentials.
    return UpstreamUnavailable(
        f"object storage failed on {key}: {type(exc).__name__}", code="storage_unavailable"
    )


def make_store(settings: Settings, *, prefix: str | None) -> S3Store:
    """An obstore S3Store for the configured bucket; keys are under ``prefix`` (None: the bucket's root)."""
    config: dict[str, Any] = {
        "region": settings.s3_region,
        "virtual_hosted_style_request": not settings.s3_force_path_style,
    }
    if settings.s3_endpoint_url:
        config["endpoint"] = settings.s3_endpoint_url.rstrip("/")
    if settings.s3_access_key_id:
        config["access_key_id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key is not None:
        config["secret_access_key"] = settings.s3_secret_access_key.get()
    return S3Store(
        settings.s3_bucket,
        prefix=prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options={
            "allow_http": settings.s3_allow_http,
            "connect_timeout": timedelta(seconds=10),
            "timeout": timedelta(seconds=120),
        },
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30)},
    )


class S3Storage:
    """Blobs as objects in a bucket, all under one key prefix (S3_KEY_PREFIX)."""

    def __init__(self, store: S3Store, *, temp_dir: Path | None = None, label: str = "") -> None:
        self.store = store
        self.temp_dir = temp_dir
        self.label = label

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredBlob:
        check_key(key)
        digest = hashlib.sha256()
        size = 0
        stream = aiter(chunks)
        first = bytearray()

        def count(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise too_large(max_bytes)
            digest.update(chunk)

        async for chunk in stream:
            count(chunk)
            first += chunk
            if len(first) >= PART_BYTES:
                break
        else:  # the whole stream fits one part: a single PUT
            await self._put(key, bytes(first), use_multipart=False)
            return StoredBlob(key, size, digest.hexdigest())

        failure: list[BaseException] = []

        async def rest() -> AsyncIterator[bytes]:
            try:
                yield bytes(first)
                first.clear()
                async for chunk in stream:
                    count(chunk)
                    yield chunk
            except BaseException as exc:
                failure.append(exc)
                raise

        # A failing stream (the limit, a client gone) aborts the multipart upload: nothing remains, and
        # the stream's own error is what the caller sees.
        try:
            await self._put(key, rest(), chunk_size=PART_BYTES, max_concurrency=PART_CONCURRENCY)
        except BaseException:
            if failure:
                raise failure[0] from None
            raise
        return StoredBlob(key, size, digest.hexdigest())

    async def _put(self, key: str, data: bytes | AsyncIterator[bytes], **options: Any) -> None:
        try:
            await obstore.put_async(self.store, key, data, **options)
        except (BaseError, ConnectionError, TimeoutError) as exc:
            raise _unavailable(key, exc) from exc

    async def put_bytes(self, key: str, data: bytes) -> StoredBlob:
        check_key(key)
        await self._put(key, data, use_multipart=False)
        return StoredBlob(key, len(data), hashlib.sha256(data).hexdigest())

    async def read_bytes(self, key: str) -> bytes:
        check_key(key)
        try:
            result = await obstore.get_async(self.store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            raise not_found(key) from None
        except (BaseError, ConnectionError, TimeoutError) as exc:
            raise _unavailable(key, exc) from exc

    async def stream(self, key: str) -> BlobStream:
        check_key(key)
        try:
            result = await obstore.get_async(self.store, key)
        except FileNotFoundError:
            raise not_found(key) from None
        except (BaseError, ConnectionError, TimeoutError) as exc:
            raise _unavailable(key, exc) from exc
        size = result.meta["size"]

        async def chunks() -> AsyncGenerator[bytes, None]:
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK_BYTES):
                yield bytes(chunk)

        return BlobStream(size, chunks())

    async def size(self, key: str) -> int | None:
        check_key(key)
        try:
            return (await obstore.head_async(self.store, key))["size"]
        except FileNotFoundError:
            return None
        except (BaseError, ConnectionError, TimeoutError) as exc:
            raise _unavailable(key, exc) from exc

    async def read_head(self, key: str, length: int) -> bytes:
        check_key(key)
        try:
            size = (await obstore.head_async(self.store, key))["size"]
            if size == 0:
                return b""
            data = await obstore.get_range_async(self.store, key, start=0, length=min(length, size))
            return bytes(data)
        except FileNotFoundError:
            raise not_found(key) from None
        except (BaseError, ConnectionError, TimeoutError) as exc:
            raise _unavailable(key, exc) from exc

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """The object streamed to a temporary file (chunk by chunk), removed when the context closes."""
        check_key(key)
        folder = Path(tempfile.mkdtemp(prefix="xenios-blob-", dir=self.temp_dir))
        path = folder / key.rsplit("/", 1)[-1]
        try:
            try:
                result = obstore.get(self.store, key)
                with path.open("wb") as out:
                    for chunk in result.stream(min_chunk_size=_DOWNLOAD_CHUNK):
                        out.write(chunk)
            except FileNotFoundError:
                raise not_found(key) from None
            except (BaseError, ConnectionError, TimeoutError) as exc:
                raise _unavailable(key, exc) from exc
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with contextlib.suppress(OSError):
                os.rmdir(folder)

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            await obstore.delete_async(self.store, key)
        except FileNotFoundError:
            return
        except (BaseError, ConnectionError, TimeoutError) as exc:
            raise _unavailable(key, exc) from exc

    def url(self, key: str) -> str:
        return f"s3://{self.label}/{check_key(key)}"
