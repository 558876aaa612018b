"""Local blob storage: atomic writes, the size limit while streaming, keys that cannot escape the root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xenios_ai.errors import NotFound, PayloadTooLarge, XeniosError
from xenios_ai.storage import LocalStorage


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_put_streams_to_the_key_and_reports_size_and_digest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    blob = await storage.put("jobs/a/upload", _chunks(b"hello ", b"world"))
    assert (blob.key, blob.size) == ("jobs/a/upload", 11)
    assert blob.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert await storage.read_bytes("jobs/a/upload") == b"hello world"
    with storage.local_file("jobs/a/upload") as path:
        assert path == tmp_path / "jobs" / "a" / "upload"
    assert storage.url("jobs/a/upload").startswith("file:///")


async def test_a_stream_over_the_limit_stops_reading_and_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    pulled = []

    async def endless() -> AsyncIterator[bytes]:
        for index in range(1000):
            pulled.append(index)
            yield b"x" * 1000

    with pytest.raises(PayloadTooLarge):
        await storage.put("jobs/b/upload", endless(), max_bytes=5_500)
    assert len(pulled) == 6  # stopped at the chunk that crossed the limit
    assert not (tmp_path / "jobs" / "b").exists()
    assert list((tmp_path / ".tmp").iterdir()) == []


async def test_a_failed_stream_keeps_the_previous_version(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put_bytes("jobs/c/result.json", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new, partial"
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await storage.put("jobs/c/result.json", broken())
    assert await storage.read_bytes("jobs/c/result.json") == b"old"


async def test_delete_removes_the_blob_and_emptied_folders(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put_bytes("jobs/d/upload", b"x")
    await storage.delete("jobs/d/upload")
    await storage.delete("jobs/d/upload")  # absent: fine
    assert not (tmp_path / "jobs").exists()
    with pytest.raises(NotFound):
        await storage.read_bytes("jobs/d/upload")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "jobs/../../x", "jobs//x", "", "jobs/a b"])
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(XeniosError):
        LocalStorage(tmp_path).path(key)
