"""A recording that switches language mid-file, built at test time (espeak-ng, sox; nothing committed).

English (espeak-ng ``en-us``: the coach's first lines of the test dialogue), then German (``de``: the same
exchange translated), then the English again: about 60 s, so the default transcriber decodes it batched.
``Switch.german`` is where the German is on the timeline; ``Switch.english`` the English parts.
"""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

from tests.support.speakers_audio import tools_missing

SAMPLE_RATE = 16_000
ENGLISH = (
    "Good morning Sarah. How did your training go this week? It went well. I ran three times and finished "
    "the long run on Sunday. Great progress. How have you been sleeping? Not so well. I go to bed after "
    "midnight and wake up tired. Sleep is when your body recovers. Could you aim for seven hours every "
    "night? I can try."
)
GERMAN = (
    "Guten Morgen. Wie war das Training in dieser Woche? Es lief gut. Ich bin dreimal gelaufen und habe am "
    "Sonntag den langen Lauf beendet. Wie schläfst du in letzter Zeit? Nicht so gut. Ich gehe nach "
    "Mitternacht ins Bett und wache müde auf. Der Schlaf ist die Zeit, in der sich dein Körper erholt. "
    "Kannst du sieben Stunden pro Nacht schlafen?"
)
LEAD, PAUSE = 0.5, 0.7


@dataclass(frozen=True)
class Switch:
    path: Path
    duration: float
    english: list[tuple[float, float]]
    german: tuple[float, float]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return float(w.getnframes() / w.getframerate())


def build(folder: Path) -> Switch:
    """Write ``switch.wav`` (English, German, English) into ``folder``."""
    missing = tools_missing()
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: apt-get install -y espeak-ng sox")
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for name, voice, text in (("en", "en-us", ENGLISH), ("de", "de", GERMAN)):
        raw, out = folder / f"{name}.raw.wav", folder / f"{name}.wav"
        _run("espeak-ng", "-v", voice, "-s", "175", "-w", str(raw), text)
        _run("sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out))
        parts[name] = out
    for name, seconds in (("lead", LEAD), ("pause", PAUSE)):
        _run("sox", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(folder / f"{name}.wav"),
             "trim", "0", f"{seconds}")  # fmt: skip
    en, de = _seconds(parts["en"]), _seconds(parts["de"])
    path = folder / "switch.wav"
    order = ["lead", "en", "pause", "de", "pause", "en"]
    _run("sox", "-D", *(str(parts.get(name, folder / f"{name}.wav")) for name in order), str(path))
    german_start = LEAD + en + PAUSE
    second_english = german_start + de + PAUSE
    return Switch(
        path=path,
        duration=_seconds(path),
        english=[(LEAD, LEAD + en), (second_english, second_english + en)],
        german=(german_start, german_start + de),
    )
