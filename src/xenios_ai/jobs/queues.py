"""Queue names and what Redis says about them: depth per queue and the workers alive.

Dramatiq's Redis broker keeps a queue's waiting message ids in the list ``<ns>:<queue>``, every
message not yet acked in the hash ``<ns>:<queue>.msgs`` and delayed ones under ``<queue>.DQ``.
Workers register themselves in the hash ``<prefix>:workers`` with a heartbeat time.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from xenios_ai.db.redis import Redis

Queue = Literal["default", "extraction", "transcription", "llm"]
QUEUES: tuple[Queue, ...] = ("default", "extraction", "transcription", "llm")


class QueueDepth(msgspec.Struct):
    name: str
    waiting: int
    in_progress: int
    delayed: int


class WorkerInfo(msgspec.Struct):
    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    started_at: float
    seen_at: float
    current_jobs: list[str] = msgspec.field(default_factory=list)


def broker_namespace(prefix: str) -> str:
    return f"{prefix}:dramatiq"


def workers_key(prefix: str) -> str:
    return f"{prefix}:workers"


async def queue_depths(redis: Redis, prefix: str) -> list[QueueDepth]:
    ns = broker_namespace(prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(f"{ns}:{queue}")
            pipe.hlen(f"{ns}:{queue}.msgs")
            pipe.hlen(f"{ns}:{queue}.DQ.msgs")
        counts = await pipe.execute()
    depths = []
    for i, queue in enumerate(QUEUES):
        waiting, unacked, delayed = (int(c) for c in counts[3 * i : 3 * i + 3])
        depths.append(QueueDepth(queue, waiting, max(0, unacked - waiting), delayed))
    return depths


_worker_decoder = msgspec.json.Decoder(WorkerInfo)


def registry_max_age(heartbeat_seconds: float, stale_job_seconds: float) -> float:
    """How long a silent worker stays in the registry: three missed heartbeats, and at least as long as
    its running jobs count as alive (stale_job_seconds)."""
    return max(3 * heartbeat_seconds, stale_job_seconds)


async def prune_registry(redis: Redis, prefix: str, *, max_age: float, now: float | None = None) -> list[str]:
    """Remove the workers silent for more than ``max_age`` seconds (and unreadable entries); their ids."""
    key = workers_key(prefix)
    now = time.time() if now is None else now
    gone = []
    for worker_id, raw in (await redis.hgetall(key)).items():
        try:
            seen = _worker_decoder.decode(raw).seen_at
        except msgspec.DecodeError:
            seen = 0.0
        if now - seen > max_age:
            gone.append(worker_id.decode() if isinstance(worker_id, bytes) else str(worker_id))
    if gone:
        await redis.hdel(key, *gone)
    return gone


async def alive_workers(redis: Redis, prefix: str, *, max_age: float) -> list[WorkerInfo]:
    """Workers whose last heartbeat is younger than ``max_age`` seconds."""
    raw = await redis.hgetall(workers_key(prefix))
    now = time.time()
    workers = []
    for value in raw.values():
        try:
            info = _worker_decoder.decode(value)
        except msgspec.DecodeError:
            continue
        if now - info.seen_at <= max_age:
            workers.append(info)
    return sorted(workers, key=lambda w: (w.hostname, w.pid))
