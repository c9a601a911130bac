"""The verifier remembers a token that verified, but never past its expiry or its key."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from api_gateway.auth import InvalidToken, TokenVerifier
from ecommerce.user.v1 import user_pb2

ISSUER, AUDIENCE = "ecommerce-user-service", "ecommerce-api"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _jwk(kid: str, key: Ed25519PrivateKey) -> user_pb2.JsonWebKey:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return user_pb2.JsonWebKey(kid=kid, kty="OKP", alg="EdDSA", use="sig", crv="Ed25519", x=x)


def _token(key: Ed25519PrivateKey, kid: str, *, expires_at: float) -> str:
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "customer",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(time.time()),
        "exp": int(expires_at),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


async def test_a_verified_token_is_rejected_once_its_expiry_passes(key: Ed25519PrivateKey) -> None:
    async def fetch() -> list[user_pb2.JsonWebKey]:
        return [_jwk("k1", key)]

    verifier = TokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
    expires_at = int(time.time()) + 2
    token = _token(key, "k1", expires_at=expires_at)
    first = await verifier.verify(token)
    assert await verifier.verify(token) == first  # served from memory
    await asyncio.sleep(expires_at - time.time() + 1.05)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_a_remembered_token_stops_working_when_its_key_is_withdrawn(
    key: Ed25519PrivateKey,
) -> None:
    monotonic = Clock()
    jwks = [_jwk("k1", key)]

    async def fetch() -> list[user_pb2.JsonWebKey]:
        return list(jwks)

    verifier = TokenVerifier(
        fetch,
        issuer=ISSUER,
        audience=AUDIENCE,
        min_refetch_seconds=0,
        max_age_seconds=300,
        clock=monotonic,
    )
    token = _token(key, "k1", expires_at=time.time() + 3600)
    await verifier.verify(token)
    jwks.clear()  # service-user no longer publishes k1
    monotonic.now += 301  # the key set is due for a refetch
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


async def test_a_tampered_copy_of_a_remembered_token_is_still_rejected(
    key: Ed25519PrivateKey,
) -> None:
    async def fetch() -> list[user_pb2.JsonWebKey]:
        return [_jwk("k1", key)]

    verifier = TokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
    token = _token(key, "k1", expires_at=time.time() + 3600)
    await verifier.verify(token)
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidToken):
        await verifier.verify(f"{header}.{payload}.{flipped}")
