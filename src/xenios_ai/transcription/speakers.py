"""Who said what: merging per-speaker transcripts into one timeline, without cross-talk, and the seam for an
acoustic diarizer. Pure functions over segments; nothing here touches audio (that is `channels`).

A channel of a call recorder or a person's own track (Zoom, Riverside) is one speaker, exactly. Each is
transcribed on its own (`separate`), its segments become `Heard` segments of that *source*, and:

- `split_at_pauses` cuts a source's segment where its words pause (Whisper may run one segment across the
  other person's turn when this source is silent in between);
- `drop_cross_talk` removes words a source only picked up from another (a headset hearing the other
  person faintly): when the same word is heard on two sources at overlapping times it stays only where it
  is loudest, and a word much quieter on its source than another source's talk at that moment goes too;
- `merge` puts the sources on one timeline with their speakers' names; `speaker_stats` counts talk time
  and words.

Levels are in dB relative to each source's own speech level (see `channels.Levels`), so a quieter
recording of one person is not mistaken for cross-talk.

Mono audio has no such answer. `Diarizer` is the seam for an acoustic diarizer (audio -> speaker turns),
and `label_by_turns` attributes segments from its turns; none is bundled (it would bring torch).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import Final, NamedTuple, Protocol

from xenios_ai.transcription.models import Segment, SpeakerStats, Word

PAUSE_SECONDS: Final = 1.0
"""A source's segment is cut where two of its words are further apart than this."""
CROSS_TALK_MARGIN_DB: Final = 10.0
"""A word this much quieter on its own source than another source that is talking at the time is
cross-talk, whatever its text."""
OVERLAP_TOLERANCE: Final = 0.3
"""Seconds by which two words' times may miss each other and still count as overlapping (word times of
separate transcriptions disagree by a few hundred milliseconds)."""
_LONGEST_WORD: Final = 5.0


@dataclass(frozen=True)
class HeardWord:
    start: float
    end: float
    word: str
    probability: float
    levels: tuple[float, ...] = ()
    """dB relative to each source's speech level over this word's time, by source; empty: unknown."""


@dataclass(frozen=True)
class Heard:
    """A segment transcribed from one source (channel or track), on the common timeline."""

    source: int
    start: float
    end: float
    text: str
    words: tuple[HeardWord, ...] = ()
    levels: tuple[float, ...] = ()
    """As `HeardWord.levels`, over the whole segment (used when it has no words)."""


def speaker_names(given: Sequence[str], count: int) -> list[str]:
    """The name of each of ``count`` sources: the given ones in order, then ``Speaker N``; repeated names
    get a number (two speakers must stay apart)."""
    names: list[str] = []
    for i in range(count):
        name = given[i].strip() if i < len(given) else f"Speaker {i + 1}"
        if name in names:
            name = f"{name} ({i + 1})"
        names.append(name)
    return names


def _text_of(words: Sequence[HeardWord]) -> str:
    return "".join(w.word for w in words).strip()


def split_at_pauses(segment: Heard, pause: float = PAUSE_SECONDS) -> list[Heard]:
    """``segment`` cut where consecutive words are more than ``pause`` seconds apart (unchanged without
    words or pauses)."""
    words = segment.words
    if len(words) < 2:
        return [segment]
    pieces: list[list[HeardWord]] = [[words[0]]]
    for previous, word in itertools.pairwise(words):
        if word.start - previous.end > pause:
            pieces.append([])
        pieces[-1].append(word)
    if len(pieces) == 1:
        return [segment]
    return [
        replace(segment, start=piece[0].start, end=piece[-1].end, text=_text_of(piece), words=tuple(piece))
        for piece in pieces
    ]


def _normal(word: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", word.lower())


def _similar(a: str, b: str) -> bool:
    """The same spoken word, allowing for a misheard quiet copy ("Sarah" / "Sara")."""
    if not a or not b:
        return False
    if a == b:
        return True
    return min(len(a), len(b)) >= 4 and SequenceMatcher(None, a, b).ratio() >= 0.8


def _level(levels: tuple[float, ...], source: int) -> float:
    return levels[source] if source < len(levels) else 0.0


class _Spoken(NamedTuple):
    start: float
    end: float
    text: str
    level: float
    """On its own source."""
    source: int


def drop_cross_talk(
    heard: Sequence[Heard],
    *,
    margin_db: float = CROSS_TALK_MARGIN_DB,
    tolerance: float = OVERLAP_TOLERANCE,
) -> list[Heard]:
    """``heard`` without the words a source only picked up from another one.

    A word on source *i* goes when another source *j* has, at an overlapping time (``tolerance``), the
    same word louder on *j* than it is on *i* (a tie keeps the lower source), or any word while *i*'s
    level is ``margin_db`` or more below *j*'s (a misheard copy). A segment that loses every word goes; one
    that loses some keeps the rest of its words and text. A segment without words counts as one word.
    """
    by_source: dict[int, list[_Spoken]] = {}
    for segment in heard:
        for word in _units(segment):
            by_source.setdefault(segment.source, []).append(word)
    for spoken in by_source.values():
        spoken.sort()
    starts = {source: [w.start for w in spoken] for source, spoken in by_source.items()}

    def dropped(word: _Spoken, levels: tuple[float, ...]) -> bool:
        for source, spoken in by_source.items():
            if source == word.source:
                continue
            low = bisect.bisect_left(starts[source], word.start - tolerance - _LONGEST_WORD)
            high = bisect.bisect_right(starts[source], word.end + tolerance)
            talking = False
            for other in spoken[low:high]:
                if other.end < word.start - tolerance:
                    continue
                talking = True
                if _similar(word.text, other.text) and (
                    other.level > word.level or (other.level == word.level and source < word.source)
                ):
                    return True
            if talking and _level(levels, source) - word.level >= margin_db:
                return True
        return False

    kept: list[Heard] = []
    for segment in heard:
        if not segment.words:
            (unit,) = _units(segment)
            if not dropped(unit, segment.levels):
                kept.append(segment)
            continue
        words = [
            w for w, unit in zip(segment.words, _units(segment), strict=True) if not dropped(unit, w.levels)
        ]
        if len(words) == len(segment.words):
            kept.append(segment)
        elif words:
            kept.append(
                replace(
                    segment, start=words[0].start, end=words[-1].end, text=_text_of(words), words=tuple(words)
                )
            )
    return kept


def _units(segment: Heard) -> list[_Spoken]:
    """What `drop_cross_talk` compares: the segment's words, or the segment as one word."""
    if not segment.words:
        text = " ".join(_normal(w) for w in segment.text.split())
        return [
            _Spoken(segment.start, segment.end, text, _level(segment.levels, segment.source), segment.source)
        ]
    return [
        _Spoken(w.start, w.end, _normal(w.word), _level(w.levels, segment.source), segment.source)
        for w in segment.words
    ]


def merge(heard: Sequence[Heard], names: Sequence[str], *, with_words: bool) -> list[Segment]:
    """One timeline: segments by start (then source), numbered, each with its source's speaker name."""
    ordered = sorted(heard, key=lambda s: (s.start, s.source, s.end))
    segments = []
    for index, h in enumerate(ordered):
        speaker = names[h.source]
        words = (
            [Word(w.start, w.end, w.word, w.probability, speaker=speaker) for w in h.words]
            if with_words
            else None
        )
        segments.append(
            Segment(id=index, start=h.start, end=h.end, text=h.text, words=words, speaker=speaker)
        )
    return segments


def speaker_stats(segments: Sequence[Segment], names: Sequence[str]) -> list[SpeakerStats]:
    """Talk time (seconds of their segments) and words of each named speaker, in ``names``' order."""
    talk = dict.fromkeys(names, 0.0)
    words = dict.fromkeys(names, 0)
    for segment in segments:
        if segment.speaker is None or segment.speaker not in talk:
            continue
        talk[segment.speaker] += segment.end - segment.start
        words[segment.speaker] += len(segment.words) if segment.words else len(segment.text.split())
    return [SpeakerStats(name=n, talk_seconds=round(talk[n], 3), word_count=words[n]) for n in names]


# --- the diarizer seam -------------------------------------------------------------------------------


class SpeakerTurn(NamedTuple):
    start: float
    end: float
    speaker: str


class Diarizer(Protocol):
    """An acoustic diarizer: who speaks when in a (mono) recording, as turns in seconds.

    None is bundled; one (pyannote, NeMo) would plug in here and the mono path would attribute the
    transcript's segments with `label_by_turns`.
    """

    def __call__(self, path: Path) -> list[SpeakerTurn]: ...


def _speaker_over(turns: Sequence[SpeakerTurn], start: float, end: float) -> str | None:
    """The speaker whose turns cover most of [start, end] (the nearest turn's for a zero-length span)."""
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0 or (shared == 0 and start == end and turn.start <= start <= turn.end):
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if not overlap:
        return None
    return max(overlap, key=lambda name: overlap[name])


def label_by_turns(segments: Sequence[Segment], turns: Sequence[SpeakerTurn]) -> list[Segment]:
    """``segments`` with the speaker whose turns cover most of each (and each word, when it has words)."""
    labelled = []
    for segment in segments:
        words = None
        if segment.words is not None:
            words = [
                Word(w.start, w.end, w.word, w.probability, speaker=_speaker_over(turns, w.start, w.end))
                for w in segment.words
            ]
        speaker = _speaker_over(turns, segment.start, segment.end)
        labelled.append(
            Segment(
                id=segment.id,
                start=segment.start,
                end=segment.end,
                text=segment.text,
                words=words,
                speaker=speaker,
            )
        )
    return labelled
