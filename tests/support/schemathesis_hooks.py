"""schemathesis hooks (SCHEMATHESIS_HOOKS) for tests/integration/test_schemathesis.py.

An upload's ``file`` is a format the schema cannot express: the app sniffs the bytes (415 for a PNG at
an audio route). Every generated ``file`` becomes a real file of the route's kind: a 0.5 s silent WAV
for the transcription routes, a small Markdown document for extraction; a list's ``cursor`` one the API
could have written; no ``webhook_url`` (the API resolves its host at submit, and the test machine resolves
no public name; negative cases still send theirs). The other fields stay generated.
"""

from __future__ import annotations

import base64
import io
import uuid
import wave
from datetime import UTC, datetime
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

_MARKDOWN = b"# Schemathesis\n\nA short document with one paragraph.\n"


def _silence(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


_FILES = {
    "/api/v1/jobs/extraction": _MARKDOWN,
    "/api/v1/jobs/transcription": _silence(),
    "/v1/audio/transcriptions": _silence(),
}


def _cursor() -> str:
    """A cursor as the API writes them (jobs.service.encode_cursor): any position is a valid one."""
    raw = f"{datetime.now(UTC).isoformat()}|{uuid.uuid4()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _set_body(case: Any, body: Any) -> None:
    """The body as sent, still counted as generated: schemathesis re-checks a body a hook changed and
    cannot check a file's bytes against ``format: binary`` (the case would turn negative)."""
    object.__setattr__(case, "body", body)
    case._meta.update_validated_hash(ParameterLocation.BODY, case._hash_container(body))


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """Positive cases of every phase (the coverage phase does not go through ``map_body``); a negative
    case keeps what was generated, which the app must refuse."""
    meta = case._meta  # not `case.meta`: reading it re-checks the containers
    if meta is None or not meta.generation.mode.is_positive:
        return
    path = case.operation.path
    body = case.body
    if isinstance(body, dict) and "webhook_url" in body:  # the API resolves its host: nothing does here
        body = {key: value for key, value in body.items() if key != "webhook_url"}
    if isinstance(body, dict) and path in _FILES and isinstance(body.get("file"), bytes | str):
        body = {**body, "file": _FILES[path]}
    if body is not case.body:
        _set_body(case, body)
    if path == "/api/v1/jobs" and isinstance(case.query, dict) and "cursor" in case.query:
        case.query = {**case.query, "cursor": _cursor()}  # opaque: no schema can say "one we returned"
