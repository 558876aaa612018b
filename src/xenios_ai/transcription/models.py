"""What a transcription takes and gives: `TranscriptionOptions` in, `TranscriptionResult` out, and the job's
input and result (``then``: analyses to run on the transcript)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final, Literal

import msgspec

from xenios_ai.jobs.followups import MAX_THEN, check_then
from xenios_ai.jobs.models import FollowUp
from xenios_ai.llm.types import Options

ProgressCallback = Callable[[float, str], None]
"""Called with (fraction 0..1, message) as segments come; it may raise ``JobCancelled`` to stop."""


MAX_SPEAKERS = 8
"""Most channels or tracks transcribed as speakers of one job."""
SpeakerName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\r\n:<>]+$")]
"""A speaker's name: one line, no colon (the labelled transcript's separator) and no angle brackets (WebVTT
voice tags)."""
TrackOffset = Annotated[float, msgspec.Meta(ge=0, le=24 * 3600)]
ChannelMode = Literal["mix", "separate", "auto"]


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
    speakers: Annotated[list[SpeakerName], msgspec.Meta(max_length=MAX_SPEAKERS)] = msgspec.field(
        default_factory=list
    )
    """Who speaks on each channel (``separate``) or in each file (multi-track), in order, e.g.
    ``["Coach", "Client"]``; a channel or track without a name is ``Speaker N``."""
    channels: ChannelMode = "auto"
    """``mix``: one transcript of all channels mixed to mono (no speakers). ``separate``: each channel
    transcribed as its own speaker. ``auto``: separate when the file has two or more channels whose
    content differs, mix when they are copies (or only one carries sound)."""
    track_offsets: Annotated[list[TrackOffset], msgspec.Meta(max_length=MAX_SPEAKERS)] = msgspec.field(
        default_factory=list
    )
    """Multi-track jobs: when each file starts on the common timeline, in seconds (default all 0)."""


class Word(msgspec.Struct, omit_defaults=True):
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None
    """Who said it (channels, tracks or a diarizer); absent when unknown."""


class Segment(msgspec.Struct, omit_defaults=True):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    """Only when word timestamps were asked for."""
    speaker: str | None = None
    """Who said it (channels, tracks or a diarizer); absent when unknown (a mono recording)."""


class SpeakerStats(msgspec.Struct):
    """One speaker of a transcript: talk time (seconds of their segments) and words spoken."""

    name: str
    talk_seconds: float
    word_count: int


SpeakerSource = Literal["channels", "tracks", "diarizer"]


class Decoding(msgspec.Struct, frozen=True, kw_only=True):
    """How a transcript was decoded (see ``xenios_ai.transcription.decoding``)."""

    mode: Literal["sequential", "batched"]
    """sequential: one 30 s window after another, each conditioned on the text before it; batched: VAD-cut
    clips of up to 30 s decoded several at once (long recordings: less CPU at the same accuracy)."""
    word_timestamps: bool
    """Whether words were aligned (costs time): sequential always does it (segment times across VAD
    cuts need it); batched only when ``word_timestamps`` was asked for."""
    batch_size: int = 1
    """Clips decoded at once (1 when sequential)."""
    windows: int = 1
    """Windows of audio decoded one after another (``TRANSCRIPTION_WINDOW_SECONDS`` bounds memory)."""


#: The default decoding (a short file): left out of a `TranscriptionResult`'s JSON.
SEQUENTIAL: Final = Decoding(mode="sequential", word_timestamps=True)


class TimeRange(msgspec.Struct):
    """Seconds from the start of the audio."""

    start: float
    end: float


WarningCode = Literal["speech_not_transcribed", "language_unsupported_by_model"]


class TranscriptWarning(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Speech the transcript does not faithfully hold (see ``xenios_ai.transcription.coverage``).

    ``speech_not_transcribed``: speech (Silero VAD) that no segment covers, even decoded a second time.
    ``language_unsupported_by_model``: an English-only model decoded speech it is not confident of over
    these ranges: most likely another language, which it cannot transcribe (its text there, if any, is
    not what was said); a multilingual ``WHISPER_MODEL`` is needed.
    """

    code: WarningCode
    message: str
    ranges: list[TimeRange]
    seconds: float
    """Seconds inside ``ranges``."""
    language: str | None = None
    """The language heard (ISO 639-1) when the detection can name it; absent with an English-only model,
    which has no language tokens to tell (no multilingual model is available offline)."""
    detection: Literal["english_model_confidence"] | None = None
    """How the language was judged: ``english_model_confidence``, the English-only model's average
    log-probability over the re-decoded speech (below -0.8 for at least 4 s)."""


class TranscriptionResult(msgspec.Struct, omit_defaults=True):
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
    speakers: list[SpeakerStats] | None = None
    """Who speaks, in channel or track order, when the transcript is speaker-attributed (null otherwise)."""
    speaker_source: SpeakerSource | None = None
    """Where the speakers come from: the file's ``channels``, separate ``tracks``, or a ``diarizer``."""
    decoding: Decoding = SEQUENTIAL
    """How it was decoded; left out when it is the default (`SEQUENTIAL`, one window)."""
    speech_seconds: float | None = None
    """Seconds of speech Silero VAD found in the audio (whether or not ``vad`` was on). Always in a job's
    result; the engine states it when built with ``coverage=True`` (as workers build it) or when speech
    is missing."""
    transcribed_seconds: float | None = None
    """Seconds of that speech inside the transcript's segments; well below ``speech_seconds`` means
    speech is missing (see ``warnings``)."""
    warnings: list[TranscriptWarning] = msgspec.field(default_factory=list)
    """What the transcript leaves out or cannot be trusted on: ``speech_not_transcribed`` (time ranges),
    ``language_unsupported_by_model``. Empty when every second of speech is transcribed."""


class TranscriptionJobOptions(TranscriptionOptions, kw_only=True):
    """A transcription job's input: the options, plus analyses to run on the transcript afterwards."""

    then: Annotated[list[str], msgspec.Meta(max_length=MAX_THEN)] = msgspec.field(default_factory=list)
    """Analysis tasks (``session_summary``, ``insight_generation``) submitted as follow-up jobs on the
    transcript once it has succeeded, each with ``source_job_id`` = this job."""
    max_seconds: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """A lower duration limit than TRANSCRIPTION_MAX_SECONDS for this job (``audio_too_long`` past it, before
    decoding when the file tells its duration): the OpenAI-compatible route's OPENAI_SYNC_MAX_SECONDS."""

    then_options: Options | None = None
    """Options of the ``then`` analyses: ``temperature``, ``max_tokens``, ``redact`` and ``redact_names``
    (personal details replaced before the LLM sees the text, restored in the analyses)."""

    def __post_init__(self) -> None:
        check_then(self.then)


class TranscriptionJobResult(TranscriptionResult, kw_only=True, omit_defaults=False):
    """A transcription job's result: the transcript (``decoding`` always stated) and the follow-up jobs it
    started."""

    follow_ups: list[FollowUp] = msgspec.field(default_factory=list)


def transcript_text(result: object) -> str | None:
    """A stored transcription result's text, for a follow-up analysis (``JobKind.text_of``): speaker-labelled
    lines (``Coach: ...``) when its segments carry speakers, else the plain text."""
    if not isinstance(result, dict):
        return None
    segments = result.get("segments")
    if isinstance(segments, list) and any(isinstance(s, dict) and s.get("speaker") for s in segments):
        return labelled_text(segments)
    text = result.get("text")
    return text if isinstance(text, str) else None


def labelled_text(segments: list[dict[str, object]]) -> str:
    """One ``Name: text`` line per turn (consecutive segments of one speaker joined); a segment without a
    speaker continues the current line."""
    lines: list[tuple[str | None, list[str]]] = []
    for segment in segments:
        speaker, text = segment.get("speaker"), str(segment.get("text") or "").strip()
        if not text:
            continue
        name = speaker if isinstance(speaker, str) else None
        if lines and (name is None or lines[-1][0] == name):
            lines[-1][1].append(text)
        else:
            lines.append((name, [text]))
    return "\n".join(f"{name}: {' '.join(texts)}" if name else " ".join(texts) for name, texts in lines)
