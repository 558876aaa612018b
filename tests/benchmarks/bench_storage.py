"""Storage backends: upload -> succeeded with ``s3`` against ``local``, and the API's RSS during a big upload.

    uv run python -m tests.benchmarks storage          (or: just bench storage)

Two stacks run side by side, each its own database and Redis namespace, API (``xenios-ai serve``, one
Granian worker, production settings) and worker (``extraction,transcription``, one process, one thread):
one with STORAGE_BACKEND=local (a directory), one with STORAGE_BACKEND=s3 on a SeaweedFS started here
(tests/support/seaweed.py: ``weed server`` on loopback, signed requests), API and worker with separate
DATA_DIRs. PostgreSQL and Redis are the machine's (XENIOS_TEST_DATABASE_URL / XENIOS_TEST_REDIS_URL) or
embedded ones. The inputs are written at bench time, never committed.

1. API memory: a 500 MB WAV (silence) POSTed to /api/v1/jobs/transcription, streamed from disk by the
   client, with each backend, before any worker runs (the job is cancelled while queued). The rise is
   the API process's peak RSS (VmRSS sampled every 20 ms, and VmHWM) over its RSS before the upload.
2. Jobs: upload -> succeeded (the job's events stream ends), a 50 MB PDF (ten pages, each one large JPEG of
   noise; the default native PDF pipeline reads them in well under a second, so this case is nearly all
   storage I/O) and 30 minutes of audio (the test dialogue repeated),
   the backends taking turns after a warm-up job each (models loaded). The ratio s3 / local is the cost
   of the bucket: the upload's multipart PUT, the worker streaming the object to its temporary file.

Targets (issue 15): s3 within 10% of local on the 30-minute audio; API RSS rise <= 64 MB.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import tempfile
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.benchmarks.bench_whisper_direct import make_long_wav
from tests.benchmarks.common import ROOT, database, rss_samples, service_env, worker
from tests.support import tokens
from tests.support.jobs import accepted_id, job_events, upload
from tests.support.processes import ApiServer, child_pid, status_kb
from tests.support.seaweed import SeaweedFS

TARGET_RSS_RISE_MB = 64.0
TARGET_S3_OVERHEAD = 0.10
BIG_UPLOAD_BYTES = 500_000_000
DOCUMENTS = ROOT / "tests" / "data" / "documents"


def make_big_pdf(path: Path, megabytes: float, *, side: int = 2400) -> Path:
    """A PDF of pages that are each one large JPEG of noise (incompressible), ``megabytes`` in all."""
    rng = random.Random(15)
    pages: list[Image.Image] = []
    size = 0
    while size < megabytes * 1_000_000:
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        pages.append(image)
        size += len(_jpeg(image))
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=300.0, quality=90)
    return path


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_silent_wav(path: Path, total_bytes: int) -> Path:
    """A 16 kHz mono WAV of silence, ``total_bytes`` long (written in 1 MiB steps)."""
    frames = (total_bytes - 44) // 2
    block = b"\0" * (1 << 20)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        remaining = frames * 2
        while remaining > 0:
            out.writeframes(block[: min(len(block), remaining)])
            remaining -= min(len(block), remaining)
    return path


class Stack:
    """An API and (from `workers`) a worker on one storage backend."""

    def __init__(self, name: str, env: dict[str, str], folder: Path, out_dir: Path) -> None:
        self.name = name
        self.env = env
        self.folder = folder
        self.out_dir = out_dir
        self.api = ApiServer(env | {"DATA_DIR": str(folder / "api-data")}, workers=1,
                             log_path=out_dir / f"bench-storage-{name}-api.log")  # fmt: skip

    @contextlib.contextmanager
    def running_worker(self) -> Iterator[None]:
        env = self.env | {"DATA_DIR": str(self.folder / "worker-data")}
        with worker(env, "extraction,transcription", self.out_dir / f"bench-storage-{self.name}-worker.log"):
            yield


def _upload_rss(stack: Stack, path: Path) -> dict[str, Any]:
    """POST ``path`` as a transcription (streamed from disk); the API process's RSS rise meanwhile."""
    pid = child_pid(stack.api.process)
    before_rss, before_hwm = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    started = time.perf_counter()
    with rss_samples(pid, 0.02) as samples, path.open("rb") as data:
        response = upload(stack.api.url, "transcription", path.name, data, timeout=600)
    seconds = time.perf_counter() - started
    job_id = accepted_id(response)
    cancelled = httpx.delete(f"{stack.api.url}/api/v1/jobs/{job_id}", headers=tokens.headers(), timeout=30)
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    hwm = status_kb(pid, "VmHWM")
    peak = max([*samples, hwm if hwm > before_hwm else 0])
    return {
        "bytes": path.stat().st_size,
        "upload_seconds": round(seconds, 2),
        "mb_per_second": round(path.stat().st_size / 1e6 / seconds, 1),
        "rss_before_mb": round(before_rss / 1024, 1),
        "rss_peak_mb": round(peak / 1024, 1),
        "rss_rise_mb": round((peak - before_rss) / 1024, 1),
        "samples": len(samples),
    }


def _job(stack: Stack, kind: str, path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with path.open("rb") as data:
        job_id = accepted_id(upload(stack.api.url, kind, path.name, data, timeout=600))
    uploaded = time.perf_counter() - started
    final = job_events(stack.api.url, job_id, timeout=httpx.Timeout(30, read=None))[-1][1]
    assert final["status"] == "succeeded", final
    return {"seconds": time.perf_counter() - started, "upload_seconds": uploaded, "result": final["result"]}


def _compare(stacks: list[Stack], kind: str, path: Path, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {stack.name: [] for stack in stacks}
    for _ in range(rounds):
        for stack in stacks:
            runs[stack.name].append(_job(stack, kind, path))
            print(
                f"  {kind} {path.name} on {stack.name}: {runs[stack.name][-1]['seconds']:.2f} s", flush=True
            )
    best = {name: min(r["seconds"] for r in results) for name, results in runs.items()}
    out: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size, "rounds": rounds}
    for name, results in runs.items():
        top = min(results, key=lambda r: r["seconds"])
        out[name] = {
            "seconds": round(best[name], 2),
            "all": [round(r["seconds"], 2) for r in results],
            "upload_seconds": round(top["upload_seconds"], 2),
        }
        if "processing_seconds" in top["result"]:
            out[name]["engine_seconds"] = round(top["result"]["processing_seconds"], 2)
    out["ratio_s3_to_local"] = round(best["s3"] / best["local"], 3)
    out["overhead_seconds"] = round(best["s3"] - best["local"], 2)
    return out


def run(out_dir: Path, *, pdf_mb: float = 50, audio_minutes: float = 30, rounds: int = 1) -> dict[str, Any]:
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp,
        database() as (local_db, redis_url),
        database() as (s3_db, _),
    ):
        folder = Path(tmp)
        seaweed = SeaweedFS(folder / "seaweedfs")
        seaweed.start()
        try:
            bucket = seaweed.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")
            local = Stack(
                "local",
                service_env(
                    local_db, redis_url, STORAGE_BACKEND="local", STORAGE_DIR=str(folder / "local-storage")
                ),
                folder / "local",
                out_dir,
            )
            s3 = Stack("s3", service_env(s3_db, redis_url, **seaweed.env(bucket, S3_KEY_PREFIX="xenios/"),
                                         STORAGE_DIR=str(folder / "nowhere")), folder / "s3", out_dir)  # fmt: skip
            stacks = [local, s3]
            big = make_silent_wav(folder / "big.wav", BIG_UPLOAD_BYTES)
            pdf = make_big_pdf(folder / f"photos-{pdf_mb:g}mb.pdf", pdf_mb)
            audio = make_long_wav(folder / f"dialogue-{audio_minutes:g}min.wav", audio_minutes)
            warm_audio = make_long_wav(folder / "warmup.wav", 0.5)
            for stack in stacks:
                stack.api.start()
            try:
                memory = {stack.name: _upload_rss(stack, big) for stack in stacks}
                big.unlink()
                with local.running_worker(), s3.running_worker():
                    for stack in stacks:  # models loaded, first-use imports done
                        _job(stack, "extraction", DOCUMENTS / "multipage.pdf")
                        _job(stack, "transcription", warm_audio)
                    document = _compare(stacks, "extraction", pdf, rounds)
                    transcription = _compare(stacks, "transcription", audio, rounds)
            finally:
                for stack in stacks:
                    stack.api.stop()
        finally:
            seaweed.stop()
    result = {
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "api_rss_during_upload": memory,
        "pdf": document,
        "audio": transcription,
        "targets": {"rss_rise_mb": TARGET_RSS_RISE_MB, "s3_overhead_on_audio": TARGET_S3_OVERHEAD},
    }
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    print(f"\n{'API RSS, 500 MB upload':<28}{'before MB':>10}{'peak MB':>10}{'rise MB':>10}{'MB/s':>8}")
    for name, m in result["api_rss_during_upload"].items():
        print(
            f"{name:<28}{m['rss_before_mb']:>10}{m['rss_peak_mb']:>10}{m['rss_rise_mb']:>10}{m['mb_per_second']:>8}"
        )
    print(f"\n{'upload -> succeeded':<28}{'local s':>10}{'s3 s':>10}{'s3/local':>10}{'s3-local s':>12}")
    for label, key in (("50 MB PDF", "pdf"), ("30 min audio", "audio")):
        c = result[key]
        print(f"{label:<28}{c['local']['seconds']:>10}{c['s3']['seconds']:>10}"
              f"{c['ratio_s3_to_local']:>10}{c['overhead_seconds']:>12}")  # fmt: skip
    print(f"  load average before {result['load_average_before']}, after {result['load_average_after']}")
