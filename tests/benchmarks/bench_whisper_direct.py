"""faster-whisper without the job system: real-time factor, WER by beam size, and peak RSS on long audio.

Run from the repository root::

    uv run python -m tests.benchmarks.bench_whisper_direct [--minutes 5] [--long-minutes 60] [--direct-long]

or as part of ``just bench`` (``just bench whisper_direct``). It prints a table, then one JSON object (the
last line). "faster-whisper" rows call ``WhisperModel.transcribe`` on the file directly (it decodes the whole
file into memory); "transcriber" rows go through `xenios_ai.transcription.Transcriber` (windowed decoding,
word alignment always on, progress). Long files repeat the test dialogue and are written at bench time to a
temporary folder, never committed. Peak RSS is measured in a fresh process per case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ROOT
from tests.support.processes import status_kb
from tests.unit.test_transcription import REFERENCE, wer
from xenios_ai.transcription import Transcriber

AUDIO = ROOT / "tests" / "data" / "audio"
DIALOGUE_FORMATS = ["wav", "mp3", "m4a", "ogg", "webm", "flac", "mp4"]


def make_long_wav(path: Path, minutes: float) -> Path:
    """Write ``minutes`` of 16 kHz mono WAV to ``path`` by repeating the test dialogue; streams, small memory."""
    with wave.open(str(AUDIO / "dialogue.wav")) as src:
        params = src.getparams()
        frames = src.readframes(src.getnframes())
    remaining = int(minutes * 60 * params.framerate) * params.sampwidth
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        while remaining > 0:
            chunk = frames[:remaining]
            out.writeframes(chunk)
            remaining -= len(chunk)
    return path


def _audio_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return float(w.getnframes() / w.getframerate())


def _direct(model: Any, path: Path, beam_size: int) -> int:
    segments, _ = model.transcribe(str(path), language="en", beam_size=beam_size, vad_filter=True)
    return sum(1 for _ in segments)


def bench_speed(path: Path, beams: list[int]) -> list[dict[str, Any]]:
    """Real-time factor on ``path``, faster-whisper direct vs the Transcriber, per beam size (one round)."""
    from faster_whisper import WhisperModel  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    audio = _audio_seconds(path)
    rows = []
    for beam in beams:
        transcriber = Transcriber(beam_size=beam)
        model = transcriber._model  # the same loaded model: only the calling code differs
        _direct(model, AUDIO / "dialogue.wav", beam)  # warm up
        assert isinstance(model, WhisperModel)
        started = time.perf_counter()
        _direct(model, path, beam)
        direct = time.perf_counter() - started
        started = time.perf_counter()
        transcriber.transcribe(path)
        ours = time.perf_counter() - started
        for name, seconds in (("faster-whisper", direct), ("transcriber", ours)):
            rows.append(
                {
                    "case": f"{name} beam={beam}",
                    "audio_seconds": round(audio, 1),
                    "seconds": round(seconds, 2),
                    "rtf": round(seconds / audio, 4),
                    "x_real_time": round(audio / seconds, 1),
                }
            )
    return rows


def bench_wer(beams: list[int]) -> list[dict[str, Any]]:
    """WER of the test dialogue in every fixture format, per beam size."""

    rows = []
    for beam in beams:
        transcriber = Transcriber(beam_size=beam)
        for fmt in DIALOGUE_FORMATS:
            result = transcriber.transcribe(AUDIO / f"dialogue.{fmt}")
            rows.append(
                {
                    "beam": beam,
                    "format": fmt,
                    "wer": round(wer(REFERENCE, result.text), 3),
                    "rtf": result.real_time_factor,
                }
            )
    return rows


def measure_memory(path: Path, mode: str) -> dict[str, Any]:
    """Run one transcription of ``path`` in a fresh process; ``mode`` is "transcriber" or "direct"."""
    command = [sys.executable, "-m", "tests.benchmarks.bench_whisper_direct", "--child", str(path), mode]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    child: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    child["case"] = f"{mode} {child['audio_seconds'] / 60:.0f} min"
    return child


def _child(path: Path, mode: str) -> None:
    """One transcription; prints peak RSS as VmHWM and as this process's ru_maxrss (both in MB)."""
    started = time.perf_counter()
    transcriber = Transcriber()
    load = time.perf_counter() - started
    started = time.perf_counter()
    if mode == "direct":
        segments = _direct(transcriber._model, path, transcriber.beam_size)
    else:
        segments = len(transcriber.transcribe(path).segments)
    seconds = time.perf_counter() - started
    hwm_kb = status_kb(os.getpid(), "VmHWM")
    audio = _audio_seconds(path)
    record = {
        "audio_seconds": round(audio, 1),
        "load_seconds": round(load, 2),
        "seconds": round(seconds, 1),
        "rtf": round(seconds / audio, 4),
        "segments": segments,
        "peak_rss_mb": round(hwm_kb / 1024),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(record))


def measure(
    minutes: float = 5, long_minutes: float = 60, beams: tuple[int, ...] = (1, 5), direct_long: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-whisper-") as tmp:
        short = make_long_wav(Path(tmp) / f"dialogue-{minutes:g}min.wav", minutes)
        long = make_long_wav(Path(tmp) / f"dialogue-{long_minutes:g}min.wav", long_minutes)
        memory = [measure_memory(short, "direct"), measure_memory(short, "transcriber")]
        if direct_long:
            memory.append(measure_memory(long, "direct"))
        memory.append(measure_memory(long, "transcriber"))
        speed = bench_speed(short, list(beams))
    quality = bench_wer(list(beams))
    return {"speed": speed, "wer": quality, "memory": memory}


def print_tables(result: dict[str, Any]) -> None:
    print(f"{'speed':28} {'audio s':>8} {'seconds':>8} {'rtf':>7} {'x real time':>12}")
    for row in result["speed"]:
        print(
            f"{row['case']:28} {row['audio_seconds']:>8} {row['seconds']:>8} {row['rtf']:>7} "
            f"{row['x_real_time']:>12}"
        )
    print(f"\n{'wer by beam':12} " + " ".join(f"{fmt:>6}" for fmt in DIALOGUE_FORMATS))
    for beam in sorted({row["beam"] for row in result["wer"]}):
        cells = {row["format"]: row["wer"] for row in result["wer"] if row["beam"] == beam}
        print(f"{'beam=' + str(beam):12} " + " ".join(f"{cells[fmt]:>6.3f}" for fmt in DIALOGUE_FORMATS))
    print(
        f"\n{'memory':22} {'audio s':>8} {'seconds':>8} {'rtf':>7} {'peak RSS MB':>12} {'ru_maxrss MB':>13}"
    )
    for row in result["memory"]:
        print(
            f"{row['case']:22} {row['audio_seconds']:>8} {row['seconds']:>8} {row['rtf']:>7} "
            f"{row['peak_rss_mb']:>12} {row['ru_maxrss_mb']:>13}"
        )


def run(out_dir: Path) -> dict[str, Any]:
    """Entry point for ``just bench``."""
    result = measure()
    print_tables(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=5, help="length of the speed test file")
    parser.add_argument("--long-minutes", type=float, default=60, help="length of the memory test file")
    parser.add_argument("--beams", default="1,5", help="beam sizes to compare, comma separated")
    parser.add_argument(
        "--direct-long", action="store_true", help="also faster-whisper direct on the long file"
    )
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child[0]), args.child[1])
        return
    beams = tuple(int(b) for b in args.beams.split(","))
    result = measure(args.minutes, args.long_minutes, beams, args.direct_long)
    print_tables(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
