"""The worker registry (``<namespace>:workers``) lists live workers only (issue 20): a stopped worker
removes itself, also when the stop signal reaches its process twice (a SIGTERM to the process group plus
the one Dramatiq's master forwards: Dramatiq then exits at once) and also when that signal arrives while
it starts; a worker that died without a word is dropped after a few missed heartbeats, not an hour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import redis

from tests.support.processes import WorkerProcess, start_worker, stop_process, wait_until
from xenios_ai.db.redis import open_redis
from xenios_ai.jobs.queues import WorkerInfo, prune_registry, registry_max_age, workers_key
from xenios_ai.settings import Settings


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(env: dict[str, str]) -> list[str]:
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        return [_text(key) for key in client.hkeys(workers_key(env["REDIS_NAMESPACE"]))]
    finally:
        client.close()


def test_a_stopped_worker_leaves_the_registry(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = fresh_env()
    worker = start_worker(env, tmp_path / "worker.log", queues="default", threads=1)
    assert len(_entries(env)) == 1
    worker.stop()  # SIGTERM to the process group: the worker process gets it twice
    assert _entries(env) == [], (tmp_path / "worker.log").read_text()[-3000:]


def test_a_worker_stopped_while_it_starts_leaves_no_entry(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = fresh_env()
    worker = WorkerProcess(env, queues="default", threads=1, log_path=tmp_path / "worker.log")
    worker.start()
    wait_until(lambda: bool(_entries(env)), 120, "the worker to register", interval=0.01)
    stop_process(worker.process, group=True)  # at once: its start-up has barely ended
    assert _entries(env) == [], (tmp_path / "worker.log").read_text()[-3000:]


async def test_a_silent_worker_is_dropped_after_a_few_missed_heartbeats(settings: Settings) -> None:
    max_age = registry_max_age(settings.worker_heartbeat_seconds, settings.stale_job_seconds)
    assert max_age == max(3 * settings.worker_heartbeat_seconds, settings.stale_job_seconds)
    assert registry_max_age(3.0, 12.0) == 12.0  # production defaults: four heartbeats, not an hour
    prefix = f"{settings.redis_namespace}:registry-test"
    now = time.time()
    entries = {
        "alive": WorkerInfo("alive", "h", 1, ["default"], now - 600, now - max_age / 2),
        "silent": WorkerInfo("silent", "h", 2, ["default"], now - 600, now - max_age - 1),
    }
    client = open_redis(settings)
    try:
        key = workers_key(prefix)
        await client.hset(key, mapping={k: msgspec.json.encode(v) for k, v in entries.items()})
        await client.hset(key, "garbled", b"not json")
        assert sorted(await prune_registry(client, prefix, max_age=max_age, now=now)) == ["garbled", "silent"]
        assert [_text(k) for k in await client.hkeys(key)] == ["alive"]
        await client.delete(key)
    finally:
        await client.aclose()
