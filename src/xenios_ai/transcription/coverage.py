"""No speech lost silently: what a window's decode left out of the speech VAD found, decoded again, and
what is still missing reported (`TranscriptWarning`).

Why speech went missing (issue 20, a recording switching from English to German at 20 s, tiny.en): the
English-only model loops on German ("Lift more good." over and over), so every temperature of
faster-whisper's fallback fails its compression-ratio check; at the last one the average log-probability
is below -1 and the no-speech probability above 0.6, and faster-whisper then skips the *whole* 30 s window
(``seek += segment_size``), English after the switch included, without a trace (with or without VAD).
Batched decoding has no fallback: the loop is kept as text and Whisper never reaches the English later
in the clip. So, per window:

1. Segments Whisper itself would not trust are dropped: a compression ratio over 2.4 (a loop) or an
   average log-probability below -1 (faster-whisper's own thresholds; batched, per clip).
2. Speech (Silero VAD) that no kept segment covers, in pieces of at least ``RETRY_SECONDS``, is decoded
   again, each utterance as a clip of its own, so the English after a switch is found again.
3. Speech still uncovered (at least ``GAP_SECONDS``) is a ``speech_not_transcribed`` range. With an
   English-only model, re-decoded speech that stays doubtful (average log-probability below
   ``DOUBT_LOGPROB``) for at least ``LANGUAGE_SECONDS`` is ``language_unsupported_by_model``: such a model
   cannot tell which language it is (no language tokens), and no multilingual model is available offline,
   so the warning says ``language: null`` and ``detection: "english_model_confidence"``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from xenios_ai.transcription.decoding import decode_clips
from xenios_ai.transcription.models import TimeRange, TranscriptWarning

if TYPE_CHECKING:
    from xenios_ai.transcription.audio import Samples
    from xenios_ai.transcription.decoding import DecodingPlan

Span = tuple[float, float]
"""(start, end) seconds."""

#: faster-whisper's thresholds: a decode over this compression ratio loops, under this log-prob is noise.
MAX_COMPRESSION: Final = 2.4
MIN_LOGPROB: Final = -1.0
#: Uncovered speech at least this long is decoded again.
RETRY_SECONDS: Final = 1.0
#: Speech still uncovered at least this long (pieces under 1 s apart joined) is reported.
GAP_SECONDS: Final = 1.0
#: Re-decoded speech under this average log-probability is doubtful (English with tiny.en: -0.3 to -0.7
#: per utterance; German: -0.7 to -1.5, measured on espeak-ng voices); reported as another language
#: from ``LANGUAGE_SECONDS`` of it (pieces under 2 s apart joined).
DOUBT_LOGPROB: Final = -0.8
LANGUAGE_SECONDS: Final = 4.0
#: Segments are taken to cover this much speech past their ends (Whisper's times are rounded).
SLACK_SECONDS: Final = 0.25


@dataclass
class Checked:
    """One window checked: the segments to keep (faster-whisper's, in order) and, in seconds from the
    window's start, the speech found, the speech left out and the doubtful speech."""

    segments: list[Any]
    speech: list[Span]
    missing: list[Span] = field(default_factory=list)
    doubtful: list[Span] = field(default_factory=list)


def check(
    model: Any, samples: Samples, how: DecodingPlan, segments: list[Any], speech: list[Span]
) -> Checked:
    """Keep ``segments`` Whisper trusts, decode the speech they leave out again, report what is left."""
    kept = trusted(segments, how.mode == "batched")
    missing = [s for s in subtract(speech, covered(kept)) if s[1] - s[0] >= RETRY_SECONDS]
    doubtful: list[Span] = []
    if missing:
        retried = decode_clips(model, samples, how, pieces(missing, speech))
        again = trusted(retried, batched=True)
        kept = sorted(kept + again, key=lambda s: float(s.start))
        doubtful = [
            (float(s.start), float(s.end))
            for s in retried
            if s not in again or float(s.avg_logprob) < DOUBT_LOGPROB
        ]
        missing = subtract(missing, covered(again))
    gaps = [s for s in join(missing, GAP_SECONDS) if s[1] - s[0] >= GAP_SECONDS]
    return Checked(kept, speech, gaps, join(doubtful, 2.0))


def trusted(segments: list[Any], batched: bool) -> list[Any]:
    """``segments`` but those of a decode Whisper would not trust (a loop, or too unlikely). Sequential
    segments carry their decode's figures; batched ones share their clip's (``seek``) log-probability, and
    a loop shows in the clip's text as a whole."""
    if not batched:
        return [s for s in segments if _trusted(float(s.avg_logprob), float(s.compression_ratio))]
    clips: dict[int, list[Any]] = {}
    for segment in segments:
        clips.setdefault(int(segment.seek), []).append(segment)
    kept = []
    for clip in clips.values():
        text = " ".join(s.text.strip() for s in clip)
        if _trusted(float(clip[0].avg_logprob), compression_ratio(text)):
            kept += clip
    return sorted(kept, key=lambda s: float(s.start))


def _trusted(avg_logprob: float, compression: float) -> bool:
    return avg_logprob >= MIN_LOGPROB and compression <= MAX_COMPRESSION


def compression_ratio(text: str) -> float:
    """As faster-whisper computes it: bytes over zlib-compressed bytes (a loop compresses well)."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def covered(segments: Sequence[Any]) -> list[Span]:
    return join([(float(s.start) - SLACK_SECONDS, float(s.end) + SLACK_SECONDS) for s in segments], 0.0)


def pieces(missing: list[Span], speech: list[Span]) -> list[dict[str, float]]:
    """Clips to decode again: each VAD utterance's part inside ``missing``, at most 30 s."""
    clips = []
    for start, end in intersect(speech, missing):
        at = start
        while end - at >= 0.2:
            clips.append({"start": at, "end": min(end, at + 30.0)})
            at += 30.0
    return clips


def join(spans: Sequence[Span], gap: float) -> list[Span]:
    """``spans`` sorted and merged where under ``gap`` seconds apart."""
    out: list[list[float]] = []
    for start, end in sorted(spans):
        if out and start - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def subtract(spans: list[Span], minus: list[Span]) -> list[Span]:
    """The parts of ``spans`` outside every span of ``minus`` (both sorted, ``minus`` disjoint)."""
    out = []
    for start, end in spans:
        cursor = start
        for a, b in minus:
            if b <= cursor or a >= end:
                continue
            if a > cursor:
                out.append((cursor, a))
            cursor = max(cursor, b)
        if cursor < end:
            out.append((cursor, end))
    return out


def intersect(spans: list[Span], within: list[Span]) -> list[Span]:
    return [(max(a, c), min(b, d)) for a, b in spans for c, d in within if min(b, d) > max(a, c)]


def seconds(spans: Sequence[Span]) -> float:
    return sum(end - start for start, end in spans)


class Account:
    """The checked windows of one file, in absolute seconds: the result's ``speech_seconds``,
    ``transcribed_seconds`` and ``warnings``."""

    def __init__(self, *, english_only: bool, model: str) -> None:
        self.english_only = english_only
        self.model = model
        self.speech: list[Span] = []
        self.covered: list[Span] = []
        self.missing: list[Span] = []
        self.doubtful: list[Span] = []

    def add(self, checked: Checked, offset: float) -> None:
        def moved(spans: list[Span]) -> list[Span]:
            return [(a + offset, b + offset) for a, b in spans]

        self.speech += moved(checked.speech)
        self.covered += moved(covered(checked.segments))
        self.missing += moved(checked.missing)
        self.doubtful += moved(checked.doubtful)

    @property
    def speech_seconds(self) -> float:
        return round(seconds(join(self.speech, 0.0)), 2)

    @property
    def transcribed_seconds(self) -> float:
        return round(seconds(intersect(join(self.speech, 0.0), join(self.covered, 0.0))), 2)

    def warnings(self) -> list[TranscriptWarning]:
        found = []
        missing = join(self.missing, GAP_SECONDS)
        if missing:
            found.append(
                TranscriptWarning(
                    code="speech_not_transcribed",
                    message=f"{seconds(missing):.1f} s of speech in {len(missing)} range(s) could not be "
                    "transcribed (decoded twice): the transcript has nothing there.",
                    ranges=_ranges(missing),
                    seconds=round(seconds(missing), 2),
                )
            )
        doubtful = [s for s in join(self.doubtful, 2.0) if s[1] - s[0] >= LANGUAGE_SECONDS]
        if doubtful and self.english_only:
            found.append(
                TranscriptWarning(
                    code="language_unsupported_by_model",
                    message=f"{seconds(doubtful):.1f} s of speech is most likely not English: the "
                    f"English-only model {self.model} cannot transcribe it (any text there is not what "
                    "was said) nor tell which language it is; set WHISPER_MODEL to a multilingual model.",
                    ranges=_ranges(doubtful),
                    seconds=round(seconds(doubtful), 2),
                    detection="english_model_confidence",
                )
            )
        return found


def _ranges(spans: list[Span]) -> list[TimeRange]:
    return [TimeRange(round(a, 2), round(b, 2)) for a, b in spans]
