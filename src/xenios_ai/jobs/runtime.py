"""The worker process's runtime: one asyncio loop thread with the async services, as Dramatiq middleware.

Dramatiq runs actors on plain threads; the services (psycopg pool, redis.asyncio, the LLM router) are
async. Each worker process therefore gets one event loop in its own thread, started at worker boot and
stopped after shutdown, and actors hand coroutines to it (`WorkerRuntime.call`); the services
themselves are `jobs.worker_services.WorkerServices`. Blocking engines
(Docling, faster-whisper) keep running on the actor's thread and only their progress reports hop over.

The loop also runs the process's background duties:

- heartbeat (every WORKER_HEARTBEAT_SECONDS): the worker's entry in ``<prefix>:workers`` and the
  ``heartbeat_at`` of its running jobs, which also tells it about cancel requests and lost jobs. The two
  are separate loops, so that an outage of one store never stops the other: a job's claim stays visible
  to the sweep through whichever of PostgreSQL (heartbeat_at) and Redis (the registry) is up;
- a pub/sub subscriber: queue wake-ups (see `jobs.broker`) and cancel requests, acted on at once;
- the sweep and the retention cleanup (`jobs.maintenance`), in one worker at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import dramatiq
import msgspec
import redis as sync_redis
from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.backoff import Doubling
from xenios_ai.errors import XeniosError
from xenios_ai.gc_tuning import settle
from xenios_ai.jobs import broker as job_broker
from xenios_ai.jobs import events, maintenance, store
from xenios_ai.jobs.models import Job, JobKind
from xenios_ai.jobs.queues import WorkerInfo, prune_registry, registry_max_age, workers_key
from xenios_ai.jobs.registry import registered
from xenios_ai.jobs.worker_services import WorkerServices
from xenios_ai.settings import Settings

T = TypeVar("T")
_DEREGISTER_TIMEOUT_SECONDS = 2.0


@dataclass(eq=False)
class Attempt:
    """One running attempt of a job in this process; flags set by the loop, checked at checkpoints."""

    job: Job
    kind: JobKind
    deadline: float
    cancel: bool = False
    lost: bool = False
    release: bool = False
    task: asyncio.Task[Any] | None = None
    thread_id: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_write: float = 0.0
    blobs: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def token(self) -> int:
        return self.job.attempts

    def interrupt(self) -> None:
        """Stop an async handler now (called on the loop); sync handlers stop at their next checkpoint."""
        if self.task is not None and not self.task.done():
            self.task.cancel()


class WorkerRuntime(dramatiq.Middleware):
    """Dramatiq middleware owning the process's event loop, services and background duties."""

    _current: WorkerRuntime | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.running: dict[UUID, Attempt] = {}
        """The attempts this process runs, from their claim until their outcome is written: the heartbeat
        and the worker registry (which the sweep reads to spare them) list them."""
        self.stopping = False
        """Set at worker shutdown: outcomes waiting for the database stop being retried after a few tries."""
        self.deregistered = False
        """Set once the worker removed itself from the registry: the heartbeat no longer re-adds it."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._services: WorkerServices | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queues: list[str] = []
        self._started_at = time.time()

    @classmethod
    def current(cls) -> WorkerRuntime:
        if cls._current is None:
            raise RuntimeError("no worker runtime: actors run inside `xenios-ai worker`")
        return cls._current

    @property
    def services(self) -> WorkerServices:
        assert self._services is not None, "the worker runtime is not started"
        return self._services

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the worker runtime is not started"
        return self._loop

    # -- lifecycle (Dramatiq hooks, on the worker process's main thread) --------------------------------

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        if isinstance(broker, job_broker.RedisBroker):
            broker.worker_threads = worker.worker_threads
        self._queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._deregister_on_kill()
        self.prepare_kinds()
        try:
            self.start()
        except BaseException:  # a failed or interrupted start-up leaves no registry entry behind
            self.stopping = True
            self.deregister_now()
            raise
        settle()  # the engines and services live as long as the process (see `gc_tuning`)

    def prepare_kinds(self) -> None:
        """Run ``JobKind.prepare`` of the kinds this process serves, before it takes a job (engines load
        once per process). A failure ends the process (exit 3), and Dramatiq then stops the whole worker."""
        for kind in registered():
            if kind.prepare is None or kind.queue not in self._queues:
                continue
            try:
                kind.prepare(self.settings)
            except Exception as exc:
                detail = exc.detail if isinstance(exc, XeniosError) else f"{type(exc).__name__}: {exc}"
                logger.opt(exception=not isinstance(exc, XeniosError)).critical(
                    "worker cannot serve the {} queue: {}", kind.queue, detail
                )
                raise SystemExit(3) from None

    def _deregister_on_kill(self) -> None:
        """Dramatiq's worker process exits at once (SystemExit, no shutdown hooks) on a second SIGTERM or
        SIGHUP, and a stop signal to the process group is exactly that: the signal itself plus the one its
        master forwards. Wrap its handler so that exit first removes this worker from the registry."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is None:
                continue
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue

            def handler(number: int, frame: Any, previous: Any = previous) -> None:
                try:
                    previous(number, frame)
                except SystemExit:
                    self.stopping = True
                    self.deregister_now()
                    raise

            signal.signal(signum, handler)

    def deregister_now(self) -> None:
        """Remove this worker's registry entry right now, on a connection of its own (for exits that skip
        `stop`); a failure is only logged: the entry then ages out (`queues.registry_max_age`)."""
        self.deregistered = True
        if not self.worker_id or self.settings.redis_url is None:
            return
        client = sync_redis.Redis.from_url(
            self.settings.redis_url.get(),
            socket_timeout=_DEREGISTER_TIMEOUT_SECONDS,
            socket_connect_timeout=_DEREGISTER_TIMEOUT_SECONDS,
        )
        try:
            client.hdel(workers_key(self.settings.redis_namespace), self.worker_id)
        except (RedisError, OSError) as exc:
            logger.warning("worker {} not deregistered: {}", self.worker_id, type(exc).__name__)
        finally:
            client.close()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Long jobs (``release_on_shutdown``) stop at their next checkpoint and go back to the queue."""
        self.stopping = True
        if self._loop is None:
            return

        def release() -> None:
            for attempt in self.running.values():
                if attempt.kind.release_on_shutdown:
                    attempt.release = True
                    attempt.interrupt()

        self._loop.call_soon_threadsafe(release)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.stop()

    def start(self) -> None:
        """Start the loop thread, open the services and the background duties (also used by tests)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self.stopping = False
        self.deregistered = False
        self._thread = threading.Thread(target=loop.run_forever, name="job-runtime", daemon=True)
        self._thread.start()
        self._services = self.call(WorkerServices.open(self.settings))
        WorkerRuntime._current = self
        self.call(self._start_duties())
        logger.info("worker {} ready for queues {}", self.worker_id, ", ".join(self._queues))

    def stop(self) -> None:
        self.stopping = True
        if self._loop is None:
            return
        try:
            self.call(self._stop_duties(), timeout=15)
        except Exception as exc:
            logger.warning("worker runtime shutdown: {}", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None
        self._services = None
        if WorkerRuntime._current is self:
            WorkerRuntime._current = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the runtime's loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    # -- background duties (on the loop) ----------------------------------------------------------------

    async def _start_duties(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forever("registry", self._register, self.settings.worker_heartbeat_seconds)),
            asyncio.create_task(self._forever("heartbeat", self._heartbeat, self.settings.worker_heartbeat_seconds)),
            asyncio.create_task(self._subscriber(), name="subscriber"),
            asyncio.create_task(self._forever("sweep", self._sweep, self.settings.job_sweep_interval_seconds)),
            asyncio.create_task(
                self._forever("retention", self._retention, self.settings.job_retention_sweep_seconds)
            ),
        ]  # fmt: skip

    async def _stop_duties(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        services = self.services
        self.deregistered = True
        with contextlib.suppress(RedisError, OSError):
            await services.redis.hdel(workers_key(self.settings.redis_namespace), self.worker_id)
        await services.aclose()

    async def _forever(self, name: str, duty: Any, interval: float) -> None:
        while True:
            started = time.monotonic()
            try:
                await duty()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("worker {} failed: {}: {}", name, type(exc).__name__, exc)
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))

    async def _register(self) -> None:
        """The worker's entry in the registry, listing the jobs it holds (bounded: a hung Redis call must not
        delay the next entry)."""
        now = time.time()
        info = WorkerInfo(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self._queues,
            started_at=self._started_at,
            seen_at=now,
            current_jobs=[str(job_id) for job_id in self.running],
        )
        try:
            if not self.deregistered:  # never re-register a worker on its way out
                async with asyncio.timeout(max(0.5, self.settings.worker_heartbeat_seconds * 2)):
                    await self.services.redis.hset(
                        workers_key(self.settings.redis_namespace), self.worker_id, msgspec.json.encode(info)
                    )
        except (RedisError, OSError, TimeoutError) as exc:
            logger.debug("worker registry not updated: {}", type(exc).__name__)

    async def _heartbeat(self) -> None:
        """``heartbeat_at`` of the jobs this process holds; tells them about cancels and lost claims."""
        services = self.services
        attempts = dict(self.running)
        if not attempts:
            return
        owned = await store.heartbeat(services.db, {job_id: a.token for job_id, a in attempts.items()})
        for job_id, attempt in attempts.items():
            if job_id not in owned:
                attempt.lost = True
                attempt.interrupt()
            elif owned[job_id] and not attempt.cancel:
                attempt.cancel = True
                attempt.interrupt()

    async def _subscriber(self) -> None:
        prefix = self.settings.redis_namespace
        wake, cancel = events.wake_channel(prefix), events.cancel_channel(prefix)
        backoff = Doubling(0.1, 5.0)
        while True:
            pubsub = self.services.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(wake, cancel)
                backoff.reset()
                for queue in self._queues:  # a wake-up may have been missed while disconnected
                    job_broker.wake(queue)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is None or message["type"] != "message":
                        continue
                    channel, data = message["channel"].decode(), message["data"].decode()
                    if channel == wake:
                        job_broker.wake(data)
                    elif channel == cancel:
                        self._cancel(data)
            except (RedisError, OSError) as exc:
                logger.debug("worker subscriber: {}", type(exc).__name__)
                await asyncio.sleep(backoff.next())
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _cancel(self, job_id: str) -> None:
        try:
            attempt = self.running.get(UUID(job_id))
        except ValueError:
            return
        if attempt is not None and not attempt.cancel:
            logger.info("job {} cancel requested", job_id)
            attempt.cancel = True
            attempt.interrupt()

    async def _locked(self, name: str, ttl: float) -> bool:
        """At most one worker per ``ttl`` seconds gets this lock (it expires, never released)."""
        key = f"{self.settings.redis_namespace}:jobs:{name}-lock"
        return bool(await self.services.redis.set(key, self.worker_id, nx=True, px=max(1, int(ttl * 1000))))

    async def _sweep(self) -> None:
        interval = self.settings.job_sweep_interval_seconds
        if not await self._locked("sweep", interval * 0.9):
            return
        report = await maintenance.sweep(self.services.jobs)
        if report != maintenance.SweepReport():
            logger.info("sweep: {}", report)
        await self._prune_registry()

    async def _retention(self) -> None:
        if await self._locked("retention", self.settings.job_retention_sweep_seconds * 0.9):
            await maintenance.expire(self.services.jobs)

    async def _prune_registry(self) -> None:
        settings = self.settings
        max_age = registry_max_age(settings.worker_heartbeat_seconds, settings.stale_job_seconds)
        gone = await prune_registry(self.services.redis, settings.redis_namespace, max_age=max_age)
        if gone:
            logger.info("worker registry: removed {} silent for over {:g} s", ", ".join(gone), max_age)
