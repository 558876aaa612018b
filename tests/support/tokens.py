"""Supabase-like JWTs for tests: HS256 with the test secret, ES256/RS256 served from a local JWKS server."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support.http import LocalServer, QuietHandler

TEST_JWT_SECRET = "test-jwt-secret-with-at-least-32-bytes!!"
API_KEY = "test-api-key-1"
OTHER_API_KEY = "test-api-key-2"


def claims(sub: str = "user-1", *, ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + ttl} | extra


def hs256_token(sub: str = "user-1", *, secret: str = TEST_JWT_SECRET, **extra: Any) -> str:
    return jwt.encode(claims(sub, **extra), secret, algorithm="HS256")


def headers(sub: str = "user-1", **extra: Any) -> dict[str, str]:
    """The headers the MVP backend sends for a user."""
    return token_headers(hs256_token(sub, **extra))


def token_headers(token: str) -> dict[str, str]:
    """The headers the MVP backend sends, with this JWT (or anything in its place)."""
    return {"X-API-Key": API_KEY, "Authorization": f"Bearer {token}"}


class JWKSServer(LocalServer):
    """A real HTTP server publishing /auth/v1/.well-known/jwks.json with an ES256 and an RS256 key."""

    def __init__(self) -> None:
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.fetches = 0
        """Requests for the JWKS, answered or failed."""
        self.counting = threading.Lock()
        self.extra_keys: list[dict[str, Any]] = []
        self.withdrawn: set[str] = set()
        """kids no longer published (a rotated-away key)."""
        self.failing: int | None = None
        """When set, the JWKS request is answered with this status (an outage)."""
        self.delay = 0.0
        """Seconds each JWKS request takes before it is answered."""
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.path != "/auth/v1/.well-known/jwks.json":
                    self.send_error(404)
                    return
                with server.counting:
                    server.fetches += 1
                time.sleep(server.delay)
                if server.failing is not None:
                    self.send_error(server.failing)
                    return
                body = json.dumps({"keys": server.jwks()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/auth/v1"

    def jwks(self) -> list[dict[str, Any]]:
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key())) | {"kid": "ec-1", "alg": "ES256"}
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key())) | {
            "kid": "rsa-1",
            "alg": "RS256",
        }
        keys = [ec_jwk | {"use": "sig"}, rsa_jwk | {"use": "sig"}, *self.extra_keys]
        return [key for key in keys if key.get("kid") not in self.withdrawn]

    def token(self, alg: str = "ES256", sub: str = "user-1", kid: str | None = None, **extra: Any) -> str:
        key = self.ec_key if alg == "ES256" else self.rsa_key
        payload = claims(sub, **({"iss": self.issuer} | extra))
        return jwt.encode(
            payload, key, algorithm=alg, headers={"kid": kid or ("ec-1" if alg == "ES256" else "rsa-1")}
        )
