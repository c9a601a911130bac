"""The token matrix: every way a bearer token can be wrong is a 401 problem with
`WWW-Authenticate: Bearer`. Tokens are forged with the very Ed25519 key service-user signs with,
so each case differs from an accepted token by exactly one defect."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ME = "/api/v1/users/me"
ISSUER, AUDIENCE = "ecommerce-user-service", "ecommerce-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@pytest.fixture
def claims(customer: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": customer.id,
        "role": "customer",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }


@pytest.fixture
def kid(customer: Any) -> str:
    header = jwt.get_unverified_header(customer.token)
    assert header["alg"] == "EdDSA"
    return str(header["kid"])


async def get_me(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await api.get(ME, headers={"Authorization": f"Bearer {token}"})


def assert_rejected(reply: httpx.Response) -> None:
    assert reply.status_code == 401, reply.text
    assert reply.headers["www-authenticate"] == "Bearer"
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["status"] == 401


async def test_token_forged_with_the_real_key_and_good_claims_is_accepted(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any], customer: Any
) -> None:
    # The control case: proves the rejections below come from their one defect.
    reply = await get_me(api, jwt.encode(claims, signing.private_key, "EdDSA", {"kid": kid}))
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == customer.id


async def test_missing_authorization_header_is_401(api: httpx.AsyncClient) -> None:
    assert_rejected(await api.get(ME))


async def test_non_bearer_scheme_is_401(api: httpx.AsyncClient, customer: Any) -> None:
    assert_rejected(await api.get(ME, headers={"Authorization": f"Basic {customer.token}"}))


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "eyJhbGciOiJFZERTQSJ9..", "x" * 5000])
async def test_malformed_token_is_401(api: httpx.AsyncClient, garbage: str) -> None:
    assert_rejected(await get_me(api, garbage))


async def test_expired_token_is_401(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any]
) -> None:
    claims.update(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    assert_rejected(
        await get_me(api, jwt.encode(claims, signing.private_key, "EdDSA", {"kid": kid}))
    )


async def test_wrong_audience_is_401(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any]
) -> None:
    claims["aud"] = "some-other-api"
    assert_rejected(
        await get_me(api, jwt.encode(claims, signing.private_key, "EdDSA", {"kid": kid}))
    )


async def test_wrong_issuer_is_401(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any]
) -> None:
    claims["iss"] = "evil-issuer"
    assert_rejected(
        await get_me(api, jwt.encode(claims, signing.private_key, "EdDSA", {"kid": kid}))
    )


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "role", "iss", "aud", "jti"])
async def test_token_missing_a_required_claim_is_401(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any], claim: str
) -> None:
    del claims[claim]
    assert_rejected(
        await get_me(api, jwt.encode(claims, signing.private_key, "EdDSA", {"kid": kid}))
    )


async def test_unknown_role_is_401(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any]
) -> None:
    claims["role"] = "superuser"
    assert_rejected(
        await get_me(api, jwt.encode(claims, signing.private_key, "EdDSA", {"kid": kid}))
    )


async def test_alg_none_is_401(api: httpx.AsyncClient, kid: str, claims: dict[str, Any]) -> None:
    token = f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64url_json(claims)}."
    assert_rejected(await get_me(api, token))


async def test_hs256_signed_with_the_public_key_as_secret_is_401(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any]
) -> None:
    # The classic key-confusion attack; PyJWT refuses to build it, so it is assembled by hand.
    public_pem = signing.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64url_json(claims)}"
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert_rejected(await get_me(api, f"{signing_input}.{b64url(signature)}"))


async def test_tampered_payload_is_401(
    api: httpx.AsyncClient, signing: Any, kid: str, claims: dict[str, Any]
) -> None:
    header, _, signature = jwt.encode(claims, signing.private_key, "EdDSA", {"kid": kid}).split(".")
    promoted = b64url_json({**claims, "role": "admin"})
    assert_rejected(await get_me(api, f"{header}.{promoted}.{signature}"))


async def test_tampered_signature_is_401(api: httpx.AsyncClient, customer: Any) -> None:
    header, payload, signature = customer.token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_rejected(await get_me(api, f"{header}.{payload}.{flipped}"))


async def test_token_signed_by_another_key_under_the_real_kid_is_401(
    api: httpx.AsyncClient, kid: str, claims: dict[str, Any]
) -> None:
    stranger = Ed25519PrivateKey.generate()
    assert_rejected(await get_me(api, jwt.encode(claims, stranger, "EdDSA", {"kid": kid})))


async def test_unknown_kids_are_401_and_do_not_hammer_service_user(
    api: httpx.AsyncClient, signing: Any, claims: dict[str, Any], platform: Any
) -> None:
    def jwks_calls() -> int:
        return sum(
            1
            for entry in platform.processes["service-user"].logs()
            if entry.get("event") == "rpc" and "GetJwks" in str(entry.get("method"))
        )

    before = jwks_calls()
    for _ in range(20):
        token = jwt.encode(claims, signing.private_key, "EdDSA", {"kid": uuid.uuid4().hex})
        assert_rejected(await get_me(api, token))
    # The refetch on an unknown kid is rate-limited (one per GATEWAY_JWKS_MIN_REFETCH_SECONDS).
    assert jwks_calls() - before <= 1
    assert jwks_calls() >= 1, "GetJwks calls are not visible in service-user's log"
