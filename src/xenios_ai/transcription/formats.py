"""A stored transcription result as a file: plain text, SubRip (SRT) or WebVTT.

Speakers appear the way players show them: WebVTT voice spans (``<v Coach>text``), and in SRT (which has
no speaker markup) a ``Coach: `` prefix; the text file is the labelled transcript analyses receive
(``Coach: ...`` lines), or the plain text when there are no speakers.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from xenios_ai.transcription.models import transcript_text

TranscriptFormat = Literal["txt", "srt", "vtt"]
MEDIA_TYPES: Final[dict[str, str]] = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _segments(result: dict[str, Any]) -> list[dict[str, Any]]:
    segments = result.get("segments")
    return [s for s in segments if isinstance(s, dict)] if isinstance(segments, list) else []


def _one_line(text: str) -> str:
    # A blank line ends a cue, and "-->" would read as timing: keep a cue's text on its lines.
    return " ".join(text.replace("-->", "->").split())


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(result: dict[str, Any], fmt: TranscriptFormat) -> str:
    """The transcript of a stored (JSON) transcription result in ``fmt``."""
    if fmt == "txt":
        text = transcript_text(result) or ""
        return text + "\n" if text else ""
    cues = []
    for index, segment in enumerate(_segments(result), 1):
        text = _one_line(str(segment.get("text") or ""))
        if not text:
            continue
        start, end = float(segment.get("start", 0.0)), float(segment.get("end", 0.0))
        speaker = segment.get("speaker")
        if fmt == "srt":
            line = f"{speaker}: {text}" if speaker else text
            cues.append(f"{index}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{line}\n")
        else:
            line = _vtt_escape(text)
            if speaker:
                line = f"<v {_vtt_escape(str(speaker))}>{line}"
            cues.append(f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{line}\n")
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(cues)
    return "\n".join(cues)
