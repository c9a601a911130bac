"""A signing authority for tests: an Ed25519 key, its JWKS (as service-user publishes it) and
access tokens signed with it, so a test can call a service that verifies tokens as any user or
admin, or with a token that is wrong in exactly one way."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chassis.auth import bearer_metadata

ISSUER = "ecommerce-user-service"
AUDIENCE = "ecommerce-api"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenAuthority:
    """Signs tokens the way service-user does (EdDSA, `kid` = RFC 7638 thumbprint)."""

    def __init__(self, *, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.private_key = Ed25519PrivateKey.generate()
        self.issuer = issuer
        self.audience = audience
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.x = _b64url(raw)
        thumbprint = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self.x}, separators=(",", ":"), sort_keys=True
        )
        self.kid = _b64url(hashlib.sha256(thumbprint.encode()).digest())

    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def jwks(self) -> list[dict[str, str]]:
        return [
            {
                "kid": self.kid,
                "kty": "OKP",
                "alg": "EdDSA",
                "use": "sig",
                "crv": "Ed25519",
                "x": self.x,
            }
        ]

    async def fetch_jwks(self) -> Sequence[Mapping[str, str]]:
        """A `chassis.auth.JwksFetcher` serving this authority's key."""
        return self.jwks()

    def token(
        self,
        user_id: str | None = None,
        *,
        role: str = "customer",
        ttl_seconds: int = 600,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "sub": user_id or str(uuid.uuid4()),
            "role": role,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(body, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})

    def metadata(
        self, user_id: str | None = None, *, role: str = "customer"
    ) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying a fresh token for `user_id` with `role`."""
        return bearer_metadata(self.token(user_id, role=role))
