"""Auth over HTTP: the API key on every /api/v1 route, and Supabase JWTs (HS256 and JWKS) with the attacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from litestar.testing import AsyncTestClient

from tests.support import tokens
from tests.support.clock import FakeClock
from tests.support.config import make_settings
from tests.support.processes import ApiServer
from tests.support.tokens import JWKSServer
from xenios_ai.api.app import create_app
from xenios_ai.api.auth import JWTVerifier
from xenios_ai.errors import Unauthorized, UpstreamUnavailable

ME = "/api/v1/me"
CHALLENGE = "Bearer"
REJECTED = 'Bearer error="invalid_token"'
_users = itertools.count()


def new_user() -> str:
    """A fresh ``sub``, so each token is new to the service (not in its verified-token cache)."""
    return f"user-{next(_users)}"


@pytest.fixture(scope="module")
def jwks() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


@pytest.fixture
async def jwks_client(test_env: dict[str, str], jwks: JWKSServer) -> AsyncIterator[AsyncTestClient[Any]]:
    """Both mechanisms on: JWKS from the local server (so `iss` is checked) and the HS256 secret."""
    settings = make_settings(test_env, supabase_url=jwks.base_url)
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


def assert_problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["detail"]


async def test_api_routes_need_the_api_key(client: AsyncTestClient[Any]) -> None:
    assert_problem(await client.get("/api/v1/status"), 401, "invalid_api_key")
    assert_problem(await client.get("/api/v1/status", headers={"X-API-Key": "wrong"}), 401, "invalid_api_key")
    for key in (tokens.API_KEY, tokens.OTHER_API_KEY):  # both keys of a rotation work
        assert (await client.get("/api/v1/status", headers={"X-API-Key": key})).status_code == 200


async def test_health_needs_no_auth(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/health")).status_code == 200


async def test_user_routes_need_a_bearer_token(client: AsyncTestClient[Any]) -> None:
    response = await client.get(ME, headers={"X-API-Key": tokens.API_KEY})
    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == CHALLENGE  # RFC 6750: no error code without a token
    response = await client.get(ME, headers={"X-API-Key": tokens.API_KEY, "Authorization": "Basic eDp5"})
    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == CHALLENGE
    response = await client.get(ME, headers={"Authorization": f"Bearer {tokens.hs256_token()}"})
    assert_problem(response, 401, "invalid_api_key")  # a user token never replaces the API key


async def test_hs256_token_gives_the_principal(client: AsyncTestClient[Any]) -> None:
    response = await client.get(ME, headers=tokens.headers("user-42", email="a@b.co"))
    assert response.status_code == 200
    assert response.json() == {"user_id": "user-42", "role": "authenticated", "email": "a@b.co"}


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_jwks_tokens_are_accepted(
    jwks_client: AsyncTestClient[Any], jwks: JWKSServer, alg: str
) -> None:
    response = await jwks_client.get(ME, headers=tokens.token_headers(jwks.token(alg, sub=f"user-{alg}")))
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == f"user-{alg}"


async def test_jwks_is_cached_and_refetched_once_for_an_unknown_kid(
    jwks_client: AsyncTestClient[Any], jwks: JWKSServer
) -> None:
    before = jwks.fetches
    for _ in range(3):
        assert (
            await jwks_client.get(ME, headers=tokens.token_headers(jwks.token("ES256")))
        ).status_code == 200
    assert jwks.fetches - before <= 1  # one fetch serves every request
    before = jwks.fetches
    response = await jwks_client.get(
        ME, headers=tokens.token_headers(jwks.token("ES256", kid="rotated-away"))
    )
    assert_problem(response, 401, "invalid_token")
    assert jwks.fetches - before <= 1  # at most a single refetch for the unknown kid


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _attacks(jwks: JWKSServer) -> dict[str, str]:
    good = jwks.token("RS256")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    public_pem = jwks.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT refuses to HMAC with a PEM key, so forge the confusion token by hand, as an attacker would.

    confused_head = _b64({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}) + "." + payload
    confused_sig = hmac.new(public_pem, confused_head.encode(), hashlib.sha256).digest()
    return {
        "alg_none": _b64({"alg": "none", "typ": "JWT"}) + "." + payload + ".",
        "hs256_with_rsa_public_key": confused_head + "." + _b64(confused_sig),
        "expired": jwks.token("RS256", exp=1_600_000_000),
        "not_yet_valid": jwks.token("RS256", nbf=2_000_000_000 + 10**9),
        "wrong_audience": jwks.token("RS256", aud="service_role"),
        "wrong_issuer": jwks.token("RS256", iss="https://evil.example/auth/v1"),
        "tampered_payload": header + "." + _b64(claims | {"sub": "someone-else"}) + "." + signature,
        "unknown_kid": jwks.token("RS256", kid="nope"),
        "garbage_header": "not-base64!." + payload + "." + signature,
        "not_a_jwt": "hello",
        "missing_sub": jwt.encode(
            {k: v for k, v in claims.items() if k != "sub"}, jwks.rsa_key, "RS256", headers={"kid": "rsa-1"}
        ),
        "hs256_wrong_secret": tokens.hs256_token(secret="not-the-secret-but-long-enough-32b!"),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "alg_none", "hs256_with_rsa_public_key", "expired", "not_yet_valid", "wrong_audience", "wrong_issuer",
        "tampered_payload", "unknown_kid", "garbage_header", "not_a_jwt", "missing_sub", "hs256_wrong_secret",
    ],
)  # fmt: skip
async def test_attacks_get_401_problem(
    jwks_client: AsyncTestClient[Any], jwks: JWKSServer, attack: str
) -> None:
    token = _attacks(jwks)[attack]
    response = await jwks_client.get(ME, headers=tokens.token_headers(token))
    assert response.status_code == 401, (attack, response.text)
    body = response.json()
    assert body["code"] in {"invalid_token", "token_expired"}
    assert response.headers["www-authenticate"] == REJECTED
    assert token not in response.text  # the token is never echoed


@pytest.mark.parametrize(
    "header",
    [
        {"alg": ["ES256"], "kid": "ec-1"},
        {"alg": {"ES256": True}, "kid": "ec-1"},
        {"alg": 256, "kid": "rsa-1"},
        {"alg": None},
        {"kid": "ec-1"},
        {"alg": "ES256", "kid": ["ec-1"]},
        {"alg": "RS256", "kid": {"id": "rsa-1"}},
        {"alg": "RS256", "kid": 1},
    ],
)
async def test_malformed_header_members_are_invalid_tokens(
    jwks_client: AsyncTestClient[Any], jwks: JWKSServer, header: dict[str, Any]
) -> None:
    """`alg` and `kid` come from the attacker: a list or an object in them is a 401, not a crash."""
    _head, payload, signature = jwks.token("ES256").split(".")
    token = f"{_b64(header | {'typ': 'JWT'})}.{payload}.{signature}"
    response = await jwks_client.get(ME, headers=tokens.token_headers(token))
    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == REJECTED


async def test_expired_token_says_so(jwks_client: AsyncTestClient[Any], jwks: JWKSServer) -> None:
    response = await jwks_client.get(ME, headers=tokens.token_headers(jwks.token("ES256", exp=1_600_000_000)))
    assert_problem(response, 401, "token_expired")
    assert response.headers["www-authenticate"] == REJECTED


async def test_asymmetric_tokens_rejected_when_no_jwks_is_configured(
    client: AsyncTestClient[Any], jwks: JWKSServer
) -> None:
    assert_problem(
        await client.get(ME, headers=tokens.token_headers(jwks.token("ES256"))), 401, "invalid_token"
    )


def clocked_verifier(test_env: dict[str, str], jwks: JWKSServer, clock: FakeClock, **env: Any) -> JWTVerifier:
    """The service's verifier on the JWKS server, its time moved by the test (no sleeping)."""
    settings = make_settings(test_env, supabase_url=jwks.base_url, **env)
    return JWTVerifier(settings, clock=clock.monotonic, wall=clock.time)


async def test_a_withdrawn_key_stops_its_tokens_within_the_cache_time(test_env: dict[str, str]) -> None:
    """A token verified once is remembered, but no longer than the JWKS is: not until its `exp`."""
    clock = FakeClock()
    with JWKSServer() as jwks:
        verifier = clocked_verifier(test_env, jwks, clock, jwks_cache_seconds=60)
        token = jwks.token("ES256", sub=new_user())  # valid for an hour
        assert (await verifier.verify(token)).user_id
        jwks.withdrawn.add("ec-1")  # the project rotated the key away (e.g. it leaked)
        clock.advance(59)
        assert (await verifier.verify(token)).user_id  # still within the cache time: remembered
        assert jwks.fetches == 1
        clock.advance(2)
        with pytest.raises(Unauthorized) as rejected:
            await verifier.verify(token)
        assert rejected.value.code == "invalid_token"
        assert jwks.fetches == 2


async def test_jwks_outage_keeps_known_keys_for_twice_the_cache_time(test_env: dict[str, str]) -> None:
    """Keys are stale after 60 s; then the JWKS fails. New tokens signed with a known key keep working on
    one failed fetch (none during the 10 s back-off) until 120 s after the last good fetch, then 503 with
    Retry-After; once the JWKS is back, the first try after the back-off restores service."""
    clock = FakeClock()
    with JWKSServer() as jwks:
        verifier = clocked_verifier(test_env, jwks, clock, jwks_cache_seconds=60, jwks_retry_seconds=10)
        await verifier.verify(jwks.token("ES256", sub=new_user()))
        assert jwks.fetches == 1

        jwks.failing = 503
        clock.advance(61)  # stale: the next new token refetches, fails, and is still accepted
        for _ in range(5):
            await verifier.verify(jwks.token("RS256", sub=new_user()))
        assert jwks.fetches == 2
        clock.advance(9)  # within the back-off: no fetch
        await verifier.verify(jwks.token("ES256", sub=new_user()))
        assert jwks.fetches == 2
        clock.advance(2)  # back-off over: one more failed fetch, the known keys still trusted
        await verifier.verify(jwks.token("ES256", sub=new_user()))
        assert jwks.fetches == 3

        clock.advance(120 - 72 + 1)  # twice the cache time since the last good fetch
        with pytest.raises(UpstreamUnavailable) as unavailable:
            await verifier.verify(jwks.token("ES256", sub=new_user()))
        assert unavailable.value.code == "jwks_unavailable"
        assert int(unavailable.value.headers["Retry-After"]) >= 1

        jwks.failing = None
        clock.advance(10)
        await verifier.verify(jwks.token("RS256", sub=new_user()))
        assert jwks.fetches == 5


# --- JWKS outages, on the real stack (Granian in its own process) so requests really are concurrent


def jwks_api(test_env: dict[str, str], jwks: JWKSServer, log: Path, **env: str) -> ApiServer:
    server = ApiServer(test_env | {"SUPABASE_URL": jwks.base_url, **env}, log_path=log)
    server.start()
    return server


async def burst(url: str, jwks: JWKSServer, n: int = 10) -> tuple[list[httpx.Response], float]:
    """``n`` concurrent requests, each with a token the service has not seen; and how long they took."""
    algs = itertools.cycle(["ES256", "RS256"])
    heads = [tokens.token_headers(jwks.token(next(algs), sub=new_user())) for _ in range(n)]
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        started = time.monotonic()
        responses = await asyncio.gather(*(http.get(ME, headers=h) for h in heads))
        return list(responses), time.monotonic() - started


def assert_jwks_unavailable(response: httpx.Response) -> None:
    assert_problem(response, 503, "jwks_unavailable")
    assert int(response.headers["retry-after"]) >= 1


async def test_jwks_outage_without_keys_is_one_fetch_and_503(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    """No key was ever fetched and the JWKS fails slowly: ten new tokens wait for one fetch, not ten in a
    row, and the answer is upstream trouble (503 with Retry-After), not a bad token; later it recovers."""
    with JWKSServer() as jwks:
        jwks.failing, jwks.delay = 503, 0.5
        server = jwks_api(test_env, jwks, tmp_path / "api.log", JWKS_RETRY_SECONDS="1")
        try:
            responses, took = await burst(server.url, jwks)
            for response in responses:
                assert_jwks_unavailable(response)
            assert jwks.fetches == 1
            assert took < 2.5  # ten fetches in a row would take 5 s
            responses, _ = await burst(server.url, jwks, n=3)  # backing off: answered at once
            for response in responses:
                assert_jwks_unavailable(response)
            assert jwks.fetches == 1

            jwks.failing, jwks.delay = None, 0.0  # the JWKS is back: the next try after the back-off works
            await asyncio.sleep(1.1)
            responses, _ = await burst(server.url, jwks, n=4)
            assert [r.status_code for r in responses] == [200] * 4, responses[0].text
            assert jwks.fetches == 2
        finally:
            server.stop()
