"""Authentication: the backend API key and the user's Supabase JWT.

API keys are compared in constant time against every configured key (a comma list allows rotation).
JWTs: HS256 with the legacy Supabase secret, or ES256/RS256 with keys from the project's JWKS, cached for
at most ``jwks_cache_seconds`` and refetched once when a token names an unknown ``kid``. The algorithm
is chosen by what the server is configured for, never by the token alone: ``none`` and algorithm
confusion (an HS256 token "signed" with a public key) are rejected.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import httpx
import jwt
import msgspec
from jwt import PyJWK
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from loguru import logger

from xenios_ai.errors import Unauthorized
from xenios_ai.settings import Settings

_ASYMMETRIC = frozenset({"ES256", "RS256"})
_JWKS_MIN_REFETCH_SECONDS = 10.0
_VERIFIED_CACHE_SIZE = 4096


class Principal(msgspec.Struct, frozen=True):
    """Who a request acts for: the Supabase user id (``sub``) and role."""

    user_id: str
    role: str
    email: str | None = None


class JWTVerifier:
    """Verifies Supabase access tokens. One per process; safe to share between requests."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._secret = settings.supabase_jwt_secret.get() if settings.supabase_jwt_secret else None
        base = settings.supabase_url.rstrip("/") if settings.supabase_url else None
        self._jwks_url = f"{base}/auth/v1/.well-known/jwks.json" if base else None
        self._issuer = f"{base}/auth/v1" if base else None
        self._audience = settings.supabase_jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._cache_seconds = settings.jwks_cache_seconds
        self._http = http
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -1e18
        self._lock = asyncio.Lock()
        # token -> (principal, exp): a token seen before skips the signature check until it expires.
        self._verified: dict[str, tuple[Principal, float]] = {}

    @property
    def configured(self) -> bool:
        return self._secret is not None or self._jwks_url is not None

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is not a valid JWT", code="invalid_token") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self._secret is not None:
            key = self._secret
        elif alg in _ASYMMETRIC and self._jwks_url is not None:
            key = (await self._signing_key(header.get("kid"), alg)).key
        else:
            raise Unauthorized(f"tokens signed with {alg!r} are not accepted", code="invalid_token")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "aud"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", code="token_expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token was rejected: {exc}", code="invalid_token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("the token has no subject", code="invalid_token")
        principal = Principal(
            user_id=sub, role=str(claims.get("role") or "authenticated"), email=claims.get("email")
        )
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    async def _signing_key(self, kid: object, alg: str) -> PyJWK:
        if not isinstance(kid, str):
            raise Unauthorized("the token names no key (kid)", code="invalid_token")
        now = time.monotonic()
        stale = now - self._fetched_at > self._cache_seconds
        if stale or (kid not in self._keys and now - self._fetched_at > _JWKS_MIN_REFETCH_SECONDS):
            await self._refresh(stale_before=now)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("the token's signing key is unknown", code="invalid_token")
        if key.algorithm_name != alg:
            raise Unauthorized("the token's algorithm does not match its key", code="invalid_token")
        return key

    async def _refresh(self, stale_before: float) -> None:
        async with self._lock:
            if self._fetched_at >= stale_before:  # another request refreshed while we waited
                return
            assert self._jwks_url is not None
            try:
                http = self._http or httpx.AsyncClient(timeout=5.0)
                response = await http.get(self._jwks_url, timeout=5.0)
                response.raise_for_status()
                keys: dict[str, PyJWK] = {}
                for data in response.json().get("keys", []):
                    try:
                        jwk = PyJWK.from_dict(data)
                    except jwt.PyJWTError:
                        continue  # a key type we do not use (e.g. an encryption key)
                    if jwk.key_id and jwk.algorithm_name in _ASYMMETRIC:
                        keys[jwk.key_id] = jwk
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("JWKS fetch from {} failed: {}", self._jwks_url, type(exc).__name__)
                if not self._keys:
                    raise Unauthorized("signing keys are unavailable", code="jwks_unavailable") from None
                return
            finally:
                if self._http is None:
                    await http.aclose()
            self._keys = keys
            self._fetched_at = time.monotonic()


def api_key_matches(given: str | None, keys: tuple[str, ...]) -> bool:
    """Constant time in the key's content; every configured key is compared."""
    if not given or not keys:
        return False
    supplied = given.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied, key.encode())
    return matched


async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for every /api/v1 route: the MVP backend's X-API-Key. Async: Litestar runs a sync guard in a
    thread, which cost ~15% of a relayed LLM request's CPU (profiled under load)."""
    keys: tuple[str, ...] = connection.app.state.settings.api_keys
    if not api_key_matches(connection.headers.get("x-api-key"), keys):
        raise Unauthorized("a valid X-API-Key header is required", code="invalid_api_key")


async def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for user-facing routes: a valid Supabase JWT; the principal is kept on the request."""
    scheme, _sep, token = (connection.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a Bearer token (the user's Supabase JWT) is required", code="missing_token")
    verifier: JWTVerifier = connection.app.state.jwt
    if not verifier.configured:
        raise Unauthorized("JWT verification is not configured", code="jwt_not_configured")
    connection.scope["state"]["principal"] = await verifier.verify(token.strip())
