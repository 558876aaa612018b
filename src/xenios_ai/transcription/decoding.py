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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
#: A clip whose segments end more than this before the clip does is decoded again from there.
TAIL_SECONDS: Final = 1.5


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


@dataclass
class Decoded:
    """What `decode` gives: faster-whisper segments, lazily, with times in seconds from the start of the
    array; and its ``TranscriptionInfo`` (language), set once the first segments are out (None when a
    batched decode found no speech)."""

    segments: Iterator[Any]
    info: Any = None
    speech: list[tuple[float, float]] = field(default_factory=list)
    """What Silero VAD hears as speech, (start, end) seconds, whether or not ``vad`` is on."""


def decode(
    model: Any,
    samples: Samples,
    how: DecodingPlan,
    *,
    checkpoint: Callable[[float], None] | None = None,
    first_batch: int | None = None,
) -> Decoded:
    """Decode one 16 kHz mono array as ``how`` says.

    Batched, ``checkpoint`` is called with the start (seconds into ``samples``) of each batch before it is
    decoded (progress; a cancel raises there), and the batches grow from ``first_batch`` clips (default:
    ``how.batch_size``) doubling up to ``how.batch_size``, so the first progress comes as soon as one clip
    is decoded. Sequential decoding yields segment by segment and takes no checkpoint.
    """
    speech = speech_spans(samples)
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
        return Decoded(segments, info, speech)
    clips = join_speech(speech) if how.vad else fixed_clips(len(samples) / SAMPLE_RATE)
    decoded = Decoded(iter(()), speech=speech)
    if clips:
        decoded.segments = _batches(
            model, samples, how, clips, decoded, checkpoint, first_batch or how.batch_size
        )
    return decoded


def _batches(
    model: Any,
    samples: Samples,
    how: DecodingPlan,
    clips: list[dict[str, float]],
    decoded: Decoded,
    checkpoint: Callable[[float], None] | None,
    size: int,
) -> Iterator[Any]:
    from faster_whisper import BatchedInferencePipeline  # noqa: PLC0415 - heavy engine: workers only

    pipeline = BatchedInferencePipeline(model)
    language = how.language

    def run(group: list[dict[str, float]]) -> list[Any]:
        nonlocal language
        segments, info = pipeline.transcribe(
            samples,
            language=language,
            beam_size=how.beam_size,
            batch_size=len(group),
            word_timestamps=how.word_timestamps,
            without_timestamps=False,  # segments at Whisper's timestamps, not one per clip
            clip_timestamps=group,
            initial_prompt=how.initial_prompt,
            hotwords=how.hotwords,
        )
        found = list(segments)
        if decoded.info is None:
            decoded.info = info
            language = info.language
        return found

    done = 0
    while done < len(clips):
        group = clips[done : done + max(1, size)]
        if checkpoint is not None:
            checkpoint(group[0]["start"])
        found = run(group)
        tails = dropped_tails(group, found)
        if tails:
            found = sorted(found + run(tails), key=lambda segment: float(segment.start))
        yield from found
        done += len(group)
        size = min(size * 2, how.batch_size)


def dropped_tails(clips: list[dict[str, float]], segments: list[Any]) -> list[dict[str, float]]:
    """The ends of ``clips`` that their ``segments`` leave out (more than ``TAIL_SECONDS``), to decode again.

    Whisper may stop before the end of a clip; decoding sequentially it would go on from its last
    timestamp in the next window, but a clip is decoded once: the rest is decoded as a clip of its own.
    A clip without any segment is left alone (Whisper heard no speech in it).
    """
    tails = []
    for clip in clips:
        ends = [float(s.end) for s in segments if clip["start"] <= float(s.start) < clip["end"]]
        if ends and clip["end"] - max(ends) > TAIL_SECONDS:
            tails.append({"start": max(ends), "end": clip["end"]})
    return tails


def decode_clips(model: Any, samples: Samples, how: DecodingPlan, clips: list[dict[str, float]]) -> list[Any]:
    """``clips`` of ``samples`` decoded each on its own (batched, whatever ``how.mode``; words as ``how``
    says), for speech a first decode left out (`coverage`)."""
    from faster_whisper import BatchedInferencePipeline  # noqa: PLC0415 - heavy engine: workers only

    pipeline = BatchedInferencePipeline(model)
    found: list[Any] = []
    size = max(how.batch_size, 4)
    for done in range(0, len(clips), size):
        group = clips[done : done + size]
        segments, _info = pipeline.transcribe(
            samples,
            language=how.language,
            beam_size=how.beam_size,
            batch_size=len(group),
            word_timestamps=how.word_timestamps,
            without_timestamps=False,
            clip_timestamps=group,
            initial_prompt=how.initial_prompt,
            hotwords=how.hotwords,
        )
        found += segments
    return found


def speech_spans(samples: Samples) -> list[tuple[float, float]]:
    """(start, end) seconds of the speech Silero VAD finds, each at most ``CLIP_SECONDS``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps  # noqa: PLC0415 - workers only

    speech = get_speech_timestamps(
        samples, VadOptions(max_speech_duration_s=CLIP_SECONDS, min_silence_duration_ms=160)
    )
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in speech]


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
