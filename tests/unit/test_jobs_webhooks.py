"""Webhook signing (Standard Webhooks), the address rules that keep webhooks off private networks, and
how a delivery attempt treats DNS failures and receivers' answers."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.support.http import LocalServer, QuietHandler
from xenios_ai.errors import InvalidInput
from xenios_ai.jobs.models import Job, JobError
from xenios_ai.jobs.webhooks import (
    GuardedResolver,
    WebhookRetry,
    address_allowed,
    attempt_delivery,
    check_url,
    event_body,
    secret_bytes,
    sign,
    webhook_session,
)
from xenios_ai.settings import SettingsError
from xenios_ai.settings_load import load_settings

SECRET = b"test-webhook-secret"


class StaticResolver(AbstractResolver):
    """A resolver we control: answers every name with ``addresses``."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host=a, port=port, family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0, flags=socket.AI_NUMERICHOST,
            )
            for a in self.addresses
        ]  # fmt: skip

    async def close(self) -> None:
        pass


class FailingResolver(AbstractResolver):
    """A resolver we control whose DNS fails the way getaddrinfo does: ``errno`` (EAI_AGAIN: temporary)."""

    def __init__(self, errno: int = socket.EAI_AGAIN) -> None:
        self.errno = errno
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        raise socket.gaierror(self.errno, "Temporary failure in name resolution")

    async def close(self) -> None:
        pass


class SilentResolver(AbstractResolver):
    """A resolver we control that never answers (a DNS server dropping the query)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pass


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The vector used by the Standard Webhooks reference libraries.
    secret = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secrets_without_prefix_are_raw_bytes() -> None:
    assert secret_bytes("plain-secret") == b"plain-secret"
    assert secret_bytes("whsec_" + base64.b64encode(b"\x00\x01").decode()) == b"\x00\x01"


@pytest.mark.parametrize(
    "secret",
    ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-w", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw!", "whsec_MfKQ 9r8G",
     "whsec_AAE", "whsec_"],
)  # fmt: skip
def test_a_mistyped_whsec_secret_stops_start_up_naming_the_variable_not_the_value(secret: str) -> None:
    # Lenient base64 would drop the stray characters and sign with another key, silently.
    with pytest.raises(SettingsError, match=r"^WEBHOOK_SECRET: ") as caught:
        load_settings({"WEBHOOK_SECRET": secret}, dotenv=False)
    payload = secret.removeprefix("whsec_")
    assert not payload or payload not in str(caught.value)
    with pytest.raises(SettingsError, match=r"^WEBHOOK_SECRET: "):
        secret_bytes(secret)


def test_a_valid_whsec_secret_loads() -> None:
    settings = load_settings({"WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, dotenv=False)
    assert settings.webhook_secret is not None
    assert secret_bytes(settings.webhook_secret.get()) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), allow_private=False)


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a01:203",  # NAT64 of 10.1.2.3
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
        "64:ff9b:1::808:808",  # local-use NAT64: the IPv4 position is the operator's choice
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_ipv6_addresses_embedding_private_ipv4_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), allow_private=False)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "2606:4700:4700::1111"])
def test_ipv6_addresses_embedding_public_ipv4_and_global_ipv6_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address), allow_private=False)


def test_embedded_multicast_is_refused_even_when_private_addresses_are_allowed() -> None:
    assert not address_allowed(ipaddress.ip_address("64:ff9b::e000:1"), allow_private=True)
    assert address_allowed(ipaddress.ip_address("64:ff9b::7f00:1"), allow_private=True)


def test_private_addresses_pass_only_when_allowed() -> None:
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), allow_private=True)
    assert address_allowed(ipaddress.ip_address("93.184.215.14"), allow_private=False)
    assert not address_allowed(ipaddress.ip_address("224.0.0.1"), allow_private=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "http(s)"),
        ("https://user:pw@93.184.215.14/hook", "credentials"),
        ("https:///hook", "no host"),
        ("http://127.0.0.1:8080/hook", "private"),
        ("http://[::1]/hook", "private"),
        ("http://[64:ff9b::a9fe:a9fe]/hook", "private"),
        ("http://[2002:a9fe:a9fe::]/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "private"),
        ("https://localhost/hook", "private"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
        ("https://93.184.215.14:99999/hook", "not a valid URL"),
        (f"https://{'a' * 64}.example/hook", "not a valid name"),  # was a 500 (schemathesis)
    ],
)
async def test_check_url_refuses_what_could_reach_inside(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await check_url(url, allow_private=False)
    assert caught.value.code == "invalid_webhook_url"
    assert reason in caught.value.detail


async def test_check_url_accepts_public_and_allowed_private_urls() -> None:
    assert await check_url("https://93.184.215.14/hook", allow_private=False)
    assert await check_url("http://127.0.0.1:9/hook", allow_private=True)


async def test_check_url_refuses_names_whose_addresses_embed_private_ipv4() -> None:
    for address in ("64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::"):
        with pytest.raises(InvalidInput, match="private"):
            await check_url(
                "https://hooks.example.com/x", allow_private=False, resolver=StaticResolver(address)
            )
    resolver = StaticResolver("93.184.215.14", "64:ff9b::808:808")
    assert await check_url("https://hooks.example.com/x", allow_private=False, resolver=resolver)


async def test_check_url_accepts_a_name_that_cannot_be_resolved_now() -> None:
    # A temporary DNS failure (EAI_AGAIN) or a lookup without an answer is not the caller's fault: the URL
    # is accepted and the delivery resolves (and checks) it again. A name that does not exist is refused
    # (the .invalid case above, through the real resolver).
    failing = FailingResolver(socket.EAI_AGAIN)
    assert await check_url("https://hooks.example.com/x", allow_private=False, resolver=failing)
    assert failing.calls == 1
    url = "https://hooks.example.com/x"
    assert await check_url(url, allow_private=False, resolver=SilentResolver(), resolve_timeout=0.01)
    with pytest.raises(InvalidInput, match="does not resolve"):
        await check_url(url, allow_private=False, resolver=FailingResolver(socket.EAI_NONAME))


async def test_the_delivery_resolver_refuses_names_of_private_addresses() -> None:
    resolver = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(OSError, match="disallowed"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    nat64 = GuardedResolver(allow_private=False, inner=StaticResolver("64:ff9b::a9fe:a9fe"))
    with pytest.raises(OSError, match="disallowed"):
        await nat64.resolve("hooks.example.com", 443)


async def test_a_dns_failure_at_delivery_is_retried_not_a_refused_webhook() -> None:
    # A name that no longer resolves (the real resolver, .invalid) and a temporary failure (a resolver we
    # control) both fail the attempt as WebhookRetry: the webhook is tried again, never given up as invalid.
    url = "https://hooks.example.invalid/hook"
    async with webhook_session(allow_private=False, timeout=10) as session:
        with pytest.raises(WebhookRetry, match="webhook delivery failed"):
            await attempt_delivery(session, url, SECRET, "msg_1", b"{}", allow_private=False)
    failing = FailingResolver(socket.EAI_AGAIN)
    async with webhook_session(allow_private=False, timeout=10, resolver=failing) as session:
        with pytest.raises(WebhookRetry, match="Temporary failure in name resolution"):
            await attempt_delivery(
                session, "https://hooks.example.com/x", SECRET, "msg_1", b"{}", allow_private=False
            )
    assert failing.calls >= 1


async def test_a_private_ip_literal_at_delivery_is_refused_without_a_connection() -> None:
    async with webhook_session(allow_private=False, timeout=10) as session:
        for url in ("http://169.254.169.254/latest", "http://[64:ff9b::7f00:1]:9/hook"):
            with pytest.raises(InvalidInput, match="private") as caught:
                await attempt_delivery(session, url, SECRET, "msg_1", b"{}", allow_private=False)
            assert caught.value.code == "invalid_webhook_url"


class HugeAnswerReceiver(LocalServer):
    """A real receiver that answers 200 with a 128 MiB body, noting how much it sent before the client hung up."""

    BODY_BYTES = 128 * 1024 * 1024

    def __init__(self) -> None:
        self.done = threading.Event()
        self.hung_up = False
        self.sent = 0
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    while receiver.sent < receiver.BODY_BYTES:
                        self.wfile.write(chunk)
                        receiver.sent += len(chunk)
                except OSError:
                    receiver.hung_up = True
                finally:
                    receiver.done.set()

        super().__init__(Handler)


@pytest.fixture
def huge_answer_receiver() -> Iterator[HugeAnswerReceiver]:
    with HugeAnswerReceiver() as receiver:
        yield receiver


async def test_the_delivery_reads_only_the_start_of_the_answer(
    huge_answer_receiver: HugeAnswerReceiver,
) -> None:
    # Only the status matters: the attempt hangs up after a few KiB instead of holding the whole answer in
    # memory (what it sent at most is the loopback's socket buffers).
    receiver = huge_answer_receiver
    async with webhook_session(allow_private=True, timeout=30) as session:
        status = await attempt_delivery(
            session, f"{receiver.base_url}/hook", SECRET, "msg_1", b"{}", allow_private=True
        )
    assert status == 200
    assert await asyncio.to_thread(receiver.done.wait, 10)
    assert receiver.hung_up
    assert receiver.sent < 32 * 1024 * 1024


def test_event_body_is_a_standard_webhooks_event_without_the_result() -> None:
    job = Job(
        id=uuid.UUID(int=7), kind="analysis", queue="llm", status="failed", owner="user-1", input={},
        result={"secret": "not in the webhook"}, error=JobError("upstream_error", "every model failed"),
        created_at=datetime(2026, 1, 1, tzinfo=UTC), finished_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
    )  # fmt: skip
    msg_id, body = event_body(job)
    assert msg_id == f"msg_{job.id.hex}_failed"
    event = msgspec.json.decode(body)
    assert event["type"] == "job.failed"
    assert event["timestamp"] == "2026-01-01T00:01:00+00:00"
    assert event["data"]["job_id"] == str(job.id)
    assert event["data"]["error"] == {"code": "upstream_error", "message": "every model failed"}
    assert event["data"]["links"]["self"] == f"/api/v1/jobs/{job.id}"
    assert b"not in the webhook" not in body
