"""Retry policy as data, cursors, and the streaming multipart reader."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from xenios_ai.api.uploads import MultipartStream
from xenios_ai.errors import InvalidInput, UpstreamTimeout, UpstreamUnavailable
from xenios_ai.jobs.cursors import decode_cursor, encode_cursor
from xenios_ai.jobs.models import Job, RetryPolicy


def test_only_transient_errors_are_retried_while_attempts_remain() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.retries(UpstreamUnavailable("down"), attempt=1)
    assert policy.retries(UpstreamTimeout("slow"), attempt=2)
    assert not policy.retries(UpstreamUnavailable("down"), attempt=3)
    assert not policy.retries(InvalidInput("bad"), attempt=1)
    assert not policy.retries(RuntimeError("bug"), attempt=1)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_seconds=2.0, max_backoff_seconds=10.0)
    assert 1.0 <= policy.backoff(1) <= 2.0
    assert 2.0 <= policy.backoff(2) <= 4.0
    assert 5.0 <= policy.backoff(9) <= 10.0


def test_cursor_round_trips_and_rejects_garbage() -> None:
    job = Job(
        id=uuid.uuid4(), kind="analysis", queue="llm", status="queued", owner="u", input={},
        created_at=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    )  # fmt: skip
    assert decode_cursor(encode_cursor(job)) == (job.created_at, job.id)
    with pytest.raises(InvalidInput):
        decode_cursor("not-a-cursor")


def _form(boundary: str) -> bytes:
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="options"\r\n\r\n'
        '{"a": 1}\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="notes.md"\r\n'
        "Content-Type: text/markdown\r\n\r\n" + "# Notes\n" * 500 + f"\r\n--{boundary}--\r\n"
    ).encode()


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 100_000])
async def test_multipart_stream_reads_parts_whatever_the_chunking(chunk_size: int) -> None:
    body = _form("XyZ")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk_size):
            yield body[start : start + chunk_size]

    seen = {}
    async for part in MultipartStream(chunks(), "XyZ").parts():
        if part.name == "file":
            assert part.filename == "notes.md"
            seen["file"] = b"".join([c async for c in part.chunks()])
        else:
            seen[part.name] = (await part.text()).encode()
    assert seen == {"options": b'{"a": 1}', "file": b"# Notes\n" * 500}


async def test_a_malformed_multipart_body_is_invalid_input() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\nunterminated'

    async def read_all() -> None:
        async for part in MultipartStream(chunks(), "XyZ").parts():
            async for _ in part.chunks():
                pass

    with pytest.raises(InvalidInput):
        await read_all()
