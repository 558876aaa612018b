"""Webhooks on a job's terminal state, per Standard Webhooks (https://www.standardwebhooks.com).

Headers ``webhook-id`` (the same on every retry of one event), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` = ``v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>``, where the secret is
the base64 part of a ``whsec_...`` WEBHOOK_SECRET (any other value is used as raw bytes; a ``whsec_`` value
that is not strict base64 stops start-up, see `settings_load.webhook_key`).

Never to loopback, private, link-local or otherwise non-global addresses unless WEBHOOK_ALLOW_PRIVATE,
also when hidden in an IPv6 address that embeds IPv4 (mapped, 6to4, NAT64). At submit, `check_url`
refuses (422) a bad URL, a private IP literal, a name that does not exist and a name that resolves to a
private address; a name that cannot be resolved *right now* (a temporary DNS failure or a lookup slower
than a few seconds) is accepted, since the delivery checks again. At delivery, `check_delivery_url` checks
IP literals without any DNS, and names are checked by the connector's resolver on every connection, so a
name that resolves elsewhere later (DNS rebinding) is still refused, and a DNS failure there is retried like
any network error; redirects are not followed. Only a few KiB of a receiver's answer are read.
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
from xenios_ai.jobs import store, store_webhooks
from xenios_ai.jobs.models import Job
from xenios_ai.settings import Settings
from xenios_ai.settings_load import webhook_key

_MAX_URL_LENGTH = 2048
_MAX_RESPONSE_BYTES = 4096
"""Read of a receiver's answer: only its status matters, the rest is not waited for."""
_RESOLVE_TIMEOUT_SECONDS = 5.0
"""Longest DNS lookup at submit; past it the name is accepted and checked at delivery."""
_NO_SUCH_NAME = frozenset(
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, name)
)
"""getaddrinfo's answers that a name does not exist (EAI_AGAIN, EAI_FAIL and others may pass)."""
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_encoder = msgspec.json.Encoder()
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRetry(UpstreamUnavailable):
    """The receiver failed in a way worth retrying (network, timeout, 408, 429, 5xx)."""


def secret_bytes(secret: str) -> bytes:
    """The signing key of a WEBHOOK_SECRET; SettingsError (naming the variable, not the value) when a
    ``whsec_`` secret is not strict base64."""
    return webhook_key(secret)


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries traffic to: IPv4-mapped, 6to4 (2002::/16), NAT64
    (64:ff9b::/96) and the deprecated IPv4-compatible ::/96."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_allowed(address: IPAddress, *, allow_private: bool) -> bool:
    """Whether a webhook may connect to ``address``. An IPv6 address that embeds IPv4 is judged by that
    IPv4 address; local-use NAT64 (64:ff9b:1::/48, whose IPv4 position depends on the operator's prefix)
    and Teredo (2001::/32) are refused outright unless private addresses are allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        if not allow_private and (address in _NAT64_LOCAL or address.teredo is not None):
            return False
        address = _embedded_ipv4(address) or address
    if allow_private:
        return not (address.is_multicast or address.is_unspecified)
    return address.is_global and not address.is_multicast


def _invalid(reason: str) -> InvalidInput:
    return InvalidInput(f"webhook_url: {reason}", code="invalid_webhook_url")


def _host_and_port(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL without credentials; InvalidInput otherwise."""
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
    if _ip_literal(host) is None:
        try:  # what a resolver does first; a label over 63 characters was a 500 (found by schemathesis)
            host.encode("idna")
        except UnicodeError:
            raise _invalid("the host is not a valid name") from None
    return host, port or (443 if parts.scheme == "https" else 80)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refuse_unless_allowed(addresses: list[IPAddress], *, allow_private: bool) -> None:
    if not all(address_allowed(a, allow_private=allow_private) for a in addresses):
        raise _invalid("points to a private, loopback or link-local address")


def check_delivery_url(url: str, *, allow_private: bool) -> str:
    """The delivery's check, without DNS: a valid URL, and an IP-literal host allowed. A named host is
    checked by the session's `GuardedResolver` when it connects, where a DNS failure is retried.
    Raises InvalidInput ``invalid_webhook_url`` (not retried)."""
    host, _ = _host_and_port(url)
    literal = _ip_literal(host)
    if literal is not None:
        _refuse_unless_allowed([literal], allow_private=allow_private)
    return url


async def check_url(
    url: str,
    *,
    allow_private: bool,
    resolver: AbstractResolver | None = None,
    resolve_timeout: float = _RESOLVE_TIMEOUT_SECONDS,
) -> str:
    """Validate a webhook URL at submit: http(s), a host, no credentials, and every address it resolves
    to (through ``resolver``, aiohttp's default when None) allowed. Raises InvalidInput (422)
    ``invalid_webhook_url``, also for a name that does not exist; a name that cannot be resolved now
    (temporary failure, no answer within ``resolve_timeout``) is accepted: the delivery checks again."""
    host, port = _host_and_port(url)
    literal = _ip_literal(host)
    if literal is not None:
        _refuse_unless_allowed([literal], allow_private=allow_private)
        return url
    owned = resolver is None
    resolver = resolver or DefaultResolver()
    try:
        async with asyncio.timeout(resolve_timeout):
            results = await resolver.resolve(host, port, socket.AF_UNSPEC)
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_NAME:
            raise _invalid(f"the host {host} does not resolve") from None
        logger.info("webhook host {} not resolved now ({!r}); accepted, checked at delivery", host, exc)
        return url
    finally:
        if owned:
            await resolver.close()
    _refuse_unless_allowed([ipaddress.ip_address(r["host"]) for r in results], allow_private=allow_private)
    return url


class GuardedResolver(AbstractResolver):
    """Resolves like ``inner`` (aiohttp's default when None) and refuses hosts with any disallowed
    address."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()
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


def webhook_session(
    *, allow_private: bool, timeout: float, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """The delivery session: every connection's addresses checked (names resolved by ``resolver``,
    aiohttp's default when None), ``timeout`` over the whole attempt including DNS."""
    guarded = GuardedResolver(allow_private=allow_private, inner=resolver)
    connector = aiohttp.TCPConnector(resolver=guarded, limit=64)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), auto_decompress=False
    )


class WebhookEvent(msgspec.Struct):
    """The body: Standard Webhooks' {type, timestamp, data}. ``data`` names the job (``id``; ``job_id`` is
    its deprecated alias) and its ``owner``; the result is in ``data.result`` when the submit asked for it
    (``webhook_include_result``), or behind ``data.result_url`` (signed, short-lived) when it is large;
    otherwise fetch it from ``data.links.self`` with the API key (a service read)."""

    type: str
    timestamp: str
    data: dict[str, Any]


def result_signature(key: bytes, job_id: UUID, expires: int) -> str:
    """The signature of a result URL of ``job_id`` valid until ``expires`` (Unix seconds)."""
    digest = hmac.new(key, f"result.{job_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def result_url(key: bytes, job_id: UUID, expires: int) -> str:
    """The signed URL (path and query) of a job's result, readable without credentials until ``expires``."""
    return f"/api/v1/results/{job_id}?expires={expires}&signature={result_signature(key, job_id, expires)}"


def result_url_valid(key: bytes, job_id: UUID, expires: int, signature: str, *, now: float) -> bool:
    """Whether a result URL's signature is right (constant time) and it has not expired."""
    good = hmac.compare_digest(result_signature(key, job_id, expires).encode(), signature.encode())
    return good and now < expires


class ResultPolicy(msgspec.Struct, frozen=True):
    """How an event carries a result: inline up to ``max_bytes`` of JSON, else a URL signed with ``key``
    and valid ``url_seconds`` from ``now``."""

    key: bytes
    max_bytes: int
    url_seconds: float
    now: float


def event_body(job: Job, results: ResultPolicy | None = None) -> tuple[str, bytes]:
    """The event's id (stable across retries) and JSON body for a finished job; with ``results`` and a
    job that asked for it, its result (inline or as a signed URL)."""
    data: dict[str, Any] = {
        "id": str(job.id),
        "job_id": str(job.id),
        "owner": job.owner,
        "kind": job.kind,
        "status": job.status,
        "error": msgspec.to_builtins(job.error) if job.error else None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "links": {"self": f"/api/v1/jobs/{job.id}"},
    }
    if results is not None and job.webhook_include_result and job.status == "succeeded":
        encoded = _encoder.encode(job.result)
        if len(encoded) <= results.max_bytes:
            data["result"] = msgspec.Raw(encoded)
        else:
            expires = int(results.now + results.url_seconds)
            data["result_url"] = result_url(results.key, job.id, expires)
            data["result_expires_at"] = expires
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
            await response.content.read(_MAX_RESPONSE_BYTES)  # any more is dropped with the connection
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise WebhookRetry(f"webhook delivery failed: {type(exc).__name__}: {exc}") from None
    if 200 <= status < 300:
        return status
    if status in (408, 429) or status >= 500:
        raise WebhookRetry(f"the receiver answered {status}")
    raise XeniosError(f"the receiver answered {status}", code="webhook_rejected")


async def attempt_delivery(
    session: aiohttp.ClientSession, url: str, secret: bytes, msg_id: str, body: bytes, *, allow_private: bool
) -> int:
    """One attempt as `deliver_for_job` makes it: `check_delivery_url` (no DNS: a DNS failure must be
    retried, never refuse the webhook), then `deliver`."""
    check_delivery_url(url, allow_private=allow_private)
    return await deliver(session, url, secret, msg_id, body)


async def deliver_for_job(db: Pool, session: aiohttp.ClientSession, settings: Settings, job_id: UUID) -> None:
    """One delivery attempt of a finished job's webhook, recorded on the row. Raises WebhookRetry when the
    attempt should be repeated (the actor's retry policy decides when and whether)."""
    job = await store.get(db, job_id)
    if job is None or not job.webhook_url or not job.terminal or job.webhook_delivered_at is not None:
        return
    if settings.webhook_secret is None:
        logger.error("job {} has a webhook but WEBHOOK_SECRET is not set; not delivered", job.id)
        return
    try:
        secret = secret_bytes(settings.webhook_secret.get())
        policy = ResultPolicy(
            secret, settings.webhook_result_max_bytes, settings.webhook_result_url_seconds, time.time()
        )
        msg_id, body = event_body(job, policy)
        allow_private = settings.webhook_allow_private
        status = await attempt_delivery(
            session, job.webhook_url, secret, msg_id, body, allow_private=allow_private
        )
    except WebhookRetry as exc:
        await store_webhooks.record_webhook(db, job.id, delivered=False, error=exc.detail)
        logger.warning("webhook of job {} not delivered yet: {}", job.id, exc.detail)
        raise
    except XeniosError as exc:
        await store_webhooks.record_webhook(db, job.id, delivered=False, error=exc.detail)
        logger.warning("webhook of job {} refused, not retried: {}", job.id, exc.detail)
        return
    await store_webhooks.record_webhook(db, job.id, delivered=True, error=None)
    logger.info("webhook of job {} delivered ({})", job.id, status)
