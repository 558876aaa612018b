"""The job system end to end with STORAGE_BACKEND=s3: an API and a worker on a real SeaweedFS bucket, with
no storage directory between them (each has its own DATA_DIR; STORAGE_DIR points nowhere they share).

The same journeys the local-backend tests make: extraction with a result part kept in the bucket and
streamed back, transcription with a ``then`` analysis, a job from a storage key, cancel, owner isolation,
retention removing the objects, the API's memory bounded during a 200 MB upload, and a worker killed with SIGKILL mid-job (the crash tests' journey,
tests/e2e/test_jobs_crash.py: here the new worker shares no disk with the dead one, so it can only take
the upload from the bucket). (The local backend runs the full e2e suite; this module repeats the
journeys that touch storage, on S3, within the test-time budget.)
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import obstore
import pytest

from tests.support import tokens
from tests.support.clock import FakeClock
from tests.support.config import make_settings
from tests.support.jobs import accepted_id, form_part_head, upload, wait_for_job
from tests.support.processes import ROOT, ApiServer, WorkerProcess, child_pid, start_worker, status_kb
from tests.support.seaweed import SeaweedFS
from xenios_ai.db.pool import open_pool
from xenios_ai.db.redis import open_redis
from xenios_ai.jobs import maintenance
from xenios_ai.jobs.service import JobService
from xenios_ai.settings import Settings
from xenios_ai.storage import open_source_storage, open_storage
from xenios_ai.storage.s3 import make_store

DOCUMENTS = ROOT / "tests" / "data" / "documents"
AUDIO = ROOT / "tests" / "data" / "audio"
DAY = 86400.0
MIB = 1024 * 1024


class S3Stack:
    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.settings: Settings = make_settings(env)
        api_env = env | {"DATA_DIR": str(folder / "api-data")}
        worker_env = env | {"DATA_DIR": str(folder / "worker-data")}
        self.api = ApiServer(api_env, log_path=folder / "api.log")
        self.worker = WorkerProcess(
            worker_env,
            queues="extraction,transcription,llm,default",
            threads=2,
            log_path=folder / "worker.log",
        )

    @property
    def url(self) -> str:
        return self.api.url

    def objects(self, job_id: str) -> dict[str, int | None]:
        """The sizes of the job's objects in the bucket (under S3_KEY_PREFIX), by name."""
        root = open_source_storage(self.settings)

        async def sizes() -> dict[str, int | None]:
            names = ("upload", "document.json")
            return {n: await root.size(f"xenios/jobs/{job_id}/{n}") for n in names}

        return asyncio.run(sizes())


@pytest.fixture(scope="module")
def stack(
    seaweedfs: SeaweedFS, fresh_env: Callable[..., dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Stack]:
    folder = tmp_path_factory.mktemp("s3-stack")
    bucket = seaweedfs.create_bucket(f"jobs-{uuid.uuid4().hex[:12]}")
    nowhere = folder / "no-shared-storage"
    env = fresh_env(
        **seaweedfs.env(bucket, S3_KEY_PREFIX="xenios/"),
        STORAGE_DIR=str(nowhere),
        EXTRACTION_INLINE_DOCUMENT_BYTES="2000",
        SOURCE_STORAGE_PREFIXES="uploads/{owner}/",
    )
    built = S3Stack(env, folder)
    built.api.start()
    built.worker.start()
    yield built
    built.worker.stop()
    built.api.stop()
    assert not nowhere.exists() or not [p for p in nowhere.rglob("*") if p.is_file()]


def test_extraction_keeps_upload_and_result_in_the_bucket_and_streams_the_part(stack: S3Stack) -> None:
    response = upload(stack.url, "extraction", "multipage.pdf", (DOCUMENTS / "multipage.pdf").read_bytes())
    job_id = accepted_id(response)
    job = wait_for_job(stack.url, job_id, timeout=180)
    assert job["status"] == "succeeded", job
    reference = job["result"]["document_file"]
    assert reference is not None
    assert job["result"]["document"] is None
    part = httpx.get(f"{stack.url}{reference['url']}", headers=tokens.headers(), timeout=30)
    assert part.status_code == 200
    assert len(part.content) == reference["size"] == int(part.headers["content-length"])
    assert json.loads(part.content)["pages"]
    sizes = stack.objects(job_id)
    assert sizes["document.json"] == reference["size"]
    assert sizes["upload"] == (DOCUMENTS / "multipage.pdf").stat().st_size
    # Another user sees neither the job nor its part.
    assert httpx.get(f"{stack.url}/api/v1/jobs/{job_id}", headers=tokens.headers("user-2")).status_code == 404
    other = httpx.get(f"{stack.url}{reference['url']}", headers=tokens.headers("user-2"), timeout=10)
    assert other.status_code == 404
    events = httpx.get(f"{stack.url}/api/v1/jobs/{job_id}/events", headers=tokens.headers("user-2"))
    assert events.status_code == 404
    deleted = httpx.delete(f"{stack.url}/api/v1/jobs/{job_id}", headers=tokens.headers("user-2"))
    assert deleted.status_code == 404
    listed = httpx.get(f"{stack.url}/api/v1/jobs/", headers=tokens.headers("user-2")).json()["items"]
    assert job_id not in [item["id"] for item in listed]
    # ... and its objects are untouched by the attempt.
    assert stack.objects(job_id) == sizes


def test_transcription_and_its_analysis_run_from_the_bucket(stack: S3Stack) -> None:
    data = (AUDIO / "dialogue.ogg").read_bytes()
    job_id = accepted_id(
        upload(stack.url, "transcription", "dialogue.ogg", data, {"then": ["session_summary"]})
    )
    job = wait_for_job(stack.url, job_id, timeout=180)
    assert job["status"] == "succeeded", job
    assert "week" in job["result"]["text"].lower()
    follow_up = job["result"]["follow_ups"][0]["job_id"]
    analysis = wait_for_job(stack.url, follow_up, timeout=60)
    assert analysis["status"] == "succeeded", analysis
    assert stack.objects(job_id)["upload"] == len(data)


def test_a_job_from_a_storage_key_in_the_bucket(stack: S3Stack) -> None:
    key = f"uploads/user-1/{uuid.uuid4().hex}.md"
    asyncio.run(open_source_storage(stack.settings).put_bytes(key, (DOCUMENTS / "notes.md").read_bytes()))
    response = httpx.post(
        f"{stack.url}/api/v1/jobs/extraction",
        json={"source": {"storage_key": key}},
        headers=tokens.headers(),
        timeout=30,
    )
    job = wait_for_job(stack.url, accepted_id(response), timeout=120)
    assert job["status"] == "succeeded", job
    assert "Session Notes" in job["result"]["markdown"]


def test_cancel_and_retention_remove_the_jobs_objects(stack: S3Stack) -> None:
    data = (DOCUMENTS / "notes.md").read_bytes()
    done = accepted_id(upload(stack.url, "extraction", "notes.md", data))
    assert wait_for_job(stack.url, done, timeout=120)["status"] == "succeeded"
    cancelled = accepted_id(upload(stack.url, "extraction", "notes.md", data))
    httpx.delete(f"{stack.url}/api/v1/jobs/{cancelled}", headers=tokens.headers(), timeout=10)
    assert wait_for_job(stack.url, cancelled, timeout=60)["status"] in ("cancelled", "succeeded")
    assert stack.objects(done)["upload"] == len(data)

    async def expire() -> int:
        settings = stack.settings
        db = await open_pool(settings, wait=True)
        redis = open_redis(settings)
        jobs = JobService(settings, db, redis, open_storage(settings))
        try:
            clock = FakeClock()
            clock.advance(settings.job_retention_days * DAY + 60)
            return await maintenance.expire(jobs, clock=clock.time)
        finally:
            await jobs.hub.aclose()
            await redis.aclose()
            await db.close()

    assert asyncio.run(expire()) >= 2
    assert stack.objects(done) == {"upload": None, "document.json": None}
    assert stack.objects(cancelled)["upload"] is None


def test_a_worker_killed_mid_job_is_replaced_and_the_job_succeeds_once(
    stack: S3Stack, tmp_path: Path
) -> None:
    """SIGKILL the stack's worker while it transcribes; a new worker (its own DATA_DIR: no disk shared
    with the dead one) takes the job over from the bucket and finishes it once, its follow-up once."""
    user = f"crash-{uuid.uuid4().hex[:8]}"
    audio = AUDIO / "dialogue.wav"  # 34 s: seconds to transcribe, and "running" is seen in 50 ms
    response = upload(
        stack.url, "transcription", audio.name, audio.read_bytes(), {"then": ["session_summary"]}, sub=user
    )
    job_id = accepted_id(response)
    wait_for_job(stack.url, job_id, sub=user, statuses=("running",), timeout=60)
    stack.worker.kill()
    killed_at = time.monotonic()
    env = stack.env | {"DATA_DIR": str(tmp_path / "worker-2-data")}
    stack.worker = start_worker(env, tmp_path / "worker-2.log", queues=stack.worker.queues, threads=2)
    job = wait_for_job(stack.url, job_id, sub=user, timeout=90)
    recovered_in = time.monotonic() - killed_at
    print(f"\nkill -9 mid-transcription on s3 -> succeeded on a new worker in {recovered_in:.1f} s")
    assert (job["status"], job["attempts"]) == ("succeeded", 2), job
    assert "week" in job["result"]["text"].lower()
    follow_ups = job["result"]["follow_ups"]
    assert len(follow_ups) == 1
    assert wait_for_job(stack.url, follow_ups[0]["job_id"], sub=user, timeout=60)["status"] == "succeeded"
    listed = httpx.get(f"{stack.url}/api/v1/jobs/", headers=tokens.headers(user)).json()["items"]
    assert sorted(item["kind"] for item in listed) == ["analysis", "transcription"]  # one follow-up, once
    assert stack.objects(job_id)["upload"] == audio.stat().st_size


def _silent_wav_form(data_bytes: int) -> Iterable[bytes]:
    """A multipart body streamed in 1 MiB chunks: a WAV of ``data_bytes`` of silence in ``file``, then
    ``options`` that are not JSON (so the API stores the whole file, then refuses the form)."""
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", data_bytes)
    yield form_part_head("file", "silence.wav") + header
    block = bytes(MIB)
    for _ in range(data_bytes // MIB):
        yield block
    yield b"\r\n" + form_part_head("options") + b"not json\r\n--BOUNDARY--\r\n"


def test_a_200_mb_upload_keeps_the_api_memory_bounded_and_a_refused_form_leaves_no_object(
    stack: S3Stack,
) -> None:
    """The file goes to the bucket as a multipart upload while it arrives (5 MiB parts, 4 in flight,
    docs/decisions/0006-s3-storage.md): the API's RSS rises by far less than the file (issue 15: <= 64 MB
    for 500 MB; `just bench storage` measures that). The bad ``options`` after it make the API delete the
    object it had stored."""
    store = make_store(stack.settings, prefix=None)
    before_keys = {meta["path"] for batch in obstore.list(store, prefix="xenios/") for meta in batch}
    pid = child_pid(stack.api.process)
    baseline = status_kb(pid, "VmRSS")
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            samples.append(status_kb(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        response = httpx.post(
            f"{stack.url}/api/v1/jobs/transcription",
            content=_silent_wav_form(200 * MIB),
            headers=tokens.headers() | {"content-type": "multipart/form-data; boundary=BOUNDARY"},
            timeout=60,
        )
    finally:
        done.set()
        sampler.join()
    rise_mb = (max(samples, default=baseline) - baseline) / 1024
    print(f"\n200 MiB upload to s3 in {time.monotonic() - started:.1f} s, API RSS rise {rise_mb:.1f} MB")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_options"
    assert len(samples) > 10
    assert rise_mb <= 64
    after_keys = {meta["path"] for batch in obstore.list(store, prefix="xenios/") for meta in batch}
    assert after_keys == before_keys
