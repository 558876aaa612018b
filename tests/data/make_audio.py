"""Generate the committed transcription fixtures under ``tests/data/audio/``.

Run ``uv run python tests/data/make_audio.py`` after changing this file and commit the outputs. It needs
``espeak-ng``, ``sox`` and ``ffmpeg`` (``apt-get install espeak-ng sox ffmpeg``); they are only needed to
regenerate fixtures, never at test time. With the same tool versions a rerun gives the same bytes
(bitexact encoders, no metadata, seeded noise).

The dialogue's text and where each line sits in the audio are written next to the audio
(``dialogue.txt``, ``dialogue.json``); the tests read them from there.

Outputs:

- ``dialogue.wav``: the coaching dialogue, 16 kHz mono PCM, two voices (coach en-us, client en-gb).
- ``dialogue.mp3|m4a|ogg|webm|flac``: the same dialogue in MP3, AAC, Ogg/Opus, WebM/Opus and FLAC.
- ``dialogue.mp4``: AAC audio plus a tiny 1 fps black video track (the audio is not the first stream).
- ``silence_gap.ogg``: one line, 60 s of faint noise, another line (Opus at 16 kb/s).
- ``truncated.m4a``: the first 2 KB of the M4A: the moov atom (at the end) is missing.
- ``broken_header.wav``: a RIFF/WAVE file whose ``fmt`` chunk says zero channels.
- ``video_only.mp4``: a video track and no audio track.
- ``random.bin``: 4 KB of seeded random bytes.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

AUDIO = Path(__file__).resolve().parent / "audio"

SAMPLE_RATE = 16_000
#: Pause between two dialogue lines, seconds.
PAUSE = 0.5
#: espeak-ng words per minute.
SPEED = 175

COACH_VOICE = "en-us"
CLIENT_VOICE = "en-gb"

#: (speaker, text) in order. Numbers are spelled out as espeak-ng speaks them.
DIALOGUE: list[tuple[str, str]] = [
    ("coach", "Good morning Sarah. How did your training go this week?"),
    ("client", "It went well. I ran three times and finished the long run on Sunday."),
    ("coach", "Great progress. How have you been sleeping?"),
    ("client", "Not so well. I go to bed after midnight and wake up tired."),
    ("coach", "Sleep is when your body recovers. Could you aim for seven hours every night?"),
    ("client", "I can try. My goal is lights out by eleven on weekdays."),
    ("coach", "Good. Add two short strength sessions, and we will review it next Tuesday."),
    ("client", "Thank you coach. I feel more motivated already."),
]

#: Lines around the silent stretch of ``silence_gap.ogg`` and the stretch's length in seconds.
GAP_BEFORE = "Let us start with your sleep diary."
GAP_AFTER = "Now tell me about your running plan."
GAP_SECONDS = 60.0

FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1"]
#: No tags, no encoder version strings: the bytes depend only on the input and the encoder.
BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags", "+bitexact"]


def run(*args: str) -> None:
    subprocess.run(args, check=True)


def speak(text: str, voice: str, out: Path) -> None:
    """Speak ``text`` into a 16 kHz mono 16-bit WAV."""
    raw = out.with_suffix(".raw.wav")
    run("espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(raw), text)
    run("sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out))
    raw.unlink()


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return float(w.getnframes() / w.getframerate())


def silence(seconds: float, out: Path) -> None:
    run("sox", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out), "trim", "0", f"{seconds}")


def make_dialogue(tmp: Path) -> list[dict[str, object]]:
    """Write ``dialogue.wav`` and return the lines with their start and end in seconds."""
    parts: list[Path] = []
    lines: list[dict[str, object]] = []
    pause = tmp / "pause.wav"
    silence(PAUSE, pause)
    lead = tmp / "lead.wav"
    silence(0.5, lead)
    parts.append(lead)
    t = 0.5
    for i, (speaker, text) in enumerate(DIALOGUE):
        voice = COACH_VOICE if speaker == "coach" else CLIENT_VOICE
        line = tmp / f"line{i:02d}.wav"
        speak(text, voice, line)
        seconds = wav_seconds(line)
        lines.append(
            {
                "speaker": speaker,
                "voice": voice,
                "text": text,
                "start": round(t, 3),
                "end": round(t + seconds, 3),
            }
        )
        parts.append(line)
        parts.append(pause)
        t += seconds + PAUSE
    run("sox", "-D", *map(str, parts), str(AUDIO / "dialogue.wav"))
    return lines


#: Output name -> ffmpeg output options (mono, low bitrates: small files that still transcribe well).
ENCODINGS: dict[str, list[str]] = {
    "dialogue.mp3": ["-c:a", "libmp3lame", "-b:a", "32k", "-write_xing", "1", "-id3v2_version", "0"],
    "dialogue.m4a": ["-c:a", "aac", "-b:a", "24k"],
    "dialogue.ogg": ["-c:a", "libopus", "-b:a", "24k"],
    "dialogue.webm": ["-c:a", "libopus", "-b:a", "24k"],
    "dialogue.flac": ["-c:a", "flac", "-compression_level", "12"],
}
#: A 1 fps 32x32 black picture, a video track that costs a few hundred bytes.
TINY_VIDEO = ["-f", "lavfi", "-i", "color=c=black:s=32x32:r=1"]
TINY_VIDEO_CODEC = ["-c:v", "mpeg4", "-q:v", "31", "-g", "600"]


def encode_dialogue() -> None:
    src = str(AUDIO / "dialogue.wav")
    for name, codec in ENCODINGS.items():
        run(*FFMPEG, "-i", src, "-ac", "1", *codec, *BITEXACT, str(AUDIO / name))
    # The video comes first so the audio is stream 1: the transcriber must pick the audio stream.
    streams = ["-map", "0:v", "-map", "1:a", "-shortest"]
    aac = ["-ac", "1", "-c:a", "aac", "-b:a", "24k"]
    run(
        *FFMPEG,
        *TINY_VIDEO,
        "-i",
        src,
        *streams,
        *TINY_VIDEO_CODEC,
        *aac,
        *BITEXACT,
        str(AUDIO / "dialogue.mp4"),
    )


def make_silence_gap(tmp: Path) -> dict[str, float]:
    """``silence_gap.ogg``: speech, ``GAP_SECONDS`` of faint noise, speech; returns the speech spans."""
    before, after = tmp / "gap_before.wav", tmp / "gap_after.wav"
    speak(GAP_BEFORE, COACH_VOICE, before)
    speak(GAP_AFTER, COACH_VOICE, after)
    lead, gap, joined = tmp / "gap_lead.wav", tmp / "gap.wav", tmp / "gap_joined.wav"
    silence(0.5, lead)
    # Faint brown noise at about -60 dBFS: a quiet room, not digital zero. -R makes sox's noise repeatable.
    noise = ["synth", f"{GAP_SECONDS}", "brownnoise", "vol", "0.001"]
    run("sox", "-D", "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(gap), *noise)
    run("sox", "-D", str(lead), str(before), str(gap), str(after), str(joined))
    opus = ["-ac", "1", "-c:a", "libopus", "-b:a", "16k"]
    run(*FFMPEG, "-i", str(joined), *opus, *BITEXACT, str(AUDIO / "silence_gap.ogg"))
    first_end = 0.5 + wav_seconds(before)
    second_start = first_end + GAP_SECONDS
    return {
        "first_start": 0.5,
        "first_end": round(first_end, 3),
        "second_start": round(second_start, 3),
        "second_end": round(second_start + wav_seconds(after), 3),
    }


def make_broken() -> None:
    (AUDIO / "truncated.m4a").write_bytes((AUDIO / "dialogue.m4a").read_bytes()[:2048])
    wav = bytearray((AUDIO / "dialogue.wav").read_bytes()[:4096])
    fmt = wav.index(b"fmt ")
    wav[fmt + 10 : fmt + 12] = (0).to_bytes(2, "little")  # number of channels
    (AUDIO / "broken_header.wav").write_bytes(bytes(wav))
    run(*FFMPEG, *TINY_VIDEO, "-t", "5", *TINY_VIDEO_CODEC, *BITEXACT, str(AUDIO / "video_only.mp4"))
    (AUDIO / "random.bin").write_bytes(random.Random(1234).randbytes(4096))


def main() -> int:
    for tool in ("espeak-ng", "sox", "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: apt-get install espeak-ng sox ffmpeg", file=sys.stderr)
            return 1
    AUDIO.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        lines = make_dialogue(tmp)
        encode_dialogue()
        gap = make_silence_gap(tmp)
    make_broken()
    duration = round(wav_seconds(AUDIO / "dialogue.wav"), 3)
    (AUDIO / "dialogue.txt").write_text("\n".join(text for _, text in DIALOGUE) + "\n")
    meta = {
        "duration": duration,
        "lines": lines,
        "silence_gap": {"before": GAP_BEFORE, "after": GAP_AFTER, **gap},
    }
    (AUDIO / "dialogue.json").write_text(json.dumps(meta, indent=2) + "\n")
    for path in sorted(AUDIO.iterdir()):
        print(f"{path.name:20} {path.stat().st_size:>9,} bytes")
    print(f"dialogue: {duration} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
