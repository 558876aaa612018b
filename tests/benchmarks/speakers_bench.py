"""Speakers: the same dialogue as a mono mix, as two channels (clean and with -20 dB bleed) and as two tracks,
through the engine in this process (part of `just bench transcription`; alone:
``uv run python -m tests.benchmarks.speakers_bench [MINUTES]``).

The coach (espeak-ng en-us) and the client (en-gb) say the test dialogue's 8 lines, repeated to about
``minutes`` (tests/support/speakers_audio.py, written at bench time). The baseline is the mono mix with the
worker's `Transcriber` defaults; each variant goes through what a job runs (`separate.transcribe_recording`,
`transcribe_tracks`). Rounds alternate the variants; best of each, wall and CPU seconds of this process (the engine's
threads included; other load on the shared machine hardly changes CPU seconds). Attribution accuracy: the share of words
whose speaker is the one whose line is at the word's time; WER per speaker against that speaker's lines.

Targets: two channels and two tracks <= 1.3x the mono mix's time; >= 95% of words attributed right on the
bleed recording.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.speakers_audio import TRACK_OFFSET, build
from tests.unit.test_transcription import wer
from tests.unit.test_transcription_speakers import NAMES, attribution, per_speaker_wer
from xenios_ai.settings_load import load_settings
from xenios_ai.transcription import TranscriptionOptions, TranscriptionResult, shared_transcriber
from xenios_ai.transcription.separate import transcribe_recording, transcribe_tracks

TARGET_RATIO = 1.3
TARGET_ATTRIBUTION = 0.95


def run(out_dir: Path, *, minutes: float = 5, rounds: int = 3) -> dict[str, Any]:
    transcriber = shared_transcriber(load_settings({}, dotenv=False))  # the worker's settings: defaults
    with tempfile.TemporaryDirectory(prefix="bench-speakers-") as tmp:
        once = build(Path(tmp) / "once", lines=8)
        dialogue = build(Path(tmp) / "long", lines=8, repeat=max(1, math.ceil(minutes * 60 / once.duration)))
        options = TranscriptionOptions(speakers=NAMES, word_timestamps=True)
        tracks = [dialogue.path("coach.wav"), dialogue.path("client_track.wav")]
        variants: dict[str, Callable[[], TranscriptionResult]] = {
            "mono mix (baseline)": lambda: transcriber.transcribe(dialogue.path("mono.wav"), options),
            "two channels": lambda: transcribe_recording(
                transcriber.transcribe, dialogue.path("stereo.wav"), options
            ),
            "two channels, -20 dB bleed": lambda: transcribe_recording(
                transcriber.transcribe, dialogue.path("bleed.wav"), options
            ),
            "two tracks (offset 3.5 s)": lambda: transcribe_tracks(
                transcriber.transcribe,
                tracks,
                TranscriptionOptions(speakers=NAMES, word_timestamps=True, track_offsets=[0.0, TRACK_OFFSET]),
            ),
        }
        transcriber.transcribe(once.path("mono.wav"))  # warm up
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        results: dict[str, TranscriptionResult] = {}
        for _ in range(rounds):
            for name, variant in variants.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                results[name] = variant()
                seconds[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
        base, base_cpu = min(seconds["mono mix (baseline)"]), min(cpu["mono mix (baseline)"])
        rows = {}
        for name, result in results.items():
            best = min(seconds[name])
            row: dict[str, Any] = {
                "seconds": round(best, 2),
                "all": [round(s, 2) for s in seconds[name]],
                "ratio_to_mono": round(best / base, 3),
                "cpu_seconds": round(min(cpu[name]), 2),
                "cpu_ratio_to_mono": round(min(cpu[name]) / base_cpu, 3),
                "rtf": round(best / dialogue.duration, 4),
                "wer_all": round(wer(" ".join(line.text for line in dialogue.lines), result.text), 4),
            }
            if result.speakers:
                row["attribution"] = round(attribution(result, dialogue), 4)
                row["wer_per_speaker"] = {
                    k: round(v, 4) for k, v in per_speaker_wer(result, dialogue).items()
                }
            rows[name] = row
    out = {
        "audio_seconds": dialogue.duration,
        "rounds": rounds,
        "variants": rows,
        "target_ratio": TARGET_RATIO,
        "target_attribution": TARGET_ATTRIBUTION,
    }
    _print(out)
    (out_dir / "speakers.json").write_text(json.dumps(out, indent=2))
    return out


def _print(out: dict[str, Any]) -> None:
    title = f"speakers: {out['audio_seconds'] / 60:.1f}-minute dialogue"
    print(
        f"{title:<34}{'seconds':>9}{'x mono':>8}{'CPU s':>8}{'x mono':>8}{'WER':>7}{'attributed':>12}"
        "  WER coach / client"
    )
    for name, row in out["variants"].items():
        attributed = f"{row['attribution']:.1%}" if "attribution" in row else "-"
        per = row.get("wer_per_speaker")
        per_text = f"{per['Coach']:.3f} / {per['Client']:.3f}" if per else "-"
        print(
            f"{name:<34}{row['seconds']:>9}{row['ratio_to_mono']:>8}{row['cpu_seconds']:>8}"
            f"{row['cpu_ratio_to_mono']:>8}{row['wer_all']:>7.3f}{attributed:>12}  {per_text}"
        )
    print(
        f"  targets: <= {TARGET_RATIO}x the mono mix; >= {TARGET_ATTRIBUTION:.0%} of words attributed right"
    )


if __name__ == "__main__":
    folder = Path("bench-results")
    folder.mkdir(exist_ok=True)
    run(folder, minutes=float(sys.argv[1]) if len(sys.argv) > 1 else 5)
