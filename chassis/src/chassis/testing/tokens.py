"""A signing authority for tests: an Ed25519 key, its JWKS (as service-user publishes it) and
access tokens signed with it, so a test can call a service that verifies tokens as any user or
admin, or with a token that is wrong in exactly one way."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chassis.auth import GET_JWKS_METHOD, bearer_metadata

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


@asynccontextmanager
async def serving_jwks(
    authority: TokenAuthority, encode_reply: Callable[[list[dict[str, str]]], bytes]
) -> AsyncIterator[str]:
    """A gRPC server answering service-user's GetJwks with `authority`'s key, for services under
    test that fetch keys from USER_SERVICE_ADDR; yields its address. `encode_reply` builds the
    serialised GetJwksResponse from the JWKs (the chassis knows no protos)."""

    async def get_jwks(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return encode_reply(authority.jwks())

    service, method = GET_JWKS_METHOD.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(get_jwks)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


Metadata = tuple[tuple[str, str], ...]


class BearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds a caller's token to every call on a test channel that gives no metadata of its own.

    Given a function, it makes the metadata afresh for each call: a channel that lives for the
    whole session must not send a token minted at its start (it expires after ten minutes, and
    a slow CI run outlives it: a service-order test once failed on `token expired`)."""

    def __init__(self, metadata: Metadata | Callable[[], Metadata]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if not client_call_details.metadata:
            metadata = self._metadata() if callable(self._metadata) else self._metadata
            client_call_details = client_call_details._replace(
                metadata=grpc.aio.Metadata(*metadata)
            )
        return await continuation(client_call_details, request)


class OwnerTokenInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends each call with a token of the user its request's `user_id` names, as the gateway
    does, unless the test gives metadata of its own (a malformed id gets some valid user's)."""

    def __init__(self, authority: TokenAuthority) -> None:
        self._authority = authority

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if not client_call_details.metadata:
            try:
                owner: str | None = str(uuid.UUID(request.user_id))
            except ValueError:
                owner = None
            client_call_details = client_call_details._replace(
                metadata=grpc.aio.Metadata(*self._authority.metadata(owner))
            )
        return await continuation(client_call_details, request)
