"""The job service: submit (with or without an uploaded file), get, list, cancel and follow a job.

Used by the API and by workers. Submitting writes the row first, with the id of the message about to be
sent, and then sends it: if Redis is down the job is still accepted (202) and the sweep sends it later,
so an accepted job is never lost. Everything is scoped to the owner: another user's job is "not found",
never "forbidden".
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import aiohttp
import msgspec
from loguru import logger
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError

from xenios_ai.db.pool import Pool
from xenios_ai.db.redis import Redis
from xenios_ai.errors import Conflict, InvalidInput, NotFound, UnsupportedMediaType, XeniosError
from xenios_ai.jobs import events, idempotency, store, store_webhooks
from xenios_ai.jobs.blob_keys import is_upload_key, secret_key, upload_key
from xenios_ai.jobs.broker import Enqueuer
from xenios_ai.jobs.cursors import decode_cursor, encode_cursor
from xenios_ai.jobs.events import EventHub, Progress, Resync, StateChanged
from xenios_ai.jobs.models import Job, JobKind, JobStatus, Upload
from xenios_ai.jobs.webhooks import WebhookRetry, check_url, deliver_for_job
from xenios_ai.settings import Settings
from xenios_ai.storage import BlobStorage
from xenios_ai.storage.sources import Source

WEBHOOK_ACTOR = "deliver_webhook"
"""The actor (queue ``default``) that delivers a finished job's webhook."""
WEBHOOK_BACKOFF_SECONDS = 1.0
"""Delay before the second delivery attempt of a webhook; doubled for each further one (with jitter)."""
WEBHOOK_MAX_BACKOFF_SECONDS = 300.0

_encoder = msgspec.json.Encoder(order="sorted")
StreamItem = (
    tuple[Literal["state"], Job] | tuple[Literal["progress"], Progress] | tuple[Literal["ping"], None]
)


@dataclass(frozen=True)
class Submitted:
    job: Job
    replayed: bool
    """True when an Idempotency-Key matched an earlier submit: ``job`` is that earlier job."""


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


class JobService:
    def __init__(
        self,
        settings: Settings,
        db: Pool,
        redis: Redis,
        storage: BlobStorage,
        *,
        enqueuer: Enqueuer | None = None,
        hub: EventHub | None = None,
        heartbeat_seconds: float = 15.0,
    ) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis
        self.storage = storage
        self.enqueuer = enqueuer or Enqueuer(redis, settings)
        self.hub = hub or EventHub(redis, settings.redis_namespace)
        self.heartbeat_seconds = heartbeat_seconds
        self._prefix = settings.redis_namespace

    # -- submit --------------------------------------------------------------------------------------

    async def check_webhook(self, url: str | None) -> str | None:
        """422 unless the URL is acceptable and webhooks can be signed."""
        if url is None:
            return None
        if self.settings.webhook_secret is None:
            raise InvalidInput(
                "webhook_url: webhooks are not configured on this service (WEBHOOK_SECRET)",
                code="webhooks_not_configured",
            )
        return await check_url(url, allow_private=self.settings.webhook_allow_private)

    async def submit(
        self,
        kind: JobKind,
        owner: str,
        input: msgspec.Struct,
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_include_result: bool = False,
        source_job_id: UUID | None = None,
        upload: Upload | None = None,
        source: Source | None = None,
        job_id: UUID | None = None,
        blobs: Sequence[str] = (),
        secret: bytes | None = None,
    ) -> Submitted:
        """Write the queued job, then send its message. ``webhook_url`` must have passed check_webhook;
        ``upload`` (from store_upload, with the same ``job_id``) is removed again when the submit fails
        before the row exists or replays an earlier one; once the row exists the job is accepted and its
        files stay. ``secret`` (a PDF's password) never enters the row: it is stored as the blob
        `secret_key` before the message is sent, listed in the job's blobs, removed like the upload and
        when the job ends (`after_terminal`; retention at the latest)."""
        job_id = job_id or uuid.uuid4()
        uploaded = [file.key for file in upload.files] if upload is not None else []
        own = list(uploaded)
        writing = False  # from the INSERT on, the row may exist whatever the outcome looks like
        replayed: Submitted | None = None
        try:
            if secret is not None:
                own.append((await self.storage.put_bytes(secret_key(job_id), secret)).key)
                blobs = [*blobs, own[-1]]
            input_json = _encoder.encode(input)
            include_result = webhook_include_result and webhook_url is not None
            request_hash = idempotency.request_hash(
                kind,
                input_json,
                idempotency_key,
                webhook_url,
                source_job_id,
                upload,
                include_result,
                source,
            )
            message_id = str(uuid.uuid4())
            writing = True
            job = await store.insert(
                self.db,
                id=job_id,
                kind=kind.name,
                queue=kind.queue,
                owner=owner,
                input_json=input_json,
                upload_json=_encoder.encode(upload) if upload else None,
                source_json=_encoder.encode(source) if source else None,
                max_attempts=kind.retry.max_attempts,
                message_id=message_id,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                webhook_url=webhook_url,
                webhook_include_result=include_result,
                source_job_id=source_job_id,
                blobs=[*blobs, *uploaded],
            )
            if job is None:  # the key is taken: this row was not written
                writing = False
                assert idempotency_key is not None
                replayed = await self._replay(owner, idempotency_key, request_hash)
        except BaseException as exc:
            if not writing or not await self._written(job_id, exc):
                for key in own:
                    await self.storage.delete(key)
            raise
        if job is None:
            for key in own:
                await self.storage.delete(key)
            assert replayed is not None
            return replayed
        await self._send(kind, job, message_id)
        return Submitted(job, replayed=False)

    async def _written(self, job_id: UUID, exc: BaseException) -> bool:
        """Whether the row of a submit whose INSERT raised ``exc`` exists (unknown counts as yes: the
        files of an accepted job must stay; retention removes them with the row)."""
        if isinstance(exc, PoolTimeout):  # no connection was had: nothing was written
            return False
        try:
            async with asyncio.timeout(5):
                return await store.get(self.db, job_id) is not None
        except Exception:
            logger.warning("could not tell whether job {} was written; keeping its files", job_id)
            return True

    async def _send(self, kind: JobKind, job: Job, message_id: str) -> None:
        try:
            await self.enqueuer.send(kind.queue, kind.actor_name, (str(job.id),), message_id=message_id)
        except Exception as exc:
            # Accepted all the same: the row is the truth and the sweep sends unsent jobs.
            logger.opt(exception=not isinstance(exc, RedisError | OSError)).warning(
                "job {} accepted but not sent ({}); the sweep will send it", job.id, type(exc).__name__
            )
            try:
                await store.set_message(self.db, job.id, None)
            except Exception as db_exc:  # the sweep finds the lost message by its id anyway
                logger.warning("could not mark job {} unsent: {}", job.id, type(db_exc).__name__)

    async def _replay(self, owner: str, key: str, request_hash: str | None) -> Submitted:
        existing = await store.get_by_idempotency_key(self.db, owner, key)
        if existing is None:  # deleted by retention between the insert and this read
            raise Conflict("the Idempotency-Key was just released; retry", code="idempotency_key_in_use")
        if existing.request_hash != request_hash:
            raise Conflict(
                "this Idempotency-Key was used for a different request",
                code="idempotency_key_reused",
                extra={"job_id": str(existing.id)},
            )
        return Submitted(existing, replayed=True)

    async def store_upload(
        self,
        kind: JobKind,
        job_id: UUID,
        filename: str | None,
        chunks: AsyncIterator[bytes],
        *,
        index: int = 0,
        max_bytes: int | None = None,
    ) -> Upload:
        """Stream an uploaded file into storage: sniffed from its first bytes (415 before reading on),
        size limit enforced while streaming (413 without reading the rest). ``index`` numbers the files of
        a several-file submit; ``max_bytes`` lowers the kind's limit (what is left of it for all files)."""
        spec = kind.upload
        if spec is None:
            raise XeniosError(f"job kind {kind.name} takes no upload")
        head = b""
        async for chunk in chunks:
            head += chunk
            if len(head) >= spec.sniff_bytes:
                break
        if not head:
            raise InvalidInput("the uploaded file is empty", code="empty_file")
        file_format = spec.sniff(head[: spec.sniff_bytes], filename)
        if file_format is None:
            hint = f"; send one of: {spec.formats_hint}" if spec.formats_hint else ""
            raise UnsupportedMediaType(f"the file's type is not supported{hint}", code="unsupported_format")
        limit = spec.limit(self.settings) if max_bytes is None else max_bytes
        blob = await self.storage.put(upload_key(job_id, index), _prepend(head, chunks), max_bytes=limit)
        return Upload(blob.key, filename, file_format, blob.size, blob.sha256)

    # -- read -----------------------------------------------------------------------------------------

    async def get(self, job_id: UUID, owner: str | None) -> Job:
        """The job; with ``owner``, only if it is theirs (None: a service read, any owner)."""
        job = await store.get(self.db, job_id, owner)
        if job is None:
            raise NotFound(f"job {job_id} not found", code="job_not_found")
        return job

    async def list(
        self,
        owner: str,
        *,
        statuses: Sequence[JobStatus] = (),
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> tuple[list[Job], str | None]:
        """A page of the owner's jobs, newest first, and the cursor of the next page (None: last page)."""
        before = decode_cursor(cursor) if cursor else None
        jobs = await store.list_jobs(
            self.db, owner, statuses=statuses, kind=kind, before=before, limit=limit + 1
        )
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return jobs, encode_cursor(jobs[-1]) if more and jobs else None

    # -- cancel ---------------------------------------------------------------------------------------

    async def cancel(self, job_id: UUID, owner: str) -> Job:
        """Queued: cancelled now, never runs. Running: the worker stops at its next checkpoint and the
        job ends cancelled. Already cancelled: unchanged. Succeeded or failed: 409."""
        changed = await store.cancel(
            self.db, job_id, owner, webhook_after=self.settings.webhook_resend_seconds
        )
        if changed is None:
            job = await self.get(job_id, owner)
            if job.status == "cancelled":
                return job
            raise Conflict(f"the job already {job.status}", code="job_finished")
        job, before = changed
        if before == "queued":
            await self.after_terminal(job)
        else:
            # Without Redis the worker still sees the request at its next progress write or heartbeat.
            with contextlib.suppress(RedisError, OSError):
                await self.redis.publish(events.cancel_channel(self._prefix), str(job.id))
        return job

    async def after_terminal(self, job: Job) -> None:
        """Tell listeners, delete the job's secret (and its upload with DELETE_UPLOADS_ON_FINISH), and have
        the webhook delivered if one was asked for.

        Called once a terminal state is committed, wherever it happens (worker, cancel, sweep). Never
        raises: the webhook is also due in the row, and the sweep queues it when this enqueue is lost.
        """
        await events.publish(self.redis, self._prefix, job.id, StateChanged(job.status))
        uploads = [
            key for key in job.blobs if is_upload_key(job.id, key)
        ]  # every track of a several-file job
        for key, what in (
            (secret_key(job.id), "secret"),
            *((key, "upload") for key in (uploads if self.settings.delete_uploads_on_finish else [])),
        ):
            if key not in job.blobs:
                continue
            try:
                await self.storage.delete(key)
            except Exception as exc:  # retention removes it with the job
                logger.warning("{} of job {} not deleted: {}", what, job.id, type(exc).__name__)
        if job.webhook_url:
            try:
                await self.enqueuer.send("default", WEBHOOK_ACTOR, (str(job.id),))
            except Exception as exc:
                logger.warning(
                    "webhook of job {} not queued now ({}); the sweep queues it", job.id, type(exc).__name__
                )

    async def deliver_webhook(self, session: aiohttp.ClientSession, job_id: UUID) -> None:
        """One delivery attempt of a finished job's webhook (the webhook actor's body). A failure worth
        retrying makes the webhook due again after a backoff, and the sweep queues it then, until
        WEBHOOK_MAX_ATTEMPTS were made; any other end (delivered, refused, nothing to deliver) leaves
        nothing due."""
        try:
            await deliver_for_job(self.db, session, self.settings, job_id)
        except WebhookRetry:
            due = await store_webhooks.webhook_retry_later(
                self.db,
                job_id,
                max_attempts=self.settings.webhook_max_attempts,
                backoff_seconds=WEBHOOK_BACKOFF_SECONDS,
                max_backoff_seconds=WEBHOOK_MAX_BACKOFF_SECONDS,
            )
            if due is None:
                logger.warning(
                    "webhook of job {} given up after {} attempts", job_id, self.settings.webhook_max_attempts
                )
            return
        await store_webhooks.webhook_settled(self.db, job_id)

    # -- events ---------------------------------------------------------------------------------------

    async def stream(self, job: Job) -> AsyncIterator[StreamItem]:
        """The job's current state, then progress and state changes until a terminal state.

        The row is re-read on every state change, on a pub/sub reconnect and at each heartbeat, so a lost
        event (Redis blip) only delays what the stream shows.
        """
        yield ("state", job)
        if job.terminal:
            return
        last = job
        async with self.hub.listen(job.id) as queue:
            check = True  # the job may have moved between the first read and the subscription
            while True:
                if check:
                    current = await store.get(self.db, job.id)
                    if current is None:
                        return
                    if (current.status, current.progress, current.cancel_requested_at) != (
                        last.status, last.progress, last.cancel_requested_at,
                    ):  # fmt: skip
                        last = current
                        yield ("state", current)
                    if current.terminal:
                        return
                    check = False
                try:
                    item = await asyncio.wait_for(queue.get(), self.heartbeat_seconds)
                except TimeoutError:
                    yield ("ping", None)
                    check = True
                    continue
                if isinstance(item, Progress):
                    yield ("progress", item)
                elif isinstance(item, StateChanged | Resync):
                    check = True
