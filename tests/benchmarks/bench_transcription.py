"""Transcription through the job system vs the engine called directly, and worker memory on long audio.

    uv run python -m tests.benchmarks bench_transcription       (or: just bench transcription)

Every party is its own process on loopback: the API (``xenios-ai serve``, production settings: JSON logs,
progress written every 0.5 s) and one worker (``xenios-ai worker --queues transcription --processes 1
--threads 1``, as compose.yaml runs it). PostgreSQL and Redis are the machine's (XENIOS_TEST_DATABASE_URL /
XENIOS_TEST_REDIS_URL) or embedded ones, with a fresh database. The audio repeats the test dialogue
(tests/data/audio/dialogue.wav) and is written at bench time, never committed.

1. Speed, 5 minutes of audio. The baseline is the same engine with the same settings (`Transcriber` with
   the WHISPER_* / TRANSCRIPTION_* defaults: tiny.en int8, 2 threads, beam 5, 300 s windows) called in
   this process on the same file: only the job system differs. Rounds alternate direct, job and raw
   faster-whisper (best of each, so other load on the machine hurts all three alike). Job time is what a
   client sees: multipart upload -> job succeeded (its events stream ends), including the upload,
   queueing, the worker's claim, progress writes and storing the result. CPU seconds are compared too
   (this process for the engine; the API's and the worker's processes for the job), which other load on
   the machine hardly changes. Raw faster-whisper (``WhisperModel.transcribe`` on the file: no windows,
   no word alignment) is context, not the baseline.
0. Decoding, sequential (the path before batching) vs batched, on the 5- and 60-minute files: wall time,
   RTF, CPU seconds, peak RSS, WER (tests/benchmarks/transcription_decoding.py; targets: 60 minutes at
   least 1.6x faster, peak RSS <= 1 GB, WER at most 1 point worse).
2. Memory, 60 minutes of audio through the job system on a freshly started worker: the peak RSS (VmHWM) of
   the worker process that ran the job, and its RSS when idle after boot (model loaded).

3. Speakers (`tests/benchmarks/speakers_bench.py`): the same 5-minute two-voice dialogue as a mono mix,
   two channels (clean, -20 dB bleed) and two tracks; time ratios to the mono mix, attribution accuracy,
   WER per speaker.

Targets: job-system overhead <= 5% of the engine's own time; worker peak RSS for 60 minutes <= 1 GB;
two channels and two tracks <= 1.3x the mono mix.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.bench_whisper_direct import make_long_wav
from tests.benchmarks.common import database, rss_samples, service_env, worker
from tests.benchmarks.speakers_bench import run as run_speakers
from tests.benchmarks.transcription_decoding import compare
from tests.benchmarks.transcription_decoding import print_tables as print_decoding
from tests.support.jobs import accepted_id, job_events, upload
from tests.support.processes import ApiServer, WorkerProcess, child_pid, cpu_seconds, status_kb
from xenios_ai.gc_tuning import settle
from xenios_ai.settings_load import load_settings
from xenios_ai.transcription import shared_transcriber

TARGET_OVERHEAD = 0.05
TARGET_PEAK_RSS_MB = 1024.0


def _through_jobs(api: str, path: Path, pids: tuple[int, ...] = ()) -> dict[str, Any]:
    """Upload ``path`` and follow the job's events until it ends: client-side seconds, the CPU seconds of
    ``pids`` (the API's and the worker's processes) meanwhile, and the job."""
    cpu = cpu_seconds(*pids)
    started = time.perf_counter()
    with path.open("rb") as audio:
        job_id = accepted_id(upload(api, "transcription", path.name, audio, timeout=600))
    uploaded = time.perf_counter() - started
    final = job_events(api, job_id, timeout=httpx.Timeout(30, read=None))[-1][1]
    elapsed = time.perf_counter() - started
    assert final["status"] == "succeeded", final
    cpu = cpu_seconds(*pids) - cpu
    return {"seconds": elapsed, "cpu_seconds": cpu, "upload_seconds": uploaded, "job": final}


def _raw_faster_whisper(model: Any, path: Path, beam_size: int) -> float:
    started = time.perf_counter()
    segments, _ = model.transcribe(str(path), language="en", beam_size=beam_size, vad_filter=True)
    for _ in segments:
        pass
    return time.perf_counter() - started


def _speed(api: ApiServer, running: WorkerProcess, path: Path, rounds: int) -> dict[str, Any]:
    """Rounds of (Transcriber in-process, the job system, raw faster-whisper) on ``path``; best of each."""
    transcriber = shared_transcriber(load_settings({}, dotenv=False))  # the worker's settings: defaults
    settle()  # the collector set up as the worker's, so only the job system differs
    transcriber.transcribe(path.with_name("warmup.wav"))
    pids = (child_pid(api.process), child_pid(running.process))
    direct: list[tuple[float, float]] = []
    jobs: list[dict[str, Any]] = []
    raw: list[float] = []
    audio = 0.0
    for _ in range(rounds):
        cpu = time.process_time()
        result = transcriber.transcribe(path)
        direct.append((result.processing_seconds, time.process_time() - cpu))
        audio = result.duration
        jobs.append(_through_jobs(api.url, path, pids))
        raw.append(_raw_faster_whisper(transcriber._model, path, transcriber.beam_size))
    best_job = min(jobs, key=lambda j: j["seconds"])
    job_result = best_job["job"]["result"]
    engine_direct, through_jobs = min(d[0] for d in direct), best_job["seconds"]
    cpu_direct, cpu_jobs = min(d[1] for d in direct), min(j["cpu_seconds"] for j in jobs)
    return {
        "audio_seconds": round(audio, 1),
        "rounds": rounds,
        "raw_faster_whisper_seconds": round(min(raw), 2),
        "raw_faster_whisper_all": [round(r, 2) for r in raw],
        "engine_direct_seconds": round(engine_direct, 2),
        "engine_direct_all": [round(d[0], 2) for d in direct],
        "job_seconds": round(through_jobs, 2),
        "job_all": [round(j["seconds"], 2) for j in jobs],
        "job_upload_seconds": round(best_job["upload_seconds"], 3),
        "engine_in_worker_seconds": round(job_result["processing_seconds"], 2),
        "rtf_raw_faster_whisper": round(min(raw) / audio, 4),
        "rtf_engine_direct": round(engine_direct / audio, 4),
        "rtf_job": round(through_jobs / audio, 4),
        "overhead_seconds": round(through_jobs - engine_direct, 3),
        "overhead_ratio": round(through_jobs / engine_direct - 1, 4),
        "overhead_outside_engine_seconds": round(through_jobs - job_result["processing_seconds"], 3),
        "cpu_engine_direct_seconds": round(cpu_direct, 2),
        "cpu_job_system_seconds": round(cpu_jobs, 2),
        "cpu_overhead_ratio": round(cpu_jobs / cpu_direct - 1, 4),
        "ratio_job_to_raw_faster_whisper": round(through_jobs / min(raw), 3),
        "target_overhead_ratio": TARGET_OVERHEAD,
        "segments": len(job_result["segments"]),
    }


def _memory(api: str, env: dict[str, str], path: Path, log: Path) -> dict[str, Any]:
    with worker(env, "transcription", log) as running:
        pid = child_pid(running.process)
        time.sleep(1)
        idle_rss = status_kb(pid, "VmRSS")
        with rss_samples(pid, 1.0) as samples:
            run = _through_jobs(api, path)
        peak = status_kb(pid, "VmHWM")
    result = run["job"]["result"]
    return {
        "audio_seconds": round(result["duration"], 1),
        "job_seconds": round(run["seconds"], 1),
        "rtf_job": round(run["seconds"] / result["duration"], 4),
        "segments": len(result["segments"]),
        "worker_idle_rss_mb": round(idle_rss / 1024),
        "worker_peak_rss_mb": round(peak / 1024),
        "worker_rss_max_sampled_mb": round(max(samples, default=0) / 1024),
        "target_peak_rss_mb": TARGET_PEAK_RSS_MB,
        "peak_ratio_to_target": round(peak / 1024 / TARGET_PEAK_RSS_MB, 3),
    }


def run(out_dir: Path, *, minutes: float = 5, long_minutes: float = 60, rounds: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-decoding-") as tmp:
        # Sequential vs batched decoding (issue 23), each case in a fresh process: before the job system's
        # parties start, so they do not share the machine with it.
        decoding = compare(Path(tmp), (minutes, long_minutes))
    print_decoding(decoding)
    with database() as (database_url, redis_url), tempfile.TemporaryDirectory(prefix="bench-tr-") as tmp:
        folder = Path(tmp)
        env = service_env(
            database_url, redis_url, STORAGE_DIR=str(folder / "storage"), DATA_DIR=str(folder / "data")
        )
        short = make_long_wav(folder / f"dialogue-{minutes:g}min.wav", minutes)
        make_long_wav(folder / "warmup.wav", 0.5)
        long = make_long_wav(folder / f"dialogue-{long_minutes:g}min.wav", long_minutes)
        api = ApiServer(env, workers=1, log_path=out_dir / "bench-transcription-api.log")
        api.start()
        try:
            with worker(env, "transcription", out_dir / "bench-transcription-worker.log") as running:
                _through_jobs(api.url, folder / "warmup.wav")
                speed = _speed(api, running, short, rounds)
            memory = _memory(api.url, env, long, out_dir / "bench-transcription-worker-long.log")
        finally:
            api.stop()
    result = {"decoding": decoding, "speed": speed, "memory": memory}
    _print(result)
    result["speakers"] = run_speakers(out_dir, minutes=minutes)
    return result


def _print(result: dict[str, Any]) -> None:
    s, m = result["speed"], result["memory"]
    title = f"{s['audio_seconds'] / 60:g}-minute file ({s['audio_seconds']} s)"
    print(f"{title:<44}{'seconds':>9}{'RTF':>8}{'x real time':>13}")
    for name, seconds, rtf in (
        (
            "raw faster-whisper (no windows, no words)",
            s["raw_faster_whisper_seconds"],
            s["rtf_raw_faster_whisper"],
        ),
        ("Transcriber in-process (baseline)", s["engine_direct_seconds"], s["rtf_engine_direct"]),
        ("job system: upload -> succeeded", s["job_seconds"], s["rtf_job"]),
    ):
        print(f"{name:<44}{seconds:>9}{rtf:>8}{round(1 / rtf, 1):>13}")
    print(
        f"  overhead {s['overhead_seconds']} s = {s['overhead_ratio']:.1%} of the engine's time "
        f"(target <= {TARGET_OVERHEAD:.0%}); engine inside the worker {s['engine_in_worker_seconds']} s, "
        f"outside it {s['overhead_outside_engine_seconds']} s (upload {s['job_upload_seconds']} s)"
    )
    print(
        f"  CPU: engine in-process {s['cpu_engine_direct_seconds']} s, job system (API + worker processes) "
        f"{s['cpu_job_system_seconds']} s: overhead {s['cpu_overhead_ratio']:.1%}"
    )
    title = f"{m['audio_seconds'] / 60:g}-minute file through the job system"
    print(f"\n{title:<44}{'MB':>9}")
    print(f"{'worker RSS idle (model loaded)':<44}{m['worker_idle_rss_mb']:>9}")
    print(f"{'worker peak RSS (VmHWM)':<44}{m['worker_peak_rss_mb']:>9}")
    print(
        f"  peak {m['peak_ratio_to_target']:.0%} of the {TARGET_PEAK_RSS_MB:g} MB target; "
        f"{m['audio_seconds']} s of audio in {m['job_seconds']} s (RTF {m['rtf_job']})"
    )


def main() -> None:
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 5
    long_minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 60
    print(json.dumps(run(out, minutes=minutes, long_minutes=long_minutes), indent=2))


if __name__ == "__main__":
    main()
