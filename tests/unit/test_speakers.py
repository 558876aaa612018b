"""Speaker attribution without the model: merging per-speaker transcripts, cross-talk, the labelled text,
the transcript files, the options, and the channel analysis on real two-voice recordings (espeak-ng)."""

from __future__ import annotations

import uuid
import wave
from pathlib import Path

import msgspec
import numpy as np
import pytest

from tests.support.speakers_audio import TRACK_OFFSET, Dialogue
from xenios_ai.errors import InvalidInput, JobCancelled
from xenios_ai.jobs.blob_keys import is_upload_key, upload_key
from xenios_ai.transcription import channels
from xenios_ai.transcription.formats import render
from xenios_ai.transcription.job import check_files
from xenios_ai.transcription.models import (
    Segment,
    TranscriptionJobOptions,
    TranscriptionOptions,
    Word,
    transcript_text,
)
from xenios_ai.transcription.speakers import (
    Heard,
    HeardWord,
    SpeakerTurn,
    drop_cross_talk,
    label_by_turns,
    merge,
    speaker_names,
    speaker_stats,
    split_at_pauses,
)


def words(source: int, start: float, text: str, own: float, other: float, step: float = 0.4) -> Heard:
    """A segment of ``text`` on ``source`` (of two), one word every ``step`` s, at level ``own`` on its
    source and ``other`` on the other one."""
    heard = []
    for i, word in enumerate(text.split()):
        levels = (own, other) if source == 0 else (other, own)
        heard.append(HeardWord(start + i * step, start + i * step + 0.3, f" {word}", 0.9, levels))
    return Heard(source, heard[0].start, heard[-1].end, text, tuple(heard), heard[0].levels)


# --- cross-talk -----------------------------------------------------------------------------------------


def test_a_phrase_heard_on_two_sources_stays_where_it_is_loudest() -> None:
    coach = words(0, 1.0, "How did your training go", own=0.0, other=-21.0)
    bleed = words(1, 1.05, "How did your training go", own=-20.0, other=-1.0)
    client = words(1, 4.0, "It went well", own=-1.0, other=-22.0)
    kept = drop_cross_talk([coach, bleed, client])
    assert kept == [coach, client]


def test_a_misheard_copy_goes_by_its_level_and_a_real_interjection_stays() -> None:
    coach = words(0, 1.0, "Good morning Sarah how are you", own=0.0, other=-25.0)
    # The bleed was misheard ("Good mourning Zara ..."): no word matches, but it is 24 dB below the coach.
    misheard = words(1, 1.0, "Could mourning Zara now far shoe", own=-24.0, other=0.0)
    # The client says "yes" over the coach's last words: both are near their own speech levels.
    interjection = words(1, 2.6, "yes", own=-2.0, other=-1.0)
    kept = drop_cross_talk([coach, misheard, interjection])
    assert kept == [coach, interjection]


def test_only_the_duplicated_words_of_a_segment_go() -> None:
    """A source's segment that runs from cross-talk into its own speech keeps its own words."""
    coach = words(0, 0.0, "Great progress", own=0.0, other=-20.0)
    mixed = Heard(
        1,
        0.0,
        3.0,
        "Great progress Not so well",
        (
            HeardWord(0.0, 0.3, " Great", 0.9, (0.0, -20.0)),
            HeardWord(0.4, 0.7, " progress", 0.9, (0.0, -20.0)),
            HeardWord(2.0, 2.3, " Not", 0.9, (-30.0, 0.0)),
            HeardWord(2.4, 2.7, " so", 0.9, (-30.0, 0.0)),
            HeardWord(2.8, 3.0, " well", 0.9, (-30.0, 0.0)),
        ),
    )
    kept = drop_cross_talk([coach, mixed])
    assert kept[0] == coach
    assert (kept[1].text, kept[1].start, kept[1].end) == ("Not so well", 2.0, 3.0)


def test_a_tie_keeps_the_first_source_and_wordless_segments_count_as_one_word() -> None:
    a = Heard(0, 1.0, 2.0, "Thank you coach", levels=(0.0, 0.0))
    b = Heard(1, 1.1, 2.1, "thank you, coach!", levels=(0.0, 0.0))
    assert drop_cross_talk([a, b]) == [a]
    far = Heard(1, 5.0, 6.0, "Thank you coach", levels=(0.0, 0.0))  # said again later: not cross-talk
    assert drop_cross_talk([a, far]) == [a, far]


def test_segments_are_cut_where_their_words_pause() -> None:
    coach = words(0, 0.0, "Good morning", own=0, other=-30)
    later = words(0, 8.0, "Great progress", own=0, other=-30)
    joined = Heard(0, 0.0, later.end, "Good morning Great progress", coach.words + later.words)
    parts = split_at_pauses(joined)
    assert [(p.text, p.start, p.end) for p in parts] == [
        ("Good morning", 0.0, coach.end),
        ("Great progress", 8.0, later.end),
    ]
    assert split_at_pauses(coach) == [coach]


def test_merge_names_orders_and_counts() -> None:
    names = speaker_names(["Coach", "Client"], 3)
    assert names == ["Coach", "Client", "Speaker 3"]
    assert speaker_names(["Sam", "Sam"], 2) == ["Sam", "Sam (2)"]
    heard = [
        words(1, 4.0, "It went well", own=0, other=-30),
        words(0, 0.5, "How did it go", own=0, other=-30),
    ]
    segments = merge(heard, names, with_words=True)
    assert [(s.id, s.speaker, s.text) for s in segments] == [
        (0, "Coach", "How did it go"),
        (1, "Client", "It went well"),
    ]
    assert segments[0].words is not None
    assert {w.speaker for w in segments[0].words} == {"Coach"}
    assert merge(heard, names, with_words=False)[0].words is None
    stats = speaker_stats(segments, names)
    assert [(s.name, s.word_count) for s in stats] == [("Coach", 4), ("Client", 3), ("Speaker 3", 0)]
    assert stats[0].talk_seconds == pytest.approx(segments[0].end - segments[0].start)


def test_a_diarizer_s_turns_label_segments_and_words() -> None:
    segments = [
        Segment(id=0, start=0.0, end=3.0, text="Hello there", words=[Word(0.0, 1.0, " Hello", 0.9)]),
        Segment(id=1, start=3.2, end=6.0, text="Hi coach"),
        Segment(id=2, start=20.0, end=21.0, text="(nobody)"),
    ]
    turns = [SpeakerTurn(0.0, 3.1, "A"), SpeakerTurn(3.1, 6.5, "B")]
    labelled = label_by_turns(segments, turns)
    assert [s.speaker for s in labelled] == ["A", "B", None]
    assert labelled[0].words == [Word(0.0, 1.0, " Hello", 0.9, speaker="A")]


# --- the labelled text and the files ---------------------------------------------------------------------

RESULT = {
    "text": "Good morning. How are you? Fine, thanks. Great.",
    "segments": [
        {"id": 0, "start": 0.5, "end": 1.5, "text": "Good morning.", "speaker": "Coach"},
        {"id": 1, "start": 1.6, "end": 2.5, "text": "How are you?", "speaker": "Coach"},
        {"id": 2, "start": 3.0, "end": 4.25, "text": "Fine, thanks.", "speaker": "Client"},
        {"id": 3, "start": 3661.0, "end": 3662.5, "text": "Great <3 -->", "speaker": "Coach"},
    ],
}
PLAIN = {
    "text": "Good morning. How are you?",
    "segments": [
        {"id": 0, "start": 0.5, "end": 1.5, "text": "Good morning."},
        {"id": 1, "start": 1.6, "end": 2.5, "text": "How are you?"},
    ],
}


def test_analyses_get_one_labelled_line_per_turn_and_plain_text_without_speakers() -> None:
    assert transcript_text(RESULT) == (
        "Coach: Good morning. How are you?\nClient: Fine, thanks.\nCoach: Great <3 -->"
    )
    assert transcript_text(PLAIN) == PLAIN["text"]
    assert transcript_text(None) is None


def test_transcript_files_show_speakers_the_way_players_do() -> None:
    assert (
        render(RESULT, "txt")
        == "Coach: Good morning. How are you?\nClient: Fine, thanks.\nCoach: Great <3 -->\n"
    )
    assert render(RESULT, "vtt") == (
        "WEBVTT\n\n"
        "00:00:00.500 --> 00:00:01.500\n<v Coach>Good morning.\n\n"
        "00:00:01.600 --> 00:00:02.500\n<v Coach>How are you?\n\n"
        "00:00:03.000 --> 00:00:04.250\n<v Client>Fine, thanks.\n\n"
        "01:01:01.000 --> 01:01:02.500\n<v Coach>Great &lt;3 -&gt;\n"
    )
    assert render(RESULT, "srt").startswith(
        "1\n00:00:00,500 --> 00:00:01,500\nCoach: Good morning.\n\n2\n00:00:01,600 --> 00:00:02,500\n"
    )
    assert render(PLAIN, "srt") == (
        "1\n00:00:00,500 --> 00:00:01,500\nGood morning.\n\n2\n00:00:01,600 --> 00:00:02,500\nHow are you?\n"
    )
    assert render(PLAIN, "vtt").splitlines()[2:4] == ["00:00:00.500 --> 00:00:01.500", "Good morning."]


# --- options ---------------------------------------------------------------------------------------------


def test_speaker_options_are_checked() -> None:
    decode = msgspec.json.decode
    options = decode(b'{"speakers": ["Coach", "Client"], "channels": "separate"}', type=TranscriptionOptions)
    assert (options.speakers, options.channels, options.track_offsets) == (
        ["Coach", "Client"],
        "separate",
        [],
    )
    assert TranscriptionOptions().channels == "auto"
    for bad in (
        b'{"channels": "stereo"}',
        b'{"speakers": ["Coach: x"]}',
        b'{"speakers": ["<v Client>"]}',
        b'{"speakers": [""]}',
        b'{"speakers": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}',
        b'{"track_offsets": [-1]}',
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(bad, type=TranscriptionOptions)

    check_files(TranscriptionJobOptions(speakers=["A", "B"], track_offsets=[0, 2.5]), 2)
    check_files(TranscriptionJobOptions(speakers=["A", "B"]), 1)  # channel names
    for options, files in (
        (TranscriptionJobOptions(speakers=["A"]), 2),
        (TranscriptionJobOptions(track_offsets=[0.0]), 2),
        (TranscriptionJobOptions(track_offsets=[0.0]), 1),
    ):
        with pytest.raises(InvalidInput) as raised:
            check_files(options, files)
        assert raised.value.code == "invalid_options"


def test_every_uploaded_file_has_its_key() -> None:
    job = uuid.uuid4()
    assert upload_key(job) == f"jobs/{job}/upload"
    assert upload_key(job, 1) == f"jobs/{job}/upload-2"
    assert all(is_upload_key(job, upload_key(job, i)) for i in range(8))
    assert not is_upload_key(job, f"jobs/{job}/upload-x")
    assert not is_upload_key(job, f"jobs/{job}/document.json")
    assert not is_upload_key(uuid.uuid4(), upload_key(job))


# --- channels of real recordings ------------------------------------------------------------------------


def _samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_channels_that_differ_and_channels_that_are_copies(two_voices: Dialogue, tmp_path: Path) -> None:
    found = {}
    for name in ("stereo", "bleed", "copies", "mono"):
        folder = tmp_path / name
        folder.mkdir()
        found[name] = channels.split(two_voices.path(f"{name}.wav"), folder)
        assert found[name].seconds == pytest.approx(two_voices.duration, abs=0.05)
    assert [len(s.paths) for s in found.values()] == [2, 2, 2, 1]
    assert (found["stereo"].copies, found["bleed"].copies, found["copies"].copies) == (False, False, True)
    assert found["mono"].copies  # one channel: nothing to separate
    assert abs(found["stereo"].correlation[0][1]) < 0.05
    assert 0.1 < found["bleed"].correlation[0][1] < 0.5  # each channel carries the other at -20 dB
    probed = channels.probe(two_voices.path("bleed.wav"))
    assert probed is not None
    assert probed[0] == 2
    assert probed[1] == pytest.approx(two_voices.duration, abs=0.05)
    assert channels.probe(two_voices.path("../nothing.wav")) is None


def test_bleed_is_muted_where_the_other_speaker_talks(two_voices: Dialogue, tmp_path: Path) -> None:
    split = channels.split(two_voices.path("bleed.wav"), tmp_path)
    levels = channels.Levels(split.power, [0.0, 0.0])
    masks = levels.cross_talk()
    for path, mask in zip(split.paths, masks, strict=True):
        channels.mute(path, mask)
    coach, client = (_samples(p) for p in split.paths)
    for line in two_voices.lines:
        own, other = (coach, client) if line.speaker == "Coach" else (client, coach)
        middle = slice(int((line.start + 0.4) * 16_000), int((line.end - 0.4) * 16_000))
        assert np.abs(other[middle]).max() == 0, line  # the bleed of this line is gone
        assert np.abs(own[middle]).max() > 3000, line  # the speaker's own line is untouched
    # The coach's level over the coach's first line, relative to each channel's speech level: the coach
    # talks, the client's channel only has the bleed (~20 dB down).
    first = two_voices.lines[0]
    own_level, bleed_level = levels.over(first.start, first.end)
    assert own_level > -10
    assert bleed_level < own_level - 15


def test_a_track_recorded_later_lines_up_on_the_timeline(two_voices: Dialogue, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    coach = channels.split(two_voices.path("coach.wav"), tmp_path / "a", downmix=True)
    client = channels.split(two_voices.path("client_track.wav"), tmp_path / "b", downmix=True)
    assert client.seconds == pytest.approx(two_voices.duration - TRACK_OFFSET, abs=0.05)
    levels = channels.Levels([coach.power[0], client.power[0]], [0.0, TRACK_OFFSET])
    line = two_voices.lines[1]  # the client's first line, at its place on the coach's timeline
    coach_level, client_level = levels.over(line.start + 0.2, line.end - 0.2)
    assert client_level > -10 > coach_level
    with pytest.raises(InvalidInput) as raised:
        channels.split(two_voices.path("coach.wav"), tmp_path / "b", max_seconds=5)
    assert raised.value.code == "audio_too_long"


def test_reading_the_channels_reports_progress_and_stops_when_told(
    two_voices: Dialogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channels, "PROGRESS_EVERY", 5.0)
    seen: list[float] = []
    channels.split(two_voices.path("stereo.wav"), tmp_path, progress=seen.append)
    assert len(seen) == 3
    assert seen == sorted(seen)
    assert 5 <= seen[0] < 6

    def cancel(_seconds: float) -> None:
        raise JobCancelled("the job was cancelled")

    with pytest.raises(JobCancelled):
        channels.split(two_voices.path("stereo.wav"), tmp_path, progress=cancel)
