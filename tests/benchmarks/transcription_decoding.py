"""Sequential (the path before batching) vs batched decoding, same run: wall time, RTF, CPU seconds, peak
RSS and WER of the committed dialogue, on the 5- and 60-minute files; and where batching starts to pay.

    uv run python -m tests.benchmarks.transcription_decoding [--minutes 5,60] [--probe 0.5,1,2,4]

Part of ``just bench transcription`` (tests/benchmarks/bench_transcription.py calls `compare`).

The files repeat the test dialogue (tests/data/audio/dialogue.wav, 34.4 s) a whole number of times, so the
reference is the dialogue's text as many times; they are written at bench time, never committed. Each
(file, mode) runs in a fresh process (so its peak RSS, VmHWM, is its own), built as a worker builds its
Transcriber (the WHISPER_* / TRANSCRIPTION_* defaults), with only the decoding differing:

- sequential: ``batch_size=1`` (never batched): VAD, 30 s windows conditioned on the previous text, words
  always aligned. This is the path every file took before batching.
- batched: ``batched_min_seconds=0``: VAD-cut clips decoded 4 at a time (WHISPER_BATCH_SIZE), words only when asked.

Modes alternate per file. CPU seconds (user + system of the process, every thread) are the figure to
trust on a shared machine: other load stretches wall time but hardly changes the CPU a decode needs.
The probe (one process, both modes on short files, best of ``rounds``) finds where batching starts to
pay. WER on long files is computed per repetition of the dialogue (segments go to the repetition their
middle falls in), summed over the file: word-level Levenshtein, as tests/unit/test_transcription.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ROOT
from tests.support.processes import status_kb
from tests.unit.test_transcription import AUDIO, META, REFERENCE, normalise, wer
from xenios_ai.transcription import Transcriber, TranscriptionOptions, TranscriptionResult

DIALOGUE_SECONDS = float(META["duration"])
TARGET_SPEEDUP = 1.6
TARGET_PEAK_RSS_MB = 1024.0
TARGET_WER_POINTS = 1.0
MODES = ("sequential", "batched")


def make_dialogue_wav(path: Path, repetitions: int) -> Path:
    """The dialogue ``repetitions`` times in a row, as 16 kHz mono WAV; streams, small memory."""
    with wave.open(str(AUDIO / "dialogue.wav")) as src:
        params = src.getparams()
        frames = src.readframes(src.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        for _ in range(repetitions):
            out.writeframes(frames)
    return path


def repetitions_for(minutes: float) -> int:
    return max(1, round(minutes * 60 / DIALOGUE_SECONDS))


def repeated_wer(result: TranscriptionResult, repetitions: int) -> float:
    """WER over ``repetitions`` of the dialogue: each segment counts in the repetition its middle is in."""
    texts: list[list[str]] = [[] for _ in range(repetitions)]
    for segment in result.segments:
        index = int((segment.start + segment.end) / 2 // DIALOGUE_SECONDS)
        texts[min(max(index, 0), repetitions - 1)].append(segment.text)
    size = len(normalise(REFERENCE))
    errors = sum(wer(REFERENCE, " ".join(text)) * size for text in texts)
    return errors / (size * repetitions)


def transcriber_for(mode: str) -> Transcriber:
    if mode == "sequential":
        return Transcriber(batch_size=1)
    return Transcriber(batched_min_seconds=0)


def _child(path: Path, mode: str, repetitions: int) -> None:
    """One transcription in this fresh process; prints one JSON line."""
    transcriber = transcriber_for(mode)
    cpu, wall = time.process_time(), time.perf_counter()
    result = transcriber.transcribe(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    record = {
        "mode": mode,
        "audio_seconds": round(result.duration, 1),
        "seconds": round(wall, 2),
        "rtf": round(wall / result.duration, 4),
        "cpu_seconds": round(cpu, 2),
        "cpu_rtf": round(cpu / result.duration, 4),
        "peak_rss_mb": round(status_kb(os.getpid(), "VmHWM") / 1024),
        "wer": round(repeated_wer(result, repetitions), 4),
        "segments": len(result.segments),
        "decoding": {
            "mode": result.decoding.mode,
            "word_timestamps": result.decoding.word_timestamps,
            "batch_size": result.decoding.batch_size,
            "windows": result.decoding.windows,
        },
        "threads": transcriber.cpu_threads,
    }
    print(json.dumps(record))


def _run_child(path: Path, mode: str, repetitions: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.benchmarks.transcription_decoding", "--child", str(path), mode]
    command += [str(repetitions)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    record: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return record


def _probe(folder: Path, minutes: list[float], rounds: int) -> list[dict[str, Any]]:
    """Both modes on short files in this process (one model), best of ``rounds``, alternating."""
    transcriber = Transcriber()
    transcriber.transcribe(AUDIO / "dialogue.wav")  # warm up
    rows = []
    for length in minutes:
        repetitions = repetitions_for(length)
        path = make_dialogue_wav(folder / f"probe-{repetitions}.wav", repetitions)
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(rounds):
            for mode, threshold in (("sequential", float("inf")), ("batched", 0.0)):
                transcriber.batched_min_seconds = threshold
                cpu, wall = time.process_time(), time.perf_counter()
                result = transcriber.transcribe(path, TranscriptionOptions())
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert result.decoding.mode == mode
                error = repeated_wer(result, repetitions)
                previous = best.get(mode)
                best[mode] = (
                    (min(cpu, previous[0]), min(wall, previous[1]), error) if previous else (cpu, wall, error)
                )
        seq, bat = best["sequential"], best["batched"]
        rows.append(
            {
                "audio_seconds": round(repetitions * DIALOGUE_SECONDS, 1),
                "cpu_sequential": round(seq[0], 2),
                "cpu_batched": round(bat[0], 2),
                "cpu_ratio": round(seq[0] / bat[0], 3),
                "wall_sequential": round(seq[1], 2),
                "wall_batched": round(bat[1], 2),
                "wall_ratio": round(seq[1] / bat[1], 3),
                "wer_sequential": round(seq[2], 4),
                "wer_batched": round(bat[2], 4),
            }
        )
    return rows


def compare(
    folder: Path,
    minutes: tuple[float, ...] = (5, 60),
    probe: tuple[float, ...] = (0.5, 1, 2, 4),
    rounds: int = 2,
) -> dict[str, Any]:
    """The comparison (files written to ``folder``): ``files`` (one row per file and mode, with the
    sequential/batched ratios) and ``probe`` (the crossover)."""
    files = []
    for length in minutes:
        repetitions = repetitions_for(length)
        path = make_dialogue_wav(folder / f"dialogue-x{repetitions}.wav", repetitions)
        rows = {mode: _run_child(path, mode, repetitions) for mode in MODES}
        seq, bat = rows["sequential"], rows["batched"]
        files.append(
            {
                "minutes": length,
                "repetitions": repetitions,
                "sequential": seq,
                "batched": bat,
                "wall_ratio": round(seq["seconds"] / bat["seconds"], 3),
                "cpu_ratio": round(seq["cpu_seconds"] / bat["cpu_seconds"], 3),
                "wer_points": round((bat["wer"] - seq["wer"]) * 100, 2),
            }
        )
        path.unlink()
    return {
        "files": files,
        "probe": _probe(folder, list(probe), rounds),
        "load_average": os.getloadavg(),
        "targets": {
            "speedup_60_min": TARGET_SPEEDUP,
            "peak_rss_mb": TARGET_PEAK_RSS_MB,
            "wer_points_worse_at_most": TARGET_WER_POINTS,
        },
    }


def print_tables(result: dict[str, Any]) -> None:
    print(
        f"{'file':<16}{'mode':<12}{'wall s':>9}{'RTF':>8}{'CPU s':>9}{'CPU RTF':>9}{'peak MB':>9}{'WER':>8}"
    )
    for row in result["files"]:
        title = f"{row['minutes']:g} min ({row['sequential']['audio_seconds']:g} s)"
        for mode in MODES:
            r = row[mode]
            print(
                f"{title:<16}{mode:<12}{r['seconds']:>9}{r['rtf']:>8}{r['cpu_seconds']:>9}{r['cpu_rtf']:>9}"
                f"{r['peak_rss_mb']:>9}{r['wer']:>8.3f}"
            )
            title = ""
        print(
            f"{'':<16}sequential/batched: wall {row['wall_ratio']}x, CPU {row['cpu_ratio']}x; "
            f"WER {row['wer_points']:+.2f} points"
        )
    print(
        f"\n{'probe: audio s':<16}{'CPU seq':>9}{'CPU bat':>9}{'CPU x':>7}{'wall seq':>10}{'wall bat':>10}{'wall x':>8}"
    )
    for p in result["probe"]:
        print(
            f"{p['audio_seconds']:<16}{p['cpu_sequential']:>9}{p['cpu_batched']:>9}{p['cpu_ratio']:>7}"
            f"{p['wall_sequential']:>10}{p['wall_batched']:>10}{p['wall_ratio']:>8}"
        )
    print(f"load average during the run (1, 5, 15 min): {result['load_average']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", default="5,60", help="file lengths to compare, comma separated")
    parser.add_argument("--probe", default="0.5,1,2,4", help="short file lengths for the crossover")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("PATH", "MODE", "REPETITIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child[0]), args.child[1], int(args.child[2]))
        return
    minutes = tuple(float(m) for m in args.minutes.split(",") if m)
    probe = tuple(float(m) for m in args.probe.split(",") if m)
    with tempfile.TemporaryDirectory(prefix="bench-decoding-") as tmp:
        result = compare(Path(tmp), minutes, probe, args.rounds)
    print_tables(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
