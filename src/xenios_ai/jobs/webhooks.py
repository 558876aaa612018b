"""Webhooks on a job's terminal state, per Standard Webhooks (https://www.standardwebhooks.com).

Headers ``webhook-id`` (the same on every retry of one event), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` = ``v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>``, where the secret is
the base64 part of a ``whsec_...`` WEBHOOK_SECRET (any other value is used as raw bytes).

Never to loopback, private, link-local or otherwise non-global addresses unless WEBHOOK_ALLOW_PRIVATE:
the URL is checked at submit (422) and again at delivery by the connector's resolver, so a name that
resolves elsewhere later (DNS rebinding) is still refused; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from loguru import logger

from xenios_ai.db.pool import Pool
from xenios_ai.errors import InvalidInput, UpstreamUnavailable, XeniosError
from xenios_ai.jobs import store
from xenios_ai.jobs.models import Job
from xenios_ai.settings import Settings

_MAX_URL_LENGTH = 2048
_encoder = msgspec.json.Encoder()
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRetry(UpstreamUnavailable):
    """The receiver failed in a way worth retrying (network, timeout, 408, 429, 5xx)."""


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def address_allowed(address: IPAddress, *, allow_private: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow_private:
        return not (address.is_multicast or address.is_unspecified)
    return address.is_global and not address.is_multicast


def _invalid(reason: str) -> InvalidInput:
    return InvalidInput(f"webhook_url: {reason}", code="invalid_webhook_url")


async def check_url(url: str, *, allow_private: bool) -> str:
    """Validate a webhook URL at submit: http(s), a host, no credentials, and every address it resolves
    to allowed. Raises InvalidInput (422) ``invalid_webhook_url``."""
    if len(url) > _MAX_URL_LENGTH:
        raise _invalid("too long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _invalid("not a valid URL") from None
    if parts.scheme not in ("https", "http"):
        raise _invalid("must be an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise _invalid("must not carry credentials")
    host = parts.hostname
    if not host:
        raise _invalid("has no host")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except OSError:
            raise _invalid(f"the host {host} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not all(address_allowed(a, allow_private=allow_private) for a in addresses):
        raise _invalid("points to a private, loopback or link-local address")
    return url


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default and refuses hosts with any disallowed address."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not address_allowed(ipaddress.ip_address(result["host"]), allow_private=self._allow_private):
                raise OSError(f"webhook host {host} resolves to a disallowed address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def webhook_session(*, allow_private: bool, timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private), limit=64)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), auto_decompress=False
    )


class WebhookEvent(msgspec.Struct):
    """The body: Standard Webhooks' {type, timestamp, data}; fetch the result from data.links.self."""

    type: str
    timestamp: str
    data: dict[str, Any]


def event_body(job: Job) -> tuple[str, bytes]:
    """The event's id (stable across retries) and JSON body for a finished job."""
    data: dict[str, Any] = {
        "job_id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "error": msgspec.to_builtins(job.error) if job.error else None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "links": {"self": f"/api/v1/jobs/{job.id}"},
    }
    stamp = (job.finished_at or job.created_at).isoformat()
    body = _encoder.encode(WebhookEvent(f"job.{job.status}", stamp, data))
    return f"msg_{job.id.hex}_{job.status}", body


async def deliver(session: aiohttp.ClientSession, url: str, secret: bytes, msg_id: str, body: bytes) -> int:
    """POST one attempt; returns the status of a delivered (2xx) event.

    Raises WebhookRetry for what may pass (network, timeout, 408, 429, 5xx), XeniosError
    ``webhook_rejected`` for any other answer.
    """
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "xenios-ai-webhooks",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            status = response.status
            await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise WebhookRetry(f"webhook delivery failed: {type(exc).__name__}: {exc}") from None
    if 200 <= status < 300:
        return status
    if status in (408, 429) or status >= 500:
        raise WebhookRetry(f"the receiver answered {status}")
    raise XeniosError(f"the receiver answered {status}", code="webhook_rejected")


async def deliver_for_job(db: Pool, session: aiohttp.ClientSession, settings: Settings, job_id: UUID) -> None:
    """One delivery attempt of a finished job's webhook, recorded on the row. Raises WebhookRetry when the
    attempt should be repeated (the actor's retry policy decides when and whether)."""
    job = await store.get(db, job_id)
    if job is None or not job.webhook_url or not job.terminal or job.webhook_delivered_at is not None:
        return
    if settings.webhook_secret is None:
        logger.error("job {} has a webhook but WEBHOOK_SECRET is not set; not delivered", job.id)
        return
    msg_id, body = event_body(job)
    try:
        await check_url(job.webhook_url, allow_private=settings.webhook_allow_private)
        status = await deliver(
            session, job.webhook_url, secret_bytes(settings.webhook_secret.get()), msg_id, body
        )
    except WebhookRetry as exc:
        await store.record_webhook(db, job.id, delivered=False, error=exc.detail)
        logger.warning("webhook of job {} not delivered yet: {}", job.id, exc.detail)
        raise
    except XeniosError as exc:
        await store.record_webhook(db, job.id, delivered=False, error=exc.detail)
        logger.warning("webhook of job {} refused, not retried: {}", job.id, exc.detail)
        return
    await store.record_webhook(db, job.id, delivered=True, error=None)
    logger.info("webhook of job {} delivered ({})", job.id, status)
