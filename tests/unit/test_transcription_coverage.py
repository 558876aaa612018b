"""No speech lost silently (issue 20): a recording that switches from English to German and back
(tests/support/languages_audio.py) keeps the English after the switch, in both decodings, and the result
states the speech found, the speech transcribed and what it could not transcribe (`coverage`)."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import pytest

from tests.support.languages_audio import Switch, build
from tests.unit.test_transcription import AUDIO, normalise
from xenios_ai.transcription import Transcriber, TranscriptionResult
from xenios_ai.transcription.coverage import join, subtract, trusted
from xenios_ai.transcription.models import TranscriptionJobResult

#: Words of the English said after the German (the last lines): lost before the fix.
LAST_WORDS = {"progress", "sleeping", "tired", "recovers", "night"}


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> Switch:
    return build(tmp_path_factory.mktemp("switch"))


@pytest.fixture(scope="module")
def results(switch: Switch) -> dict[str, TranscriptionResult]:
    batched, sequential = Transcriber(coverage=True), Transcriber(batch_size=1, coverage=True)
    return {"batched": batched.transcribe(switch.path), "sequential": sequential.transcribe(switch.path)}


def _words(result: TranscriptionResult, start: float, end: float) -> set[str]:
    text = " ".join(s.text for s in result.segments if start <= (s.start + s.end) / 2 <= end)
    return set(normalise(text))


@pytest.mark.parametrize("mode", ["batched", "sequential"])
def test_english_after_a_language_switch_is_transcribed(
    results: dict[str, TranscriptionResult], switch: Switch, mode: str
) -> None:
    result = results[mode]
    assert result.decoding.mode == mode
    last_english = switch.english[1]
    assert result.segments[-1].end >= last_english[1] - 2.0
    assert _words(result, last_english[0] - 1, last_english[1] + 1) >= LAST_WORDS


@pytest.mark.parametrize("mode", ["batched", "sequential"])
def test_speech_is_transcribed_or_reported(
    results: dict[str, TranscriptionResult], switch: Switch, mode: str
) -> None:
    result = results[mode]
    assert result.speech_seconds is not None
    assert result.transcribed_seconds is not None
    assert result.speech_seconds >= 50
    missing = sum(w.seconds for w in result.warnings if w.code == "speech_not_transcribed")
    assert result.transcribed_seconds + missing >= result.speech_seconds - 2.0
    for warning in result.warnings:  # what is missing or doubtful is the German, never the English
        for r in warning.ranges:
            assert switch.german[0] - 1.0 <= r.start < r.end <= switch.german[1] + 1.0, warning


def test_other_language_on_an_english_only_model_is_reported(
    results: dict[str, TranscriptionResult], switch: Switch
) -> None:
    """Sequentially, faster-whisper dropped the German and the English after it (its no-speech skip);
    decoded again, the English model's confidence over the German marks it as another language."""
    warnings = [w for w in results["sequential"].warnings if w.code == "language_unsupported_by_model"]
    assert len(warnings) == 1
    warning = warnings[0]
    assert warning.language is None
    assert warning.detection == "english_model_confidence"
    assert warning.seconds >= 4
    assert "tiny.en" in warning.message
    encoded = msgspec.json.decode(msgspec.json.encode(warning))
    assert encoded["ranges"][0].keys() == {"start", "end"}


def test_clean_english_has_no_warnings_and_full_coverage() -> None:
    result = Transcriber(coverage=True).transcribe(AUDIO / "dialogue.wav")
    assert result.warnings == []
    assert result.speech_seconds is not None
    assert result.transcribed_seconds is not None
    assert result.transcribed_seconds >= 0.9 * result.speech_seconds  # pauses under 1 s between segments
    job = msgspec.json.decode(msgspec.json.encode(TranscriptionJobResult(**msgspec.structs.asdict(result))))
    assert job["warnings"] == []
    assert job["speech_seconds"] == result.speech_seconds


def test_untrusted_decodes_are_dropped() -> None:
    def seg(start: float, text: str, logprob: float = -0.3, ratio: float = 1.5, seek: int = 0) -> object:
        return SimpleNamespace(
            start=start, end=start + 1, text=text, avg_logprob=logprob, compression_ratio=ratio, seek=seek
        )

    good, unlikely, loop = seg(0, "fine"), seg(1, "noise", logprob=-1.2), seg(2, "again", ratio=3.0)
    assert trusted([good, unlikely, loop], batched=False) == [good]
    looping = [seg(5 + i, "Lift more good.", seek=500) for i in range(20)]
    assert trusted([good, *looping], batched=True) == [good]


def test_span_arithmetic() -> None:
    assert join([(3, 4), (0, 1), (1.5, 2)], 0.5) == [(0, 2), (3, 4)]
    assert subtract([(0, 10)], [(1, 2), (5, 12)]) == [(0, 1), (2, 5)]
    assert subtract([(0, 1)], []) == [(0, 1)]
