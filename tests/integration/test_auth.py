"""Auth over HTTP: the API key on every /api/v1 route, and Supabase JWTs (HS256 and JWKS) with the attacks."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from litestar.testing import AsyncTestClient

from tests.conftest import make_settings
from tests.support import tokens
from tests.support.tokens import JWKSServer
from xenios_ai.api.app import create_app

ME = "/api/v1/me"


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
    import hashlib
    import hmac

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
    assert token not in response.text  # the token is never echoed


async def test_expired_token_says_so(jwks_client: AsyncTestClient[Any], jwks: JWKSServer) -> None:
    response = await jwks_client.get(ME, headers=tokens.token_headers(jwks.token("ES256", exp=1_600_000_000)))
    assert_problem(response, 401, "token_expired")


async def test_asymmetric_tokens_rejected_when_no_jwks_is_configured(
    client: AsyncTestClient[Any], jwks: JWKSServer
) -> None:
    assert_problem(
        await client.get(ME, headers=tokens.token_headers(jwks.token("ES256"))), 401, "invalid_token"
    )
