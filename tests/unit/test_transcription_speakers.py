"""Who said what, with the real model (tiny.en): channels with -20 dB bleed, channels that are copies, two
tracks with an offset, and a diarizer on the mono mix. The recordings are built per session from the
dialogue's text (tests/support/speakers_audio.py: espeak-ng, sox)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tests.support.speakers_audio import TRACK_OFFSET, Dialogue
from tests.unit.test_transcription import normalise, wer
from xenios_ai.errors import LimitExceeded
from xenios_ai.transcription import Transcriber, TranscriptionOptions, TranscriptionResult
from xenios_ai.transcription.models import transcript_text
from xenios_ai.transcription.separate import transcribe_recording, transcribe_tracks
from xenios_ai.transcription.speakers import SpeakerTurn

pytestmark = pytest.mark.engine  # builds the engine: not in `just test-fast`

NAMES = ["Coach", "Client"]


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber()


def attribution(result: TranscriptionResult, dialogue: Dialogue) -> float:
    """Share of the transcript's words whose speaker is the one whose line is at the word's time."""
    right = total = 0
    for segment in result.segments:
        for word in segment.words or []:
            total += 1
            right += word.speaker == dialogue.speaker_at((word.start + word.end) / 2)
    return right / total if total else 0.0


def per_speaker_wer(result: TranscriptionResult, dialogue: Dialogue) -> dict[str, float]:
    said = {name: " ".join(s.text for s in result.segments if s.speaker == name) for name in NAMES}
    return {name: wer(dialogue.text_of(name), said[name]) for name in NAMES}


def assert_no_sentence_twice(result: TranscriptionResult, dialogue: Dialogue) -> None:
    """Every line of the dialogue is in the transcript once: its words appear once, not on two channels."""
    heard = normalise(result.text)
    for line in dialogue.lines:
        first_words = " ".join(normalise(line.text)[2:5])  # three words from inside the line
        assert " ".join(heard).count(first_words) == 1, (line.text, result.text)


@pytest.fixture(scope="module")
def bleed(transcriber: Transcriber, two_voices: Dialogue) -> tuple[TranscriptionResult, list[float]]:
    progress: list[float] = []
    options = TranscriptionOptions(speakers=NAMES, word_timestamps=True)
    result = transcribe_recording(
        transcriber.transcribe, two_voices.path("bleed.wav"), options, lambda f, _m: progress.append(f)
    )
    return result, progress


def test_each_channel_is_its_speaker_and_the_bleed_is_not_transcribed_twice(
    bleed: tuple[TranscriptionResult, list[float]], two_voices: Dialogue
) -> None:
    result, progress = bleed
    accuracy, errors = attribution(result, two_voices), per_speaker_wer(result, two_voices)
    print(
        f"\nbleed fixture: attribution {accuracy:.1%} of words, WER {errors}, RTF {result.real_time_factor}"
    )
    assert result.speaker_source == "channels"
    assert accuracy >= 0.95
    assert all(error <= 0.15 for error in errors.values()), result.segments
    assert_no_sentence_twice(result, two_voices)
    for segment in result.segments:
        assert segment.speaker == two_voices.speaker_at((segment.start + segment.end) / 2), segment
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    assert [s.start for s in result.segments] == sorted(s.start for s in result.segments)
    stats = {s.name: s for s in result.speakers or []}
    assert list(stats) == NAMES
    for name in NAMES:
        spoken = sum(line.end - line.start for line in two_voices.lines if line.speaker == name)
        assert stats[name].talk_seconds == pytest.approx(spoken, abs=1.5)
        assert stats[name].word_count == pytest.approx(len(normalise(two_voices.text_of(name))), abs=3)
    assert result.duration == pytest.approx(two_voices.duration, abs=0.05)
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    labelled = transcript_text(msgspec.to_builtins(result))
    assert labelled is not None
    assert [line.split(":")[0] for line in labelled.splitlines()] == [
        line.speaker for line in two_voices.lines
    ]


def test_channels_that_are_copies_are_transcribed_once_without_speakers(
    transcriber: Transcriber, two_voices: Dialogue
) -> None:
    options = TranscriptionOptions(speakers=NAMES)
    result = transcribe_recording(transcriber.transcribe, two_voices.path("copies.wav"), options)
    assert (result.speakers, result.speaker_source) == (None, None)
    assert all(s.speaker is None for s in result.segments)
    assert wer(" ".join(line.text for line in two_voices.lines), result.text) <= 0.15


def test_two_tracks_with_an_offset_merge_into_one_timeline(
    transcriber: Transcriber, two_voices: Dialogue
) -> None:
    options = TranscriptionOptions(speakers=NAMES, track_offsets=[0.0, TRACK_OFFSET], word_timestamps=True)
    paths = [two_voices.path("coach.wav"), two_voices.path("client_track.wav")]
    result = transcribe_tracks(transcriber.transcribe, paths, options)
    accuracy, errors = attribution(result, two_voices), per_speaker_wer(result, two_voices)
    print(f"\ntwo tracks: attribution {accuracy:.1%} of words, WER {errors}")
    assert result.speaker_source == "tracks"
    assert accuracy >= 0.95
    assert all(error <= 0.15 for error in errors.values())
    assert [s.speaker for s in result.segments] == [line.speaker for line in two_voices.lines]
    for segment, line in zip(result.segments, two_voices.lines, strict=True):
        assert segment.start == pytest.approx(line.start, abs=0.6), (segment, line)
    assert result.duration == pytest.approx(two_voices.duration, abs=0.05)

    with pytest.raises(LimitExceeded) as raised:  # each track is under 20 s, together they are not
        transcribe_tracks(transcriber.transcribe, paths, options, max_seconds=20)
    assert raised.value.code == "audio_too_long"


def test_a_diarizer_labels_the_mono_mix(transcriber: Transcriber, two_voices: Dialogue) -> None:
    """The seam: a diarizer's turns (here the script's) attribute the mono transcript."""

    def diarizer(path: Path) -> list[SpeakerTurn]:
        assert path == two_voices.path("mono.wav")
        return [SpeakerTurn(line.start - 0.25, line.end + 0.25, line.speaker) for line in two_voices.lines]

    mono = two_voices.path("mono.wav")
    result = transcribe_recording(
        transcriber.transcribe, mono, TranscriptionOptions(word_timestamps=True), diarizer=diarizer
    )
    assert result.speaker_source == "diarizer"
    assert [s.name for s in result.speakers or []] == NAMES
    assert attribution(result, two_voices) >= 0.9
