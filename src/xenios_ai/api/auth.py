"""Authentication: the backend API key and the user's Supabase JWT.

API keys are compared in constant time against every configured key (a comma list allows rotation).
JWTs: HS256 with the legacy Supabase secret, or ES256/RS256 with keys from the project's JWKS, cached for
``jwks_cache_seconds`` and refetched (at most every 10 s) when a token names an unknown ``kid``. The
algorithm is chosen by what the server is configured for, never by the token alone: ``none`` and algorithm
confusion (an HS256 token "signed" with a public key) are rejected.

A JWKS outage must not stall every request: one fetch runs at a time, requests that waited for it use its
outcome, and after a failure nothing is fetched for ``jwks_retry_seconds``. Keys already held keep working
meanwhile, up to twice ``jwks_cache_seconds`` after the last successful fetch; past that, or without any
key, requests get 503 ``jwks_unavailable``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import msgspec
from jwt import PyJWK
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from loguru import logger

from xenios_ai.errors import Unauthorized, UpstreamUnavailable
from xenios_ai.keys import key_matches
from xenios_ai.settings import Settings

_ASYMMETRIC = frozenset({"ES256", "RS256"})
_JWKS_MIN_REFETCH_SECONDS = 10.0
_JWKS_TIMEOUT_SECONDS = 5.0
_VERIFIED_CACHE_SIZE = 4096
_CHALLENGE = "Bearer"
_REJECTED = 'Bearer error="invalid_token"'


def _rejected(detail: str, code: str = "invalid_token") -> Unauthorized:
    """A bearer token was given but is not acceptable: 401 with the RFC 6750 challenge."""
    return Unauthorized(detail, code=code, headers={"WWW-Authenticate": _REJECTED})


class Principal(msgspec.Struct, frozen=True):
    """Who a request acts for: the Supabase user id (``sub``) and role."""

    user_id: str
    role: str
    email: str | None = None


class JWTVerifier:
    """Verifies Supabase access tokens. One per process; safe to share between requests.

    ``clock`` (monotonic: JWKS ages and back-off) and ``wall`` (epoch seconds: token expiry in the verified
    cache) are injectable so tests age the caches without sleeping."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._secret = settings.supabase_jwt_secret.get() if settings.supabase_jwt_secret else None
        base = settings.supabase_url.rstrip("/") if settings.supabase_url else None
        self._jwks_url = f"{base}/auth/v1/.well-known/jwks.json" if base else None
        self._issuer = f"{base}/auth/v1" if base else None
        self._audience = settings.supabase_jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._cache_seconds = settings.jwks_cache_seconds
        self._retry_seconds = settings.jwks_retry_seconds
        self._http = http
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -1e18  # last successful JWKS fetch (monotonic)
        self._attempted_at = -1e18  # last JWKS fetch, successful or not (monotonic)
        self._failed = False  # whether that last fetch failed
        self._lock = asyncio.Lock()
        # token -> (principal, until): a token seen before skips the signature check until ``until``, its
        # exp but at most jwks_cache_seconds, so a key withdrawn from the JWKS stops its tokens in time.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def use_http(self, http: httpx.AsyncClient | None) -> None:
        """Fetch the JWKS with this shared client (the app's, opened in its lifespan); None: one per fetch."""
        self._http = http

    @property
    def configured(self) -> bool:
        return self._secret is not None or self._jwks_url is not None

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > self._wall():
            return cached[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _rejected("the bearer token is not a valid JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _rejected("the token's header names no algorithm")
        key: Any
        trusted_for = self._cache_seconds
        if alg == "HS256" and self._secret is not None:
            key = self._secret
        elif alg in _ASYMMETRIC and self._jwks_url is not None:
            jwk, trusted_for = await self._signing_key(header.get("kid"), alg)
            key = jwk.key
        else:
            raise _rejected(f"tokens signed with {alg[:20]!r} are not accepted")
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
            raise _rejected("the token has expired", code="token_expired") from None
        except jwt.PyJWTError as exc:
            raise _rejected(f"the token was rejected: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _rejected("the token has no subject")
        email = claims.get("email")
        principal = Principal(
            user_id=sub,
            role=str(claims.get("role") or "authenticated"),
            email=email if isinstance(email, str) else None,
        )
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, min(float(claims["exp"]), self._wall() + trusted_for))
        return principal

    async def _signing_key(self, kid: object, alg: str) -> tuple[PyJWK, float]:
        """The JWKS key named ``kid`` and for how many more seconds a token it verified may be cached."""
        if not isinstance(kid, str):
            raise _rejected("the token names no key (kid)")
        if self._refresh_due(kid):
            await self._refresh(waiting_since=self._clock())
        trusted_for = self._cache_seconds
        if self._failed:  # keys from before the outage, trusted up to twice the cache time
            trusted_for = min(trusted_for, 2 * self._cache_seconds - (self._clock() - self._fetched_at))
            if trusted_for <= 0 or kid not in self._keys:
                raise self._unavailable()
        key = self._keys.get(kid)
        if key is None:
            raise _rejected("the token's signing key is unknown")
        if key.algorithm_name != alg:
            raise _rejected("the token's algorithm does not match its key")
        return key, trusted_for

    def _refresh_due(self, kid: str) -> bool:
        now = self._clock()
        since_attempt = now - self._attempted_at
        stale = now - self._fetched_at > self._cache_seconds
        if self._failed:  # back off; the keys we hold keep working meanwhile
            return (stale or kid not in self._keys) and since_attempt >= self._retry_seconds
        return stale or (kid not in self._keys and since_attempt >= _JWKS_MIN_REFETCH_SECONDS)

    async def _refresh(self, waiting_since: float) -> None:
        async with self._lock:
            if self._attempted_at >= waiting_since:  # a fetch ended while we waited: use its outcome
                return
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("JWKS fetch from {} failed: {}", self._jwks_url, type(exc).__name__)
                self._attempted_at = self._clock()
                self._failed = True
                return
            self._keys = keys
            self._fetched_at = self._attempted_at = self._clock()
            self._failed = False

    async def _fetch(self) -> dict[str, PyJWK]:
        """The signature keys of the JWKS; ValueError when the document is not a JWKS."""
        assert self._jwks_url is not None
        http = self._http or httpx.AsyncClient()
        try:
            response = await http.get(self._jwks_url, timeout=_JWKS_TIMEOUT_SECONDS)
            response.raise_for_status()
            document = response.json()
        finally:
            if self._http is None:
                await http.aclose()
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("the JWKS document has no key list")
        keys: dict[str, PyJWK] = {}
        for data in entries:
            try:
                jwk = PyJWK.from_dict(data)
            except (jwt.PyJWTError, TypeError, ValueError, AttributeError):
                continue  # a key type we do not use (e.g. an encryption key) or a malformed entry
            if jwk.key_id and jwk.algorithm_name in _ASYMMETRIC:
                keys[jwk.key_id] = jwk
        return keys

    def _unavailable(self) -> UpstreamUnavailable:
        wait = self._retry_seconds - (self._clock() - self._attempted_at)
        return UpstreamUnavailable(
            "the token's signing keys (JWKS) cannot be fetched now",
            code="jwks_unavailable",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def api_key_matches(given: str | None, keys: tuple[str, ...]) -> bool:
    """Constant time in the key's content; every configured key is compared (`keys.key_matches`)."""
    return key_matches(given, keys)


async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for every /api/v1 route: the MVP backend's X-API-Key. Async: Litestar runs a sync guard in a
    thread, which cost ~15% of a relayed LLM request's CPU (profiled under load)."""
    keys: tuple[str, ...] = connection.app.state.settings.api_keys
    if not api_key_matches(connection.headers.get("x-api-key"), keys):
        raise Unauthorized("a valid X-API-Key header is required", code="invalid_api_key")


async def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for user-facing routes: a valid Supabase JWT; the principal is kept on the request."""
    await _verify_bearer(connection)


async def allow_service(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the job reads the MVP's backend makes on its own (a webhook handler fetching a result):
    with an Authorization header, a valid user JWT as in `require_user` (the read is the user's); without
    one, the API key alone (checked by the router's `require_api_key`) reads for any owner, and the
    principal stays unset (`provide_reader` gives None). Why: docs/decisions/0010-mvp-fit.md."""
    if connection.headers.get("authorization") is None:
        connection.scope["state"]["principal"] = None
        return
    await _verify_bearer(connection)


async def _verify_bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    scheme, _sep, token = (connection.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "a Bearer token (the user's Supabase JWT) is required",
            code="missing_token",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    verifier: JWTVerifier = connection.app.state.jwt
    if not verifier.configured:
        raise Unauthorized(
            "JWT verification is not configured",
            code="jwt_not_configured",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    connection.scope["state"]["principal"] = await verifier.verify(token.strip())
