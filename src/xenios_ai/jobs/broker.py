"""Dramatiq's Redis broker as the jobs use it, and an asyncio sender for job messages.

Three choices, each measured against the stock broker (docs/decisions/0001-dramatiq-broker-recovery-and-wakeups.md):

- Crash recovery: every worker call runs the broker's maintenance (BROKER_MAINTENANCE_CHANCE) and dead
  workers' messages come back after BROKER_HEARTBEAT_TIMEOUT_MS; the job sweep (`jobs.maintenance`) is
  the second net.
- Latency: senders publish the queue's name on ``<prefix>:jobs:wake``; idle consumers wait on an event the
  worker's subscriber sets instead of polling with a backoff of up to 1 s.
- Fairness: a consumer prefetches at most as many messages as its process has threads.

`Enqueuer` sends the same messages as ``actor.send`` (same Lua script, same encoding) from asyncio code
(API and worker loop), in one round trip with the wake-up, without blocking the event loop.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker as _DramatiqRedisBroker
from dramatiq.brokers.redis import _RedisConsumer, _scripts  # the script Dramatiq itself runs
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from redis.exceptions import NoScriptError

from xenios_ai.db.redis import Redis, redis_url
from xenios_ai.jobs.events import wake_channel
from xenios_ai.jobs.queues import broker_namespace
from xenios_ai.settings import Settings

_DEAD_MESSAGE_TTL_MS = 7 * 86_400_000
_BUSY_POLL_MS = 50
_SOCKET_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 10.0
_wake_events: dict[str, threading.Event] = {}
_wake_lock = threading.Lock()


def wake_event(queue_name: str) -> threading.Event:
    """The event that ends an idle wait of this process's consumer of ``queue_name``."""
    with _wake_lock:
        return _wake_events.setdefault(queue_name, threading.Event())


def wake(queue_name: str) -> None:
    wake_event(queue_name).set()


class _WakeableConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer whose idle sleep ends when its queue's wake event is set."""

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._wake = wake_event(queue_name)

    def __next__(self) -> Any:
        # Dramatiq's _RedisConsumer.__next__ with its idle time.sleep(backoff) replaced by a wait on the
        # wake event (cleared before looking, so no wake-up is lost and none makes it spin). While all
        # its threads are busy it waits at most _BUSY_POLL_MS: this thread also acks finished messages
        # and fetches the next one, and a finished job sets no event.
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = dramatiq.Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return dramatiq.MessageProxy(message)
                except IndexError:
                    self._wake.clear()
                    busy = self.outstanding_message_count >= self.prefetch
                    if not busy:
                        self.message_cache = self.broker.do_fetch(
                            self.queue_name, self.prefetch - self.outstanding_message_count
                        )
                        if self.message_cache:
                            continue
                    limit = min(self.timeout, _BUSY_POLL_MS) if busy else self.timeout
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=limit)
                    if self._wake.wait(backoff_ms / 1000):
                        self.misses = 0
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]


class RedisBroker(_DramatiqRedisBroker):
    """The jobs' broker: wakeable consumers, prefetch capped at the process's thread count."""

    worker_threads: int | None = None

    @property
    def consumer_class(self) -> type[_WakeableConsumer]:
        return _WakeableConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        if self.worker_threads and not queue_name.endswith(".DQ"):
            prefetch = min(prefetch, self.worker_threads)
        return self.consumer_class(self, queue_name, prefetch, timeout)


def make_broker(settings: Settings, middleware: list[dramatiq.Middleware]) -> RedisBroker:
    # The pool is built here: given a URL, Dramatiq builds it from the URL alone and redis-py then ignores
    # any connection keyword arguments passed next to it.
    pool = redis.ConnectionPool.from_url(
        redis_url(settings), socket_connect_timeout=_SOCKET_CONNECT_TIMEOUT, socket_timeout=_SOCKET_TIMEOUT
    )
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=redis.Redis(connection_pool=pool),
        namespace=broker_namespace(settings.redis_namespace),
        middleware=middleware,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        maintenance_chance=settings.broker_maintenance_chance,
        dead_message_ttl=_DEAD_MESSAGE_TTL_MS,
    )


_DISPATCH = _scripts["dispatch"]
_DISPATCH_SHA = hashlib.sha1(_DISPATCH).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class Enqueuer:
    """Send actor messages from asyncio code: Dramatiq's enqueue script plus the queue's wake-up."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.redis_namespace
        self._namespace = broker_namespace(settings.redis_namespace)
        self._heartbeat_timeout = settings.broker_heartbeat_timeout_ms
        # Dramatiq records every sender in its heartbeat set; a sender has no acks, so it is dropped
        # again by the maintenance once silent.
        self._sender_id = f"sender-{uuid.uuid4()}"

    async def send(
        self, queue: str, actor_name: str, args: tuple[Any, ...], *, message_id: str | None = None
    ) -> str:
        """Enqueue ``actor_name(*args)`` on ``queue``; returns the Redis message id (given or new)."""
        redis_message_id = message_id or str(uuid.uuid4())
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue,
            actor_name=actor_name,
            args=args,
            kwargs={},
            options={"redis_message_id": redis_message_id},
        )
        dispatch_args = (
            "enqueue", int(time.time() * 1000), queue, self._sender_id, self._heartbeat_timeout,
            _DEAD_MESSAGE_TTL_MS, 0, 1000, redis_message_id, message.encode(),
        )  # fmt: skip
        for _ in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(_DISPATCH_SHA, 1, self._namespace, *dispatch_args)
                pipe.publish(wake_channel(self._prefix), queue)
                results = await pipe.execute(raise_on_error=False)
            if isinstance(results[0], NoScriptError):
                await self._redis.script_load(_DISPATCH)
                continue
            if isinstance(results[0], Exception):
                raise results[0]
            return redis_message_id
        raise RuntimeError("Redis did not keep the enqueue script")
