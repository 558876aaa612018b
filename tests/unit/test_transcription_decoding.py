"""Batched and sequential decoding, the result's `decoding`, transcribing an array, and thread choice.

The engine tests share one `Transcriber` for the module (bundled tiny.en) and switch its public
``batched_min_seconds`` per test; the clip and thread rules are plain functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import NamedTuple

import msgspec
import pytest

from tests.unit.test_transcription import (
    AUDIO,
    META,
    REFERENCE,
    assert_timeline,
    dialogue_samples,
    normalise,
    wer,
)
from xenios_ai.errors import JobCancelled
from xenios_ai.settings_load import load_settings
from xenios_ai.transcription import Transcriber, TranscriptionJobResult, TranscriptionOptions
from xenios_ai.transcription.decoding import (
    CLIP_SECONDS,
    MAX_GAP_SECONDS,
    TAIL_SECONDS,
    dropped_tails,
    fixed_clips,
    join_speech,
)
from xenios_ai.transcription.model import WORKER_PROCESSES_ENV, choose_threads, usable_cores

# --- clips and threads (no engine) -------------------------------------------------------------------


def test_speech_is_joined_into_clips_of_at_most_30_s_that_never_hold_a_long_pause() -> None:
    speech = [(0.5, 4.0), (4.5, 9.0), (9.5, 28.0), (28.4, 33.0), (40.0, 45.0), (45.1, 45.9)]
    clips = join_speech(speech)
    assert clips == [
        {"start": 0.5, "end": 28.0},  # 28.4-33.0 would make it 32.5 s long
        {"start": 28.4, "end": 33.0},  # 40.0 is 7 s later: a silence is never decoded
        {"start": 40.0, "end": 45.9},
    ]
    for clip in clips:
        assert clip["end"] - clip["start"] <= CLIP_SECONDS
    assert MAX_GAP_SECONDS <= 2.0
    assert join_speech([]) == []
    assert fixed_clips(65) == [
        {"start": 0.0, "end": 30.0},
        {"start": 30.0, "end": 60.0},
        {"start": 60.0, "end": 65},
    ]


class _Seg(NamedTuple):
    start: float
    end: float


def test_a_clip_whose_segments_stop_early_is_decoded_again_from_there() -> None:
    clips = [{"start": 0.0, "end": 26.0}, {"start": 30.0, "end": 40.0}, {"start": 45.0, "end": 50.0}]
    segments = [_Seg(0.1, 4.0), _Seg(4.0, 21.0), _Seg(30.2, 39.0)]  # 21-26 lost; 45-50 no segment at all
    assert dropped_tails(clips, segments) == [{"start": 21.0, "end": 26.0}]
    assert 39.0 + TAIL_SECONDS > 40.0  # a word's worth missing at the end is not decoded again
    assert dropped_tails(clips[:1], [_Seg(0.1, 25.0)]) == []


def test_threads_come_from_the_setting_or_the_cores_shared_by_the_worker_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert choose_threads(3) == 3
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    monkeypatch.delenv(WORKER_PROCESSES_ENV, raising=False)
    assert choose_threads(0) == cores
    monkeypatch.setenv(WORKER_PROCESSES_ENV, str(cores * 2))
    assert choose_threads(0) == 1  # never 0
    assert choose_threads(0, processes=1) == cores
    assert load_settings({}, dotenv=False).whisper_threads == 0


# --- the engine --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber()


@pytest.fixture
def batched(transcriber: Transcriber) -> Iterator[Transcriber]:
    """The module's transcriber batching every file, however short; put back after the test."""
    threshold, size = transcriber.batched_min_seconds, transcriber.batch_size
    transcriber.batched_min_seconds, transcriber.batch_size = 0, 8
    yield transcriber
    transcriber.batched_min_seconds, transcriber.batch_size = threshold, size


@pytest.mark.engine
def test_batched_decoding_keeps_the_text_and_times_and_says_so(batched: Transcriber) -> None:
    result = batched.transcribe(AUDIO / "dialogue.ogg")
    assert wer(REFERENCE, result.text) <= 0.15, result.text
    assert_timeline(result)
    assert all(segment.words is None for segment in result.segments)
    assert result.decoding.mode == "batched"
    assert result.decoding.word_timestamps is False  # not asked for, not needed: clips are contiguous audio
    assert result.decoding.batch_size == batched.batch_size > 1
    lines = META["lines"]
    assert result.segments[0].start == pytest.approx(lines[0]["start"], abs=0.7)
    assert result.segments[-1].end == pytest.approx(lines[-1]["end"], abs=0.7)
    encoded = json.loads(msgspec.json.encode(result))
    assert encoded["decoding"] == {"mode": "batched", "word_timestamps": False, "batch_size": 8, "windows": 1}


@pytest.mark.engine
def test_batched_words_when_asked_and_no_text_in_a_silence(batched: Transcriber) -> None:
    result = batched.transcribe(AUDIO / "silence_gap.ogg", TranscriptionOptions(word_timestamps=True))
    assert result.decoding.mode == "batched"
    assert result.decoding.word_timestamps is True
    gap = META["silence_gap"]
    assert_timeline(result)
    for segment in result.segments:
        assert segment.words
        in_first = segment.start >= gap["first_start"] - 1 and segment.end <= gap["first_end"] + 1
        in_second = segment.start >= gap["second_start"] - 1 and segment.end <= gap["second_end"] + 1
        assert in_first or in_second, segment
        for word in segment.words:
            assert segment.start - 0.01 <= word.start <= word.end <= segment.end + 0.01
    assert {"diary", "plan"} <= set(normalise(result.text))


@pytest.mark.engine
def test_batched_progress_comes_after_the_first_clip_and_a_cancel_stops_it(batched: Transcriber) -> None:
    calls: list[float] = []

    def cancel_in_the_second_half(fraction: float, message: str) -> None:
        calls.append(fraction)
        if fraction > 0.5:
            raise JobCancelled(code="cancelled")

    gap = META["silence_gap"]
    with pytest.raises(JobCancelled):
        batched.transcribe(AUDIO / "silence_gap.ogg", progress=cancel_in_the_second_half)
    duration = gap["second_end"] + 0.006
    assert calls[0] == 0  # the window starts
    # The first clip (speech before the gap) alone is the first batch: its segment is reported ...
    assert any(gap["first_start"] / duration < f <= (gap["first_end"] + 1) / duration for f in calls[1:-1])
    # ... and the second batch's checkpoint, before the clip after the gap is decoded, takes the cancel.
    assert calls[-1] == pytest.approx(gap["second_start"] / duration, abs=0.02)


@pytest.mark.engine
def test_short_audio_is_sequential_and_the_default_decoding_is_left_out(transcriber: Transcriber) -> None:
    assert transcriber.batched_min_seconds == 60
    samples = dialogue_samples()
    result = transcriber.transcribe_samples(samples)  # an array: as a file, times from its start
    assert wer(REFERENCE, result.text) <= 0.15, result.text
    assert result.duration == pytest.approx(META["duration"], abs=0.01)
    assert_timeline(result)
    assert result.decoding.mode == "sequential"
    assert result.decoding.word_timestamps is True  # always aligned when sequential (times across VAD cuts)
    assert "decoding" not in json.loads(msgspec.json.encode(result))
    # A job's result always states it (and its follow-ups).
    job = TranscriptionJobResult(**msgspec.structs.asdict(result))
    assert json.loads(msgspec.json.encode(job))["decoding"] == {
        "mode": "sequential",
        "word_timestamps": True,
        "batch_size": 1,
        "windows": 1,
    }


@pytest.mark.engine
def test_an_array_in_windows_keeps_absolute_times(transcriber: Transcriber) -> None:
    lines = META["lines"][:4]  # ~16 s: three windows of 5 s or so
    samples = dialogue_samples()[: int((lines[-1]["end"] + 0.3) * 16_000)]
    window = transcriber.window_seconds
    transcriber.window_seconds = 5
    try:
        result = transcriber.transcribe_samples(samples, TranscriptionOptions(word_timestamps=True))
    finally:
        transcriber.window_seconds = window
    assert result.decoding.windows >= 3
    assert wer(" ".join(line["text"] for line in lines), result.text) <= 0.25, result.text
    assert_timeline(result)
    assert result.segments[-1].start > 10  # later windows were shifted to absolute time
    found = {"".join(normalise(w.word)): w for s in result.segments for w in s.words or []}
    for key, line in (("morning", lines[0]), ("sunday", lines[1]), ("midnight", lines[3])):
        assert line["start"] - 0.7 <= found[key].start <= line["end"] + 0.3, (key, found.get(key))
