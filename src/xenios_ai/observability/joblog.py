"""A job's own log lines, kept for the operator dashboard's job page.

In worker processes, `JobLogCapture` adds a loguru sink that takes every record bound to a job (LogContext
binds ``job_id`` for the whole message, Dramatiq's and the LLM router's lines included) at INFO and up,
and a thread appends them to the Redis list ``<prefix>:joblog:<job id>``: the last JOB_LOG_LINES lines
(LTRIM), expiring JOB_RETENTION_DAYS after the last one. The API appends the operator's actions there too.

Why a Redis list and not a jsonb column on the job: lines come one at a time from the actor's thread, and
appending to the row would rewrite the whole row (input and result included) per line and contend with
the runner's own updates of it; a list append is O(1), bounded by LTRIM, gone by itself with EXPIRE, and
needs no migration. The price: the lines are lost if Redis loses its data; the JSON log stream keeps
them in any case (``xenios-ai logs --job ID``).

No secrets: a line is the time, level, message and a few context keys (attempt, status, duration), never
headers, inputs or tracebacks; every configured secret found in a message is masked, and messages are cut
at 2,000 characters. The sink only appends to a bounded deque: logging never waits on Redis.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import dramatiq
import msgspec
import redis
from loguru import logger

from xenios_ai.backoff import Doubling
from xenios_ai.db.redis import redis_url
from xenios_ai.settings import Secret, Settings

if TYPE_CHECKING:
    from loguru import Message

    from xenios_ai.db.redis import Redis

MAX_MESSAGE = 2000
_PENDING_LIMIT = 20_000
_FORGOTTEN_LIMIT = 10_000
_CONTEXT = ("attempt", "status", "duration_ms", "component")


class LogLine(msgspec.Struct, omit_defaults=True):
    ts: float
    level: str
    msg: str
    worker: str | None = None
    context: dict[str, Any] = msgspec.field(default_factory=dict)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(LogLine).decode


def log_key(prefix: str, job_id: object) -> str:
    return f"{prefix}:joblog:{job_id}"


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret value (each API key of a list on its own), longest first."""
    values: list[str] = []
    for field in msgspec.structs.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, Secret) and value.get():
            values.append(value.get())
            values.extend(part.strip() for part in value.get().split(","))
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


def mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text[:MAX_MESSAGE]


class JobLogCapture(dramatiq.Middleware):
    """Dramatiq middleware: from worker boot to shutdown, job-bound log lines go to Redis (see above)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._secrets = secrets_of(settings)
        self._pending: deque[tuple[str, bytes]] = deque(maxlen=_PENDING_LIMIT)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink_id: int | None = None
        self._worker = f"{socket.gethostname()}:{os.getpid()}"
        self._forgotten: dict[str, None] = {}
        """Jobs whose data was erased while this process ran them: their lines are dropped (bounded)."""
        self._to_delete: deque[str] = deque()

    def forget(self, job_id: object) -> None:
        """The job's data was erased: drop its waiting and future lines and delete its list (again: a line
        shipped after the erasure would have brought it back)."""
        job = str(job_id)
        self._forgotten[job] = None
        while len(self._forgotten) > _FORGOTTEN_LIMIT:
            del self._forgotten[next(iter(self._forgotten))]
        self._to_delete.append(job)
        self._wake.set()

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self.start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.stop()

    def start(self) -> None:
        global _active  # noqa: PLW0603 - one capture per worker process
        _active = self
        self._worker = f"{socket.gethostname()}:{os.getpid()}"
        self._sink_id = logger.add(
            self._sink, level="INFO", filter=_has_job, format="{message}", diagnose=False, backtrace=False
        )
        self._thread = threading.Thread(target=self._ship_forever, name="job-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._sink_id is not None:
            with contextlib.suppress(ValueError):
                logger.remove(self._sink_id)
            self._sink_id = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _sink(self, message: Message) -> None:
        record = message.record
        extra = record["extra"]
        text = record["message"]
        if record["exception"] is not None and record["exception"].type is not None:
            text = f"{text} ({record['exception'].type.__name__})"
        line = LogLine(
            ts=record["time"].timestamp(),
            level=record["level"].name,
            msg=mask(text, self._secrets),
            worker=self._worker,
            context={k: extra[k] for k in _CONTEXT if k in extra},
        )
        job = str(extra["job_id"])
        if job in self._forgotten:
            return
        self._pending.append((job, _encode(line)))
        self._wake.set()

    def _ship_forever(self) -> None:
        client = redis.Redis.from_url(redis_url(self._settings), socket_connect_timeout=2, socket_timeout=5)
        backoff = Doubling(0.2, 5.0)
        try:
            while True:
                self._wake.wait(1.0)
                self._wake.clear()
                try:
                    self._ship(client)
                    backoff.reset()
                except (redis.RedisError, OSError):
                    time.sleep(backoff.next())
                    continue
                if self._stop.is_set():
                    return
        finally:
            client.close()

    def _ship(self, client: redis.Redis) -> None:
        batch: dict[str, list[bytes]] = {}
        taken: list[tuple[str, bytes]] = []
        while self._pending:
            job_id, data = self._pending.popleft()
            if job_id in self._forgotten:
                continue
            taken.append((job_id, data))
            batch.setdefault(job_id, []).append(data)
        deleting = [self._to_delete.popleft() for _ in range(len(self._to_delete))]
        if not batch and not deleting:
            return
        keep, ttl = self._settings.job_log_lines, int(self._settings.job_retention_days * 86400) + 86400
        try:
            with client.pipeline(transaction=False) as pipe:
                for job_id in deleting:
                    pipe.delete(log_key(self._settings.redis_namespace, job_id))
                for job_id, lines in batch.items():
                    key = log_key(self._settings.redis_namespace, job_id)
                    pipe.rpush(key, *lines)
                    pipe.ltrim(key, -keep, -1)
                    pipe.expire(key, ttl)
                pipe.execute()
        except BaseException:
            self._pending.extendleft(reversed(taken))  # try again (the deque's bound drops the oldest)
            self._to_delete.extend(deleting)
            raise


_active: JobLogCapture | None = None


def forget(job_id: object) -> None:
    """In a worker process: `JobLogCapture.forget` on its capture (nothing elsewhere)."""
    if _active is not None:
        _active.forget(job_id)


def _has_job(record: Any) -> bool:
    return "job_id" in record["extra"]


async def append(redis_client: Redis, settings: Settings, job_id: object, level: str, msg: str) -> None:
    """Add a line to a job's log from the API (the operator's actions)."""
    key = log_key(settings.redis_namespace, job_id)
    line = _encode(LogLine(ts=time.time(), level=level, msg=msg[:MAX_MESSAGE], worker="api"))
    async with redis_client.pipeline(transaction=False) as pipe:
        pipe.rpush(key, line)
        pipe.ltrim(key, -settings.job_log_lines, -1)
        pipe.expire(key, int(settings.job_retention_days * 86400) + 86400)
        await pipe.execute()


async def read(redis_client: Redis, settings: Settings, job_id: object) -> list[LogLine]:
    """The job's kept lines, oldest first."""
    lines = []
    for raw in await redis_client.lrange(log_key(settings.redis_namespace, job_id), 0, -1):
        try:
            lines.append(_decode(raw))
        except msgspec.DecodeError:
            continue
    return lines
