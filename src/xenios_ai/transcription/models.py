"""What a transcription takes and gives: `TranscriptionOptions` in, `TranscriptionResult` out, and the job's
input and result (``then``: analyses to run on the transcript)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import msgspec

from xenios_ai.jobs.followups import MAX_THEN, check_then
from xenios_ai.jobs.models import FollowUp

ProgressCallback = Callable[[float, str], None]
"""Called with (fraction 0..1, message) as segments come; it may raise ``JobCancelled`` to stop."""


class TranscriptionOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a caller may choose per transcription."""

    language: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")] | None = None
    """Spoken language (ISO 639-1, a region suffix is ignored); None detects it. An English-only model
    (the bundled tiny.en) rejects anything but English with ``unsupported_language``, rather than
    returning a wrong transcript."""
    word_timestamps: bool = False
    vad: bool = True
    """Skip non-speech with Silero VAD; without it long silences produce invented text."""
    initial_prompt: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    """Context for the first 30 s of every window (names, jargon)."""
    hotwords: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class Word(msgspec.Struct):
    start: float
    end: float
    word: str
    probability: float


class Segment(msgspec.Struct, omit_defaults=True):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    """Only when word timestamps were asked for."""


class TranscriptionResult(msgspec.Struct):
    text: str
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float
    """Seconds of audio decoded."""
    model: str
    real_time_factor: float
    """processing_seconds / duration: below 1 is faster than real time."""
    processing_seconds: float


class TranscriptionJobOptions(TranscriptionOptions, kw_only=True):
    """A transcription job's input: the options, plus analyses to run on the transcript afterwards."""

    then: Annotated[list[str], msgspec.Meta(max_length=MAX_THEN)] = msgspec.field(default_factory=list)
    """Analysis tasks (``session_summary``, ``insight_generation``) submitted as follow-up jobs on the
    transcript once it has succeeded, each with ``source_job_id`` = this job."""

    def __post_init__(self) -> None:
        check_then(self.then)


class TranscriptionJobResult(TranscriptionResult, kw_only=True):
    """A transcription job's result: the transcript and the follow-up jobs it started."""

    follow_ups: list[FollowUp] = msgspec.field(default_factory=list)


def transcript_text(result: object) -> str | None:
    """A stored transcription result's text, for a follow-up analysis (``JobKind.text_of``)."""
    return result.get("text") if isinstance(result, dict) else None
