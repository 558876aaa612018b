"""Webhook signing (Standard Webhooks) and the address rules that keep webhooks off private networks."""

from __future__ import annotations

import base64
import ipaddress
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from xenios_ai.errors import InvalidInput
from xenios_ai.jobs.models import Job, JobError
from xenios_ai.jobs.webhooks import (
    GuardedResolver,
    address_allowed,
    check_url,
    event_body,
    secret_bytes,
    sign,
)


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The vector used by the Standard Webhooks reference libraries.
    secret = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secrets_without_prefix_are_raw_bytes() -> None:
    assert secret_bytes("plain-secret") == b"plain-secret"
    assert secret_bytes("whsec_" + base64.b64encode(b"\x00\x01").decode()) == b"\x00\x01"


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), allow_private=False)


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
        ("http://169.254.169.254/latest/meta-data", "private"),
        ("https://localhost/hook", "private"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
        ("https://93.184.215.14:99999/hook", "not a valid URL"),
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


async def test_the_delivery_resolver_refuses_names_of_private_addresses() -> None:
    resolver = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(OSError, match="disallowed"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


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
