"""A transcription job's own duration limit (``max_seconds``, set by /v1/audio/transcriptions): also
enforced where no header told the duration before decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenios_ai.errors import LimitExceeded
from xenios_ai.transcription.job import check_headers, within_limit
from xenios_ai.transcription.models import TranscriptionOptions, TranscriptionResult

RESULT = TranscriptionResult(
    text="hello",
    segments=[],
    language="en",
    language_probability=1.0,
    duration=12.0,
    model="m",
    real_time_factor=0.1,
    processing_seconds=1.2,
)
AUDIO = Path(__file__).parents[1] / "data" / "audio"


def test_a_transcript_longer_than_the_jobs_limit_fails_audio_too_long() -> None:
    def transcribe(path: Path, options: TranscriptionOptions, progress: object) -> TranscriptionResult:
        return RESULT

    with pytest.raises(LimitExceeded) as caught:
        within_limit(transcribe, 10.0)(Path("x.ogg"), TranscriptionOptions(), None)
    assert caught.value.code == "audio_too_long"
    assert within_limit(transcribe, 12.5)(Path("x.ogg"), TranscriptionOptions(), None) is RESULT


def test_headers_that_tell_a_longer_duration_fail_before_decoding() -> None:
    with pytest.raises(LimitExceeded) as caught:
        check_headers([AUDIO / "dialogue.wav"], 30.0)
    assert caught.value.extra["duration_seconds"] == pytest.approx(34.4, abs=0.1)
    check_headers([AUDIO / "dialogue.wav"], 35.0)
    check_headers([AUDIO / "random.bin"], 1.0)  # no header to read: the transcriber tells why later
