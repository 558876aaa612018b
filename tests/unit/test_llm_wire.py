"""The wire format helpers: SSE line splitting across reads, request bodies, Retry-After parsing."""

from __future__ import annotations

import email.utils
import time

import httpx2
import msgspec
import pytest

from xenios_ai.llm.failures import Attempt, all_failed
from xenios_ai.llm.failures import retry_after as _retry_after
from xenios_ai.llm.wire import Message, SSELines, TooLarge, decode_chunk, request_body


def test_sse_lines_reassemble_payloads_split_across_reads() -> None:
    lines = SSELines()
    assert lines.feed(b': OPENROUTER PROCESSING\n\ndata: {"cho') == []
    assert lines.feed(b'ices":[]}\r\n\r\ndata: [DONE]\n') == [b'{"choices":[]}', b"[DONE]"]
    assert lines.feed(b"\n") == []
    assert lines.comments == 1


def test_a_partial_line_longer_than_the_limit_is_refused() -> None:
    lines = SSELines(max_line=16)
    assert lines.feed(b"data: 0123456789\n") == [b"0123456789"]  # complete lines pass
    assert lines.feed(b"data: 012345") == []
    with pytest.raises(TooLarge):
        lines.feed(b"6789abcdef")
    ending = SSELines(max_line=16)
    assert ending.feed(b"data: 012345") == []
    with pytest.raises(TooLarge):
        ending.feed(b"6789abcdef\n\n")  # the read that ends the line takes it past the limit


def test_a_chunk_decodes_content_usage_and_a_mid_stream_error() -> None:
    chunk = decode_chunk(
        b'{"id":"x","provider":"P","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},'
        b'"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":1,"cost":0.5,"x":{}}}'
    )
    assert (chunk.choices[0].delta.content, chunk.provider) == ("Hi", "P")
    assert chunk.usage is not None
    assert (chunk.usage.prompt_tokens, chunk.usage.cost) == (3, 0.5)
    error = decode_chunk(b'{"error":{"code":"server_error","message":"boom"},"choices":[]}')
    assert error.error is not None
    assert error.error.code == "server_error"


def test_request_body_asks_for_usage_on_streams_only() -> None:
    messages = [Message("user", "hi")]
    stream = msgspec.json.decode(request_body("m", messages, temperature=0.1, max_tokens=5, stream=True))
    plain = msgspec.json.decode(request_body("m", messages, temperature=0.1, max_tokens=5, stream=False))
    assert stream["stream_options"] == {"include_usage": True}
    assert "stream" not in plain
    assert "stream_options" not in plain
    assert plain == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.1,
        "max_tokens": 5,
    }


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "soon"}, None),
        ({}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e999"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "inf", "retry-after": "2"}, 2.0),
        ({"retry-after": "-3"}, 0.0),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert _retry_after(httpx2.Headers(headers)) == seconds


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    value = _retry_after(httpx2.Headers({"retry-after": when}))
    assert value is not None
    assert 28 <= value <= 31


def test_an_enormous_retry_after_is_passed_on_capped_at_a_day() -> None:
    error = all_failed("chat", [Attempt("m", 1.0, "http_503", 503)], retry_after=1e300)
    assert error.headers["Retry-After"] == "86400"
