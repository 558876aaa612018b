"""A job's input named by reference instead of uploaded: an object in the bucket, or a URL the worker fetches.

``{"storage_key": "uploads/<user>/talk.m4a"}``: a key in the configured bucket (the MVP keeps its files in
Supabase Storage), read from the bucket's root (not under S3_KEY_PREFIX), only under one of
SOURCE_STORAGE_PREFIXES (``{owner}`` in a prefix stands for the caller's user id) and never inside this
service's own ``jobs/`` area.

``{"url": "https://..."}``: fetched by the worker, only from SOURCE_URL_ALLOWED_HOSTS, only over HTTPS,
never from a private, loopback, link-local or otherwise non-public address (every address a name
resolves to is checked at connect time, so DNS cannot swap one in after the check) unless
SOURCE_URL_ALLOW_PRIVATE (tests; it also allows plain HTTP). Redirects are followed by hand, each hop
checked again. The size limit is applied to Content-Length and while streaming.

Failures carry one code per cause: ``source_forbidden`` (403), ``source_not_found`` (404),
``source_too_large`` (413), ``source_unreachable`` (503, retried; 502 when the server answered with
an error that retrying will not fix). The API checks what it can without fetching (`check_source`);
the worker does the rest.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import msgspec

from xenios_ai.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UpstreamError,
    UpstreamUnavailable,
    XeniosError,
)
from xenios_ai.settings import Settings
from xenios_ai.storage.base import check_key

MAX_REDIRECTS = 5
_CHUNK = 256 * 1024
OWN_AREA = "jobs/"
"""Where this service keeps its own blobs (under S3_KEY_PREFIX): never a source."""


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Exactly one of ``storage_key`` and ``url``."""

    storage_key: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.storage_key is None) == (self.url is None):
            raise ValueError("give exactly one of storage_key and url")

    @property
    def filename(self) -> str | None:
        name = (self.storage_key or urlsplit(self.url or "").path).rstrip("/").rsplit("/", 1)[-1]
        return name or None


def forbidden(detail: str) -> Forbidden:
    return Forbidden(detail, code="source_forbidden")


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the source is larger than the limit of {max_bytes} bytes",
        code="source_too_large",
        extra={"max_bytes": max_bytes},
    )


def not_found(detail: str) -> NotFound:
    return NotFound(detail, code="source_not_found")


def unreachable(detail: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(detail, code="source_unreachable")


def check_source(source: Source, settings: Settings, owner: str) -> Source:
    """What the API checks before accepting a job (nothing is fetched): 422 for a malformed source, 403
    ``source_forbidden`` for one outside what this service may read."""
    if source.storage_key is not None:
        check_storage_key(source.storage_key, settings, owner)
    else:
        assert source.url is not None
        check_url_shape(source.url, settings)
    return source


def check_storage_key(key: str, settings: Settings, owner: str) -> str:
    try:
        check_key(key)
    except XeniosError:
        raise InvalidInput("source.storage_key: not a valid object key", code="invalid_source") from None
    own = settings.s3_key_prefix.strip("/")
    own_area = f"{own}/" if settings.storage_backend == "s3" and own else OWN_AREA
    prefixes = [prefix.replace("{owner}", owner) for prefix in settings.source_prefixes]
    if key.startswith(own_area) or not any(key.startswith(prefix) for prefix in prefixes):
        raise forbidden("source.storage_key: outside the prefixes this service may read")
    return key


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in allowed)


def check_url_shape(url: str, settings: Settings) -> tuple[str, int]:
    """The URL's host and port when its scheme and host are allowed; 422/403 otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("source.url: not a URL", code="invalid_source") from None
    schemes = ("https", "http") if settings.source_url_allow_private else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidInput("source.url: an https:// URL with a host is required", code="invalid_source")
    if parts.username or parts.password:
        raise InvalidInput("source.url: credentials in the URL are not accepted", code="invalid_source")
    if not _host_allowed(parts.hostname, settings.source_hosts):
        raise forbidden(f"source.url: the host {parts.hostname} is not in SOURCE_URL_ALLOWED_HOSTS")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _CheckedResolver(aiohttp.abc.AbstractResolver):
    """Resolves like the system does, then refuses the name if any address is not public."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> Any:
        try:
            infos = await self._inner.resolve(host, port, family)
        except OSError as exc:
            raise unreachable(f"the source host {host} does not resolve") from exc
        if not self._allow_private:
            for info in infos:
                if not _public(info["host"]):
                    raise forbidden(f"the source host {host} resolves to a non-public address")
        return infos

    async def close(self) -> None:
        await self._inner.close()


async def fetch_url(url: str, settings: Settings, max_bytes: int) -> AsyncGenerator[bytes, None]:
    """The body of ``url`` as it arrives, after the checks above; raises the per-cause errors."""
    timeout = aiohttp.ClientTimeout(total=settings.source_url_timeout_seconds, sock_connect=10)
    connector = aiohttp.TCPConnector(resolver=_CheckedResolver(settings.source_url_allow_private))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            check_url_shape(current, settings)
            try:
                async with session.get(current, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise UpstreamError("the source redirected nowhere", code="source_unreachable")
                        current = urljoin(current, location)
                        continue
                    _check_status(response.status)
                    if (response.content_length or 0) > max_bytes:
                        raise too_large(max_bytes)
                    received = 0
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        received += len(chunk)
                        if received > max_bytes:
                            raise too_large(max_bytes)
                        yield chunk
                    return
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise unreachable(f"the source could not be fetched ({type(exc).__name__})") from exc
        raise UpstreamError(
            f"the source redirected more than {MAX_REDIRECTS} times", code="source_unreachable"
        )


def _check_status(status: int) -> None:
    if status < 300:
        return
    if status in (404, 410):
        raise not_found(f"the source URL answered {status}")
    if status in (401, 403):
        raise forbidden(f"the source URL answered {status}")
    if status in (408, 429) or status >= 500:
        raise unreachable(f"the source URL answered {status}")
    raise UpstreamError(f"the source URL answered {status}", code="source_unreachable")
