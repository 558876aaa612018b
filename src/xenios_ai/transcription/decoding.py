"""How one mono array is decoded: sequentially (faster-whisper's ``WhisperModel.transcribe``) or in
batches of VAD-cut clips (its ``BatchedInferencePipeline``), and with or without word alignment.

`plan` chooses; `decode` runs one 16 kHz mono float32 array and yields faster-whisper segments whose
times are seconds from the array's start.

- Sequential: VAD drops the silences and the speech left is decoded in 30 s windows, each conditioned
  on the text before it. Word alignment is always on: faster-whisper maps segment times back across the
  VAD cuts word by word (without, a segment after a long silence can start inside it); ~5% of the time.
- Batched: VAD finds the speech, neighbouring speech is grouped into clips of at most 30 s that keep the
  short pauses inside them (a pause over ``MAX_GAP_SECONDS`` starts a new clip, so a long silence is never
  decoded), and clips are decoded ``batch_size`` at a time. A clip is contiguous audio, so its segments'
  times are exact without word alignment: words are aligned only when asked for. Clips are decoded
  independently (no conditioning on the previous clip's text, no temperature fallback).

Batched decoding costs less CPU per audio second once there are enough clips to fill batches; under
``batched_min_seconds`` of audio the sequential path is used (measured: tests/benchmarks/
bench_transcription.py and docs/decisions/0007-batched-transcription.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from xenios_ai.transcription.audio import SAMPLE_RATE

if TYPE_CHECKING:
    from xenios_ai.transcription.audio import Samples
    from xenios_ai.transcription.models import TranscriptionOptions

Mode = Literal["sequential", "batched"]

#: Longest clip decoded at once: Whisper's input is 30 s.
CLIP_SECONDS: Final = 30.0
#: Pauses up to this long stay inside a clip; longer silences are cut out. The sequential path's VAD
#: keeps pauses up to 2 s too (faster-whisper's default ``min_silence_duration_ms``).
MAX_GAP_SECONDS: Final = 2.0


@dataclass(frozen=True, kw_only=True)
class DecodingPlan:
    """How to decode: the mode, the beam, the batch (batched only), whether words are aligned, VAD."""

    mode: Mode
    beam_size: int
    batch_size: int
    word_timestamps: bool
    """Align words (cross-attention + DTW): always when sequential, only when asked for when batched."""
    vad: bool
    language: str | None
    initial_prompt: str | None = None
    hotwords: str | None = None


def plan(
    options: TranscriptionOptions,
    *,
    seconds: float,
    language: str | None,
    beam_size: int,
    batch_size: int,
    batched_min_seconds: float,
) -> DecodingPlan:
    """The decoding for ``seconds`` of audio: batched from ``batched_min_seconds`` on (when
    ``batch_size`` > 1), sequential below."""
    batched = batch_size > 1 and seconds >= batched_min_seconds
    return DecodingPlan(
        mode="batched" if batched else "sequential",
        beam_size=beam_size,
        batch_size=batch_size if batched else 1,
        word_timestamps=options.word_timestamps or not batched,
        vad=options.vad,
        language=language,
        initial_prompt=options.initial_prompt,
        hotwords=options.hotwords,
    )


def decode(model: Any, samples: Samples, how: DecodingPlan) -> tuple[Iterator[Any], Any]:
    """(faster-whisper segments, lazily, with times in seconds from the start of ``samples``; its
    ``TranscriptionInfo``, or None when a batched decode found no speech) for one 16 kHz mono array."""
    if how.mode == "sequential":
        segments, info = model.transcribe(
            samples,
            language=how.language,
            beam_size=how.beam_size,
            word_timestamps=how.word_timestamps,
            vad_filter=how.vad,
            initial_prompt=how.initial_prompt,
            hotwords=how.hotwords,
        )
        return segments, info
    found = speech_clips(samples) if how.vad else fixed_clips(len(samples) / SAMPLE_RATE)
    if not found:
        return iter(()), None
    from faster_whisper import BatchedInferencePipeline  # noqa: PLC0415 - heavy engine: workers only

    segments, info = BatchedInferencePipeline(model).transcribe(
        samples,
        language=how.language,
        beam_size=how.beam_size,
        batch_size=how.batch_size,
        word_timestamps=how.word_timestamps,
        without_timestamps=False,  # segments at Whisper's timestamps, not one per clip
        clip_timestamps=found,
        initial_prompt=how.initial_prompt,
        hotwords=how.hotwords,
    )
    return segments, info


def speech_clips(samples: Samples) -> list[dict[str, float]]:
    """Clips (``start``/``end`` seconds) of at most ``CLIP_SECONDS`` covering the speech Silero VAD finds,
    neighbours joined with the pause between them when it is at most ``MAX_GAP_SECONDS``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps  # noqa: PLC0415 - workers only

    speech = get_speech_timestamps(
        samples, VadOptions(max_speech_duration_s=CLIP_SECONDS, min_silence_duration_ms=160)
    )
    return join_speech([(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in speech])


def join_speech(speech: list[tuple[float, float]]) -> list[dict[str, float]]:
    """``speech`` (start, end) spans in order, joined into clips of at most ``CLIP_SECONDS``."""
    clips: list[list[float]] = []
    for start, end in speech:
        if clips and end - clips[-1][0] <= CLIP_SECONDS and start - clips[-1][1] <= MAX_GAP_SECONDS:
            clips[-1][1] = end
        else:
            clips.append([start, min(end, start + CLIP_SECONDS)])
    return [{"start": start, "end": end} for start, end in clips]


def fixed_clips(seconds: float) -> list[dict[str, float]]:
    """Consecutive ``CLIP_SECONDS`` clips covering ``seconds`` (no VAD: everything is decoded)."""
    clips = []
    start = 0.0
    while start < seconds:
        clips.append({"start": start, "end": min(seconds, start + CLIP_SECONDS)})
        start += CLIP_SECONDS
    return clips
