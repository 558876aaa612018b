"""Job events over Redis pub/sub: workers publish progress and state changes, the API fans them out.

Pub/sub is a doorbell, not a record: a missed event costs nothing because listeners re-read the row (the
truth) on every state change, on reconnection and on each heartbeat. Publishing never fails a job.

Channels: ``<prefix>:job:<id>`` per job; ``<prefix>:jobs:wake`` (payload: a queue name) wakes idle
consumers of that queue at once; ``<prefix>:jobs:cancel`` (payload: a job id) tells the worker running
that job to stop at its next checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal
from uuid import UUID

import msgspec
from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.backoff import Doubling
from xenios_ai.db.redis import Redis
from xenios_ai.throttle import OncePer


class Progress(msgspec.Struct, tag="progress", frozen=True):
    progress: float
    message: str | None = None


class StateChanged(msgspec.Struct, tag="state", frozen=True):
    status: str


class Resync(msgspec.Struct, tag="resync", frozen=True):
    """Not published: the hub tells listeners it reconnected and events may have been missed."""


JobEvent = Progress | StateChanged
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JobEvent)


def job_channel(prefix: str, job_id: UUID | str) -> str:
    return f"{prefix}:job:{job_id}"


def wake_channel(prefix: str) -> str:
    return f"{prefix}:jobs:wake"


def cancel_channel(prefix: str) -> str:
    return f"{prefix}:jobs:cancel"


class _Throttled:
    """Log a recurring failure at most once a minute."""

    def __init__(self) -> None:
        self._once = OncePer(60.0)

    def warn(self, what: str, exc: BaseException) -> None:
        if self._once.ready():
            logger.warning("{} failed (Redis unavailable?): {}", what, type(exc).__name__)


_publish_failures = _Throttled()


async def publish(redis: Redis, prefix: str, job_id: UUID | str, event: JobEvent) -> None:
    """Best effort: a Redis outage loses the event, never the job."""
    try:
        await redis.publish(job_channel(prefix, job_id), _encoder.encode(event))
    except (RedisError, OSError) as exc:
        _publish_failures.warn("publishing a job event", exc)


Item = Progress | StateChanged | Resync


class EventHub:
    """One pub/sub connection per process, shared by every listener (an SSE stream each).

    Channels are subscribed while someone listens. When the connection drops, the hub reconnects with
    backoff, subscribes again and hands every listener a `Resync` so it re-reads its job.
    """

    def __init__(self, redis: Redis, prefix: str, *, queue_size: int = 256) -> None:
        self._redis = redis
        self._prefix = prefix
        self._queue_size = queue_size
        self._listeners: dict[str, set[asyncio.Queue[Item]]] = {}
        self._pubsub: object | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def listen(self, job_id: UUID) -> AsyncIterator[asyncio.Queue[Item]]:
        """Events of one job while the context is open (a full queue drops progress, keeps going)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="job-event-hub")
        channel = job_channel(self._prefix, job_id)
        queue: asyncio.Queue[Item] = asyncio.Queue(self._queue_size)
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(queue)
        if len(listeners) == 1:
            await self._command("subscribe", channel)
        try:
            yield queue
        finally:
            listeners.discard(queue)
            if not listeners and self._listeners.get(channel) is listeners:
                del self._listeners[channel]
                await self._command("unsubscribe", channel)

    async def _command(self, name: Literal["subscribe", "unsubscribe"], channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:  # not connected: the reconnect subscribes every current channel
            return
        try:
            await getattr(pubsub, name)(channel)
        except (RedisError, OSError) as exc:
            logger.debug("pub/sub {} failed: {}", name, type(exc).__name__)

    def _deliver(self, channel: str, item: Item) -> None:
        for queue in self._listeners.get(channel, ()):
            if queue.full():
                # A slow reader loses old events, never the news: it gets a Resync and re-reads the row.
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(Resync())
            else:
                queue.put_nowait(item)

    async def _run(self) -> None:
        backoff = Doubling(0.1, 5.0)
        connected_before = False
        while not self._closed:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                # Always subscribed to something, so reading blocks instead of failing.
                channels = list(self._listeners)
                await pubsub.subscribe(f"{self._prefix}:jobs:hub", *channels)
                self._pubsub = pubsub
                late = [channel for channel in self._listeners if channel not in channels]
                if late:  # listeners that came while subscribing
                    await pubsub.subscribe(*late)
                if connected_before:
                    logger.info("job events: pub/sub reconnected")
                    for channel in list(self._listeners):
                        self._deliver(channel, Resync())
                connected_before = True
                backoff.reset()
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is None or message["type"] != "message":
                        continue
                    channel = message["channel"].decode()
                    try:
                        event = _decoder.decode(message["data"])
                    except msgspec.DecodeError:
                        continue
                    self._deliver(channel, event)
            except (RedisError, OSError) as exc:
                self._pubsub = None
                _publish_failures.warn("job events subscription", exc)
                await asyncio.sleep(backoff.next())
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
