"""Speaker-attributed transcription: each channel of a recording, or each person's track, transcribed on its
own with the worker's `Transcriber` and merged into one timeline (see `speakers` and `channels`).

`transcribe_recording` takes one file and its ``channels`` option (``auto``: separate when two or more
channels carry different sound); `transcribe_tracks` takes one file per person with start offsets. A mono
recording (or ``mix``) is transcribed exactly as before, with no speakers, unless a `Diarizer` is given.

Cost: one extra decoding pass writes the sources as 16 kHz WAV files (in a temporary folder) and measures
their levels; each source's stretches that only carry another's speech are muted, so the transcriber's VAD
skips them and the Whisper work is about that of the mono mix.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from loguru import logger

from xenios_ai.transcription import audio, channels
from xenios_ai.transcription.models import (
    MAX_SPEAKERS,
    SEQUENTIAL,
    ProgressCallback,
    SpeakerSource,
    TimeRange,
    TranscriptionOptions,
    TranscriptionResult,
)
from xenios_ai.transcription.speakers import (
    Diarizer,
    Heard,
    HeardWord,
    drop_cross_talk,
    label_by_turns,
    merge,
    speaker_names,
    speaker_stats,
    split_at_pauses,
)

Transcribe = Callable[[Path, TranscriptionOptions, ProgressCallback | None], TranscriptionResult]
"""``Transcriber.transcribe``: (audio file, options, progress) -> result."""


def transcribe_recording(
    transcribe: Transcribe,
    path: Path,
    options: TranscriptionOptions,
    progress: ProgressCallback | None = None,
    *,
    max_seconds: float | None = None,
    diarizer: Diarizer | None = None,
) -> TranscriptionResult:
    """One recording: its channels as speakers when ``options.channels`` says so (see the module)."""
    probed = channels.probe(path) if options.channels != "mix" else None
    if probed is None or probed[0] < 2:
        return _mixed(transcribe, path, options, progress, diarizer)
    if probed[0] > MAX_SPEAKERS and options.channels == "auto":
        return _mixed(transcribe, path, options, progress, diarizer)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xenios-channels-") as folder:
        split = channels.split(
            path, Path(folder), max_seconds=max_seconds, progress=_reading(progress, "the channels")
        )
        if options.channels == "auto" and split.copies:
            logger.info("{}: {} channels carry the same sound: transcribing the mix", path.name, probed[0])
            return _mixed(transcribe, path, options, progress, diarizer)
        sources = split.paths[:MAX_SPEAKERS]
        names = speaker_names(options.speakers, len(sources))
        active = set(split.active)
        return _attributed(
            transcribe, sources, split.power[:MAX_SPEAKERS], [0.0] * len(sources), names, options, progress,
            seconds=[split.seconds] * len(sources), source="channels",
            skip={i for i in range(len(sources)) if i not in active}, started=started,
        )  # fmt: skip


def transcribe_tracks(
    transcribe: Transcribe,
    paths: list[Path],
    options: TranscriptionOptions,
    progress: ProgressCallback | None = None,
    *,
    max_seconds: float | None = None,
) -> TranscriptionResult:
    """One file per person (each mixed to mono), placed at ``options.track_offsets`` on one timeline.

    The duration limit applies to each track and to their sum (the work to do).
    """
    started = time.perf_counter()
    offsets = list(options.track_offsets) or [0.0] * len(paths)
    names = speaker_names(options.speakers, len(paths))
    with tempfile.TemporaryDirectory(prefix="xenios-tracks-") as folder:
        sources, power, seconds = [], [], []
        for i, path in enumerate(paths):
            track = Path(folder) / f"track-{i + 1}"
            track.mkdir()
            reading = _reading(progress, f"track {i + 1} of {len(paths)}")
            split = channels.split(path, track, downmix=True, max_seconds=max_seconds, progress=reading)
            seconds.append(split.seconds)
            if max_seconds is not None and sum(seconds) > max_seconds:
                raise audio.too_long(sum(seconds), max_seconds)
            sources += split.paths
            power += split.power
        return _attributed(
            transcribe, sources, power, offsets, names, options, progress, seconds=seconds,
            source="tracks", skip=set(), started=started,
        )  # fmt: skip


def _mixed(
    transcribe: Transcribe,
    path: Path,
    options: TranscriptionOptions,
    progress: ProgressCallback | None,
    diarizer: Diarizer | None,
) -> TranscriptionResult:
    result = transcribe(path, options, progress)
    if diarizer is None or not result.segments:
        return result
    segments = label_by_turns(result.segments, diarizer(path))
    names = list(dict.fromkeys(s.speaker for s in segments if s.speaker is not None))
    return msgspec.structs.replace(
        result, segments=segments, speakers=speaker_stats(segments, names), speaker_source="diarizer"
    )


def _attributed(
    transcribe: Transcribe,
    sources: list[Path],
    power: list[channels.Floats],
    offsets: list[float],
    names: list[str],
    options: TranscriptionOptions,
    progress: ProgressCallback | None,
    *,
    seconds: list[float],
    source: SpeakerSource,
    skip: set[int],
    started: float,
) -> TranscriptionResult:
    """Transcribe ``sources`` (16 kHz mono WAVs, muted where cross-talk) but those in ``skip`` (silent),
    as the speakers ``names``, and merge them."""
    if len(skip) >= len(sources):
        skip = set()
    levels = channels.Levels(power, offsets)
    muted = sum(channels.mute(path, mask) for path, mask in zip(sources, levels.cross_talk(), strict=True))
    with_words = msgspec.structs.replace(options, word_timestamps=True)
    heard: list[Heard] = []
    results: list[TranscriptionResult] = []
    for i, path in enumerate(sources):
        if i in skip:
            continue
        result = transcribe(path, with_words, _share(progress, i, len(sources), names[i]))
        results.append(result)
        shift = offsets[i]
        for segment in result.segments:
            words = tuple(
                HeardWord(
                    w.start + shift,
                    w.end + shift,
                    w.word,
                    w.probability,
                    levels.over(w.start + shift, w.end + shift),
                )
                for w in segment.words or ()
            )
            start, end = segment.start + shift, segment.end + shift
            whole = Heard(i, start, end, segment.text, words, levels.over(start, end))
            heard += split_at_pauses(whole)
    kept = drop_cross_talk(heard)
    segments = merge(kept, names, with_words=options.word_timestamps)
    duration = max(offset + s for offset, s in zip(offsets, seconds, strict=True))
    spoken = max(results, key=lambda r: len(r.segments), default=None)
    elapsed = time.perf_counter() - started
    if progress is not None:
        progress(1.0, "done")
    logger.info(
        "transcribed {} {} as speakers: {} segments heard, {} kept, {:.1f} s of cross-talk muted, {:.2f} s",
        len(sources), source, len(heard), len(kept), muted, elapsed,
    )  # fmt: skip
    return TranscriptionResult(
        text=" ".join(s.text for s in segments),
        segments=segments,
        language=spoken.language if spoken else (options.language or "en"),
        language_probability=spoken.language_probability if spoken else 0.0,
        duration=round(duration, 3),
        model=results[0].model if results else "",
        real_time_factor=round(elapsed / duration, 4) if duration else 0.0,
        processing_seconds=round(elapsed, 3),
        speakers=speaker_stats(segments, names),
        speaker_source=source,
        decoding=spoken.decoding if spoken else SEQUENTIAL,
        **_coverage(results, [offsets[i] for i in range(len(sources)) if i not in skip]),
    )


def _coverage(results: list[TranscriptionResult], offsets: list[float]) -> dict[str, Any]:
    """The sources' speech and transcribed seconds added up, and their warnings on the common timeline."""
    warnings = [
        msgspec.structs.replace(
            w, ranges=[TimeRange(round(r.start + shift, 2), round(r.end + shift, 2)) for r in w.ranges]
        )
        for result, shift in zip(results, offsets, strict=True)
        for w in result.warnings
    ]
    if all(r.speech_seconds is None for r in results) and not warnings:
        return {}
    return {
        "speech_seconds": round(sum(r.speech_seconds or 0.0 for r in results), 2),
        "transcribed_seconds": round(sum(r.transcribed_seconds or 0.0 for r in results), 2),
        "warnings": warnings,
    }


def _reading(progress: ProgressCallback | None, what: str) -> Callable[[float], None]:
    """`channels.split`'s progress (seconds decoded) as progress 0 with a message; called once at once."""

    def report(seconds: float) -> None:
        if progress is not None:
            progress(0.0, f"reading {what}: {seconds:.0f} s")

    report(0.0)
    return report


def _share(progress: ProgressCallback | None, index: int, count: int, name: str) -> ProgressCallback | None:
    """Progress of source ``index`` of ``count`` as part of the whole (below 1 until all are done)."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(min(0.99, (index + fraction) / count), f"{name}: {message}")

    return report
