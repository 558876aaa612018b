"""Crash safety with real processes: a worker killed with SIGKILL mid-job, Redis restarted mid-run, and a
cancelled job whose message is still queued. Each test has its own database, Redis namespace (or Redis),
API and workers, so nothing shared can rescue or disturb its jobs.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.jobs import WebhookReceiver, accepted_id, job_events, submit_analysis, wait_for_job
from tests.support.processes import ApiServer, RedisServer, WorkerProcess, start_worker, wait_until

FAKE_KEY = "sk-or-v1-crash-tests"


@contextmanager
def _api(env: dict[str, str], log: Path) -> Iterator[str]:
    server = ApiServer(env, log_path=log)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _submit(api: str, text: str, **extra: Any) -> str:
    return accepted_id(submit_analysis(api, {"task": "session_summary", "text": text, **extra}))


def _requests_for(fake: FakeOpenRouter, marker: str) -> int:
    return sum(marker in json.dumps(request.body) for request in fake.requests)


@contextmanager
def _kill_mid_job(
    api: str, env: dict[str, str], fake: FakeOpenRouter, tmp_path: Path, marker: str, **extra: Any
) -> Iterator[tuple[dict[str, Any], float]]:
    """Submit a job, SIGKILL its worker while the job is in its LLM call, start a new worker: the job
    once it ended, and the seconds from the kill to its end. The new worker runs until the block ends."""
    first = start_worker(env, tmp_path / "worker-1.log")
    second: WorkerProcess | None = None
    try:
        job_id = _submit(api, f"session {marker}", **extra)
        wait_for_job(api, job_id, statuses=("running",))
        fake.wait_for(lambda requests: any(marker in json.dumps(r.body) for r in requests))
        first.kill()
        killed_at = time.monotonic()
        second = start_worker(env, tmp_path / "worker-2.log")
        job = wait_for_job(api, job_id, timeout=60)
        yield job, time.monotonic() - killed_at
    finally:
        first.kill()
        if second is not None:
            second.stop()


def test_a_job_whose_worker_is_killed_succeeds_exactly_once_on_a_new_worker(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    with FakeOpenRouter(api_key=FAKE_KEY) as fake, WebhookReceiver() as receiver:
        fake.enqueue(Reply(hang=300))  # the first call never answers: the job is mid-call when killed
        env = fresh_env(
            OPENROUTER_BASE_URL=fake.base_url, OPENROUTER_API_KEY=FAKE_KEY, WEBHOOK_ALLOW_PRIVATE="true"
        )
        marker = uuid.uuid4().hex
        with (
            _api(env, tmp_path / "api.log") as api,
            _kill_mid_job(api, env, fake, tmp_path, marker, webhook_url=receiver.url) as (job, recovered_in),
        ):
            deliveries = receiver.wait_for(1)  # by the new worker, which runs until the block ends
            time.sleep(1.0)  # a second "succeeded" would arrive by now

        print(f"\nkill -9 mid-job -> succeeded on a new worker in {recovered_in:.1f} s")
        # The new worker's boot, then STALE_JOB_SECONDS (3 s here): the sweep re-queues the job, or the
        # redelivered message (BROKER_HEARTBEAT_TIMEOUT_MS, 5 s here) finds it stale and takes it over.
        assert recovered_in < 30
        assert job["status"] == "succeeded"
        assert job["attempts"] == 2
        assert job["result"]["content"]
        assert _requests_for(fake, marker) == 2
        events = [json.loads(body)["type"] for _, body in receiver.deliveries]
        assert events == ["job.succeeded"]
        assert len(deliveries) == 1


def test_a_killed_workers_redelivered_message_takes_its_job_over_without_the_sweep(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """Dramatiq hands a dead worker's message to another after BROKER_HEARTBEAT_TIMEOUT_MS; by then the
    job's heartbeat is older than STALE_JOB_SECONDS (the settings guarantee it), so the claim takes the
    job over instead of dropping the message. The sweep is kept out (its lock is held)."""
    with FakeOpenRouter(api_key=FAKE_KEY) as fake:
        fake.enqueue(Reply(hang=300))
        env = fresh_env(OPENROUTER_BASE_URL=fake.base_url, OPENROUTER_API_KEY=FAKE_KEY)
        sweep_lock = f"{env['REDIS_NAMESPACE']}:jobs:sweep-lock"
        client = redis.Redis.from_url(env["REDIS_URL"])
        client.set(sweep_lock, "the test", px=600_000)
        try:
            with _api(env, tmp_path / "api.log") as api:
                marker = uuid.uuid4().hex
                with _kill_mid_job(api, env, fake, tmp_path, marker) as (job, recovered_in):
                    pass
        finally:
            client.delete(sweep_lock)
            client.close()

    print(f"\nkill -9 mid-job -> taken over by its redelivered message in {recovered_in:.1f} s")
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    assert _requests_for(fake, marker) == 2
    log = (tmp_path / "worker-2.log").read_text()
    assert "put back in the queue" not in log  # not the sweep's doing


def _ready_status(api: str) -> int:
    try:
        return httpx.get(f"{api}/health/ready", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def test_redis_restarted_mid_run_loses_no_job(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    with FakeOpenRouter(api_key=FAKE_KEY, default=Reply(hang=0.3)) as fake:
        env = fresh_env(
            REDIS_URL=redis_server.url, OPENROUTER_BASE_URL=fake.base_url, OPENROUTER_API_KEY=FAKE_KEY
        )
        worker: WorkerProcess | None = None
        try:
            with _api(env, tmp_path / "api.log") as api:
                worker = start_worker(env, tmp_path / "worker.log", threads=2)
                markers: dict[str, str] = {}

                def submit(text: str = "") -> None:
                    marker = uuid.uuid4().hex
                    markers[_submit(api, f"{text} {marker}")] = marker

                for _ in range(6):
                    submit()
                slow = _submit(api, f"slow {uuid.uuid4().hex} [[fake:{json.dumps({'hang': 4})}]]")
                stream: list[tuple[str, Any]] = []
                follower = threading.Thread(target=_follow, args=(api, slow, stream), daemon=True)
                follower.start()
                wait_for_job(api, slow, statuses=("running",))

                redis_server.stop()
                wait_until(lambda: _ready_status(api) == 503, 10, "ready to report Redis down")
                for _ in range(4):
                    submit("sent while Redis is down")
                time.sleep(1.0)
                redis_server.start()
                wait_until(lambda: _ready_status(api) == 200, 30, "ready to recover", interval=0.2)
                for _ in range(2):
                    submit()

                jobs = {job_id: wait_for_job(api, job_id, timeout=60) for job_id in [*markers, slow]}
                follower.join(30)
        finally:
            if worker is not None:
                worker.stop()
            redis_server.stop()

    assert {job["status"] for job in jobs.values()} == {"succeeded"}
    for job_id, marker in markers.items():
        assert _requests_for(fake, marker) == 1, f"job {job_id} ran {_requests_for(fake, marker)} times"
    assert not follower.is_alive()
    assert stream[0][0] == "state"
    assert stream[-1][0] == "state"
    assert stream[-1][1]["status"] == "succeeded"


def _follow(api: str, job_id: str, into: list[tuple[str, Any]]) -> None:
    into.extend(job_events(api, job_id))


def test_a_job_cancelled_while_queued_never_runs_on_a_worker(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    with FakeOpenRouter(api_key=FAKE_KEY) as fake:
        env = fresh_env(OPENROUTER_BASE_URL=fake.base_url, OPENROUTER_API_KEY=FAKE_KEY)
        with _api(env, tmp_path / "api.log") as api:
            cancelled_marker, kept_marker = uuid.uuid4().hex, uuid.uuid4().hex
            cancelled = _submit(api, f"cancel me {cancelled_marker}")
            response = httpx.delete(f"{api}/api/v1/jobs/{cancelled}", headers=tokens.headers())
            assert response.json()["status"] == "cancelled"
            kept = _submit(api, f"keep me {kept_marker}")  # queued behind the cancelled one's message
            worker = start_worker(env, tmp_path / "worker.log")
            try:
                assert wait_for_job(api, kept)["status"] == "succeeded"
            finally:
                worker.stop()
            job = wait_for_job(api, cancelled)
    assert (job["status"], job["attempts"], job["started_at"]) == ("cancelled", 0, None)
    assert _requests_for(fake, cancelled_marker) == 0
    assert _requests_for(fake, kept_marker) == 1
