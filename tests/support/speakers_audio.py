"""Two-speaker recordings built at test time from the committed dialogue's text (espeak-ng, sox).

The coach (espeak-ng ``en-us``) and the client (``en-gb``) speak the first ``lines`` lines of the test
dialogue (tests/data/make_audio.py) in turn, 0.5 s apart. From the two voices, each alone on the common
timeline, sox makes:

- ``mono.wav``: both voices mixed to one channel (what a single room recorder gives);
- ``stereo.wav``: the coach on the left channel, the client on the right (a call recorder);
- ``bleed.wav``: the same, with each channel also carrying the other voice at -20 dB (headset mics);
- ``copies.wav``: the mono mix on both channels (a mono recording saved as stereo);
- ``coach.wav`` / ``client_track.wav``: one file per person (Zoom, Riverside); the client's track starts
  ``TRACK_OFFSET`` seconds after the coach's (its first seconds are cut), so it is submitted with that
  start offset.

`Dialogue.lines` holds each line's speaker, text, start and end on the timeline. Nothing is committed:
the files are written into a temporary folder once per test session (`build`), in about a second.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

from tests.data.make_audio import CLIENT_VOICE, COACH_VOICE, DIALOGUE, PAUSE, SPEED

SAMPLE_RATE = 16_000
TRACK_OFFSET = 3.5
"""Seconds between the start of the coach's track and the client's (the client's first line is later)."""
BLEED_DB = -20
NAMES = {"coach": "Coach", "client": "Client"}


@dataclass(frozen=True)
class Line:
    speaker: str
    """``Coach`` or ``Client``."""
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Dialogue:
    folder: Path
    lines: list[Line]
    duration: float

    def path(self, name: str) -> Path:
        return self.folder / name

    def text_of(self, speaker: str) -> str:
        return " ".join(line.text for line in self.lines if line.speaker == speaker)

    def speaker_at(self, seconds: float) -> str | None:
        """Whose line is nearest to ``seconds`` on the timeline (None far from every line)."""
        best, distance = None, 1.0
        for line in self.lines:
            d = max(line.start - seconds, 0.0, seconds - line.end)
            if d < distance:
                best, distance = line.speaker, d
        return best


def tools_missing() -> list[str]:
    return [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return float(w.getnframes() / w.getframerate())


def _silence(seconds: float, out: Path) -> Path:
    _run(
        "sox", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out), "trim", "0", f"{seconds}"
    )
    return out


def build(folder: Path, lines: int = 4, repeat: int = 1) -> Dialogue:
    """Write the recordings described in the module docstring into ``folder``: the first ``lines`` lines,
    the whole exchange said ``repeat`` times (the benchmark's long session)."""
    missing = tools_missing()
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: apt-get install -y espeak-ng sox")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "parts"
    tmp.mkdir(exist_ok=True)
    parts: dict[str, list[Path]] = {"coach": [], "client": []}
    spoken: list[Line] = []
    t = 0.5
    for speaker, files in parts.items():
        files.append(_silence(t, tmp / f"lead-{speaker}.wav"))
    for i, (speaker, text) in enumerate(DIALOGUE[:lines]):
        raw, line = tmp / f"line{i}.raw.wav", tmp / f"line{i}.wav"
        voice = COACH_VOICE if speaker == "coach" else CLIENT_VOICE
        _run("espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(raw), text)
        _run("sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(line))
        seconds = _seconds(line)
        spoken.append(Line(NAMES[speaker], text, round(t, 3), round(t + seconds, 3)))
        gap = _silence(seconds, tmp / f"gap{i}.wav")
        pause = _silence(PAUSE, tmp / f"pause{i}.wav")
        for who in parts:
            parts[who] += [line if who == speaker else gap, pause]
        t += seconds + PAUSE
    for who, files in parts.items():
        _run("sox", "-D", *map(str, files), str(folder / f"{who}.wav"))
    if repeat > 1:
        once = round(t, 3)
        spoken = [
            Line(line.speaker, line.text, round(line.start + k * once, 3), round(line.end + k * once, 3))
            for k in range(repeat)
            for line in spoken
        ]
        for who in parts:
            single = tmp / f"{who}-once.wav"
            (folder / f"{who}.wav").rename(single)
            _run("sox", "-D", str(single), str(folder / f"{who}.wav"), "repeat", str(repeat - 1))
    coach, client = str(folder / "coach.wav"), str(folder / "client.wav")
    gain = f"{10 ** (BLEED_DB / 20):.4f}"
    _run("sox", "-D", "-m", coach, client, str(folder / "mono.wav"))
    _run("sox", "-D", "-M", coach, client, str(folder / "stereo.wav"))
    left, right = tmp / "left.wav", tmp / "right.wav"
    _run("sox", "-D", "-m", "-v", "1", coach, "-v", gain, client, str(left))
    _run("sox", "-D", "-m", "-v", "1", client, "-v", gain, coach, str(right))
    _run("sox", "-D", "-M", str(left), str(right), str(folder / "bleed.wav"))
    mono = str(folder / "mono.wav")
    _run("sox", "-D", "-M", mono, mono, str(folder / "copies.wav"))
    _run("sox", "-D", client, str(folder / "client_track.wav"), "trim", f"{TRACK_OFFSET}")
    shutil.rmtree(tmp)
    return Dialogue(folder, spoken, round(_seconds(folder / "mono.wav"), 3))
