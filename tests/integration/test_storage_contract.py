"""The BlobStorage promises, kept by both backends: a local directory and an S3 bucket (a real SeaweedFS).

Atomic writes (a key is complete or absent), the size limit enforced while streaming (the rest is never
read, nothing is left behind: no object, no dangling multipart upload), streamed reads, ``local_file``
(a temporary copy on the worker for S3, removed afterwards), deletes that tolerate absent keys.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.config import make_settings
from tests.support.seaweed import SeaweedFS
from xenios_ai.errors import NotFound, PayloadTooLarge, UpstreamUnavailable
from xenios_ai.storage import BlobStorage, LocalStorage, open_source_storage, open_storage
from xenios_ai.storage.s3 import PART_BYTES, S3Storage

MB = 1024 * 1024


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Backend:
    def __init__(self, name: str, storage: BlobStorage, server: SeaweedFS | None, bucket: str) -> None:
        self.name, self.storage, self.server, self.bucket = name, storage, server, bucket

    def leftovers(self) -> list[str]:
        """What a failed write may have left: pending multipart uploads (S3), temporary files (local)."""
        if isinstance(self.storage, LocalStorage):
            return [p.name for p in (self.storage.root / ".tmp").iterdir()]
        assert self.server is not None
        return self.server.pending_uploads(self.bucket)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        settings = make_settings({"STORAGE_DIR": str(tmp_path / "storage"), "DATA_DIR": str(tmp_path)})
        return Backend("local", open_storage(settings), None, "")
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    bucket = server.create_bucket(f"contract-{uuid.uuid4().hex[:12]}")
    settings = make_settings(server.env(bucket, S3_KEY_PREFIX="svc/", DATA_DIR=str(tmp_path)))
    storage = open_storage(settings)
    assert isinstance(storage, S3Storage)
    return Backend("s3", storage, server, bucket)


async def test_put_streams_and_reads_back(backend: Backend) -> None:
    storage = backend.storage
    blob = await storage.put("jobs/a/upload", _chunks(b"hello ", b"world"))
    assert (blob.key, blob.size) == ("jobs/a/upload", 11)
    assert blob.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert await storage.read_bytes("jobs/a/upload") == b"hello world"
    assert await storage.size("jobs/a/upload") == 11
    assert await storage.size("jobs/a/absent") is None
    assert await storage.read_head("jobs/a/upload", 5) == b"hello"
    opened = await storage.stream("jobs/a/upload")
    assert opened.size == 11
    assert b"".join([chunk async for chunk in opened.chunks]) == b"hello world"
    with storage.local_file("jobs/a/upload") as path:
        assert path.read_bytes() == b"hello world"
    if backend.name == "s3":
        assert not path.exists()  # the worker's temporary copy is gone with the context
        assert not path.parent.exists()
    for read in (storage.read_bytes, storage.stream):
        with pytest.raises(NotFound):
            await read("jobs/a/absent")
    with pytest.raises(NotFound), storage.local_file("jobs/a/absent"):
        pass


async def test_a_multipart_stream_round_trips(backend: Backend) -> None:
    """Larger than one part: an S3 multipart upload, in bounded parts."""
    storage = backend.storage
    piece = bytes(range(256)) * 4096  # 1 MiB
    count = PART_BYTES // MB * 2 + 1
    blob = await storage.put("jobs/m/upload", _chunks(*[piece] * count))
    assert blob.size == count * MB
    opened = await storage.stream("jobs/m/upload")
    digest, size = hashlib.sha256(), 0
    async for chunk in opened.chunks:
        assert len(chunk) <= 4 * MB
        digest.update(chunk)
        size += len(chunk)
    assert (size, digest.hexdigest()) == (blob.size, blob.sha256)
    with storage.local_file("jobs/m/upload") as path:
        assert path.stat().st_size == blob.size
    assert backend.leftovers() == []


@pytest.mark.parametrize("chunk_size", [1000, MB])
async def test_a_stream_over_the_limit_stops_reading_and_leaves_nothing(
    backend: Backend, chunk_size: int
) -> None:
    """Under one part (a single PUT never sent) and past several parts (a multipart upload aborted)."""
    pulled: list[int] = []
    limit = 5 * chunk_size + chunk_size // 2 if chunk_size == 1000 else 2 * PART_BYTES + 10

    async def endless() -> AsyncIterator[bytes]:
        for index in range(100_000):
            pulled.append(index)
            yield b"x" * chunk_size

    with pytest.raises(PayloadTooLarge):
        await backend.storage.put("jobs/b/upload", endless(), max_bytes=limit)
    assert len(pulled) == limit // chunk_size + 1  # stopped at the chunk that crossed the limit
    assert await backend.storage.size("jobs/b/upload") is None
    assert backend.leftovers() == []


async def test_a_failed_stream_keeps_the_previous_version(backend: Backend) -> None:
    storage = backend.storage
    await storage.put_bytes("jobs/c/result.json", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"n" * (PART_BYTES + 1)  # past one part: the multipart path
        yield b"new, partial"
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await storage.put("jobs/c/result.json", broken())
    assert await storage.read_bytes("jobs/c/result.json") == b"old"
    assert backend.leftovers() == []


async def test_delete_removes_and_tolerates_absent_keys(backend: Backend) -> None:
    storage = backend.storage
    await storage.put_bytes("jobs/d/upload", b"x")
    await storage.delete("jobs/d/upload")
    await storage.delete("jobs/d/upload")
    assert await storage.size("jobs/d/upload") is None
    with pytest.raises(NotFound):
        await storage.read_bytes("jobs/d/upload")


async def test_s3_keys_live_under_the_prefix_and_sources_read_the_bucket_root(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    bucket = seaweedfs.create_bucket(f"prefix-{uuid.uuid4().hex[:12]}")
    settings = make_settings(seaweedfs.env(bucket, S3_KEY_PREFIX="svc/", DATA_DIR=str(tmp_path)))
    await open_storage(settings).put_bytes("jobs/p/upload", b"ours")
    root = open_source_storage(settings)
    assert await root.read_bytes("svc/jobs/p/upload") == b"ours"
    await root.put_bytes("uploads/user/file.md", b"# theirs")
    assert await open_storage(settings).size("uploads/user/file.md") is None


async def test_s3_with_a_wrong_secret_is_an_error_not_a_silent_success(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    bucket = seaweedfs.create_bucket(f"auth-{uuid.uuid4().hex[:12]}")
    env = seaweedfs.env(bucket, DATA_DIR=str(tmp_path)) | {"S3_SECRET_ACCESS_KEY": "wrong"}
    storage = open_storage(make_settings(env))
    with pytest.raises(UpstreamUnavailable) as caught:
        await storage.put_bytes("jobs/x/upload", b"x")
    assert "wrong" not in str(caught.value)
    assert seaweedfs.secret_key not in str(caught.value)
