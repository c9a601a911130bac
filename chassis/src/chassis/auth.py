"""Who is calling: EdDSA access tokens verified against service-user's JWKS, for the gateway and
for every service that acts for a user or an admin (zero trust: an identity merely told is not
believed; the caller's token travels as `authorization: Bearer <jwt>` gRPC metadata).

Keys are cached and refetched on an unknown `kid` at most once per `min_refetch_seconds`, so
forged kids cannot hammer service-user. The algorithm is pinned to the key's own `alg`. A token
longer than MAX_TOKEN_CHARS is refused before any decoding. A token that verified is remembered
until it expires, and only while its key is still in a fresh key set.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from chassis.errors import Unauthenticated, Unavailable
from chassis.grpc_client import create_channel
from chassis.logging import get_logger
from chassis.settings import TokenVerificationSettings

log = get_logger(__name__)

REQUIRED_CLAIMS = ["exp", "iat", "sub", "role", "iss", "aud", "jti"]
ROLES = frozenset({"customer", "admin"})
VERIFIED_CACHE_MAX = 10_000
# Tokens service-user issues are about 400 characters; anything this long is not one of them,
# and decoding megabytes of base64 on an event loop is how a single request stalls a process.
MAX_TOKEN_CHARS = 8192
AUTHORIZATION_KEY = "authorization"
# The caller's network address as the gateway saw it: a throttling key only, believed because the
# ports that read it are internal (never published), not an identity.
CLIENT_ADDRESS_KEY = "x-client-address"
_JWK_FIELDS = ("kid", "kty", "alg", "use", "crv", "x", "n", "e")
# service-user's public key set; named here (not imported) because the chassis knows no protos.
GET_JWKS_METHOD = "/ecommerce.user.v1.UserService/GetJwks"

JwksFetcher = Callable[[], Awaitable[Sequence[Mapping[str, str]]]]


class InvalidToken(Unauthenticated):
    """The bearer token is missing, malformed, forged, too long or expired (-> 401)."""


class SigningKeysUnavailable(Unavailable):
    """No verification key could ever be fetched from service-user (-> 503)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the verified token says; `token` is forwarded on calls made for them."""

    user_id: str
    role: str
    token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def jwk_mapping(jwk: Any) -> dict[str, str]:
    """The JWK fields of any object that carries them as attributes (e.g. a protobuf JsonWebKey)."""
    return {name: str(value) for name in _JWK_FIELDS if (value := getattr(jwk, name, ""))}


def user_service_jwks(
    settings: TokenVerificationSettings, parse_reply: Callable[[bytes], Any]
) -> tuple[JwksFetcher, grpc.aio.Channel]:
    """A fetcher of service-user's JWKS at USER_SERVICE_ADDR (each call bounded by
    JWKS_TIMEOUT_SECONDS, retried on UNAVAILABLE), and its channel to close at shutdown.

    `parse_reply` is `ecommerce.user.v1.user_pb2.GetJwksResponse.FromString`.
    """
    channel = create_channel(
        settings.user_service_addr,
        default_timeout=settings.jwks_timeout_seconds,
        idempotent_methods=[GET_JWKS_METHOD],
    )
    # An empty GetJwksRequest serialises to no bytes.
    get_jwks = channel.unary_unary(GET_JWKS_METHOD, response_deserializer=parse_reply)

    async def fetch() -> list[dict[str, str]]:
        reply = await get_jwks(b"", timeout=settings.jwks_timeout_seconds)
        return [jwk_mapping(key) for key in reply.keys]

    return fetch, channel


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata forwarding the caller's token to the next service."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def client_metadata(address: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata telling service-user which client a login or register came from."""
    return ((CLIENT_ADDRESS_KEY, address),)


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def client_address(context: grpc.aio.ServicerContext) -> str:
    """The client a request came from: the gateway's `x-client-address`, else the gRPC peer's
    host (a caller on an internal port without the header is keyed by its own address)."""
    told = _metadata_value(context, CLIENT_ADDRESS_KEY)
    if told:
        return told[:128]
    peer = context.peer() or "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


async def authenticate(context: grpc.aio.ServicerContext, verifier: TokenVerifier) -> Principal:
    """The verified caller of this RPC, from its `authorization: Bearer <jwt>` metadata.

    Raises InvalidToken (UNAUTHENTICATED) when the token is missing or not valid, and
    SigningKeysUnavailable (UNAVAILABLE) when no key could be had to check it.
    """
    header = _metadata_value(context, AUTHORIZATION_KEY)
    if header is None:
        raise InvalidToken("missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("authorization metadata must be 'Bearer <token>'")
    return await verifier.verify(token.strip())


@dataclass(frozen=True, slots=True)
class _VerificationKey:
    key: Any
    algorithm: str


def _key_from_jwk(jwk: Mapping[str, str]) -> _VerificationKey:
    parsed = jwt.PyJWK({name: value for name, value in jwk.items() if name in _JWK_FIELDS})
    return _VerificationKey(key=parsed.key, algorithm=parsed.algorithm_name)


class TokenVerifier:
    """Verifies bearer tokens; one instance per process, shared by every request."""

    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        issuer: str,
        audience: str,
        min_refetch_seconds: float = 10.0,
        max_age_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._min_refetch = min_refetch_seconds
        self._max_age = max_age_seconds
        self._clock = clock
        # token -> (principal, exp in epoch seconds, kid); insertion order yields the oldest.
        self._verified: dict[str, tuple[Principal, float, str]] = {}
        self._keys: dict[str, _VerificationKey] = {}
        self._loaded_at: float | None = None
        self._last_attempt = -float("inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    @classmethod
    def from_settings(
        cls, settings: TokenVerificationSettings, fetch_jwks: JwksFetcher
    ) -> TokenVerifier:
        return cls(
            fetch_jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
            max_age_seconds=settings.jwks_max_age_seconds,
        )

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken(f"token longer than {MAX_TOKEN_CHARS} characters")
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires_at, cached_kid = cached
            if time.time() < expires_at and cached_kid in self._keys and not self._keys_stale():
                return principal
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("malformed token") from exc
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise InvalidToken("token has no usable key id")
        key = await self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("invalid token") from exc
        principal = _principal(claims, token)
        self._remember(token, principal, float(claims["exp"]), kid)
        return principal

    def _remember(self, token: str, principal: Principal, expires_at: float, kid: str) -> None:
        if len(self._verified) >= VERIFIED_CACHE_MAX:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, expires_at, kid)

    def _keys_stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at > self._max_age

    async def _key_for(self, kid: str) -> _VerificationKey:
        now = self._clock()
        if kid in self._keys and not self._keys_stale():
            return self._keys[kid]
        await self._refresh(requested_at=now)
        if kid in self._keys:
            return self._keys[kid]
        if self._loaded_at is None:
            raise SigningKeysUnavailable("token verification keys are unavailable, retry later")
        raise InvalidToken("unknown key id")

    async def _refresh(self, *, requested_at: float) -> None:
        async with self._lock:
            # Another request refreshed while we waited, or the rate limit holds: reuse.
            if self._last_attempt >= requested_at:
                return
            if self._clock() - self._last_attempt < self._min_refetch:
                return
            self._last_attempt = self._clock()
            self.fetch_count += 1
            try:
                jwks = await self._fetch_jwks()
            except Exception as exc:
                # Keep serving the keys we have. With none yet, allow a retry after one second
                # (instead of the full interval) so a process started before service-user recovers.
                log.warning("jwks_fetch_failed", error_type=type(exc).__name__)
                if self._loaded_at is None:
                    self._last_attempt -= max(self._min_refetch - 1.0, 0.0)
                return
            keys = {}
            for jwk in jwks:
                try:
                    keys[jwk["kid"]] = _key_from_jwk(jwk)
                except (jwt.PyJWTError, KeyError):
                    log.warning("jwks_key_skipped", kid=jwk.get("kid"), kty=jwk.get("kty"))
            self._keys = keys
            self._loaded_at = self._clock()
            log.info("jwks_loaded", kids=sorted(keys))


def _principal(claims: dict[str, Any], token: str) -> Principal:
    sub, role = claims.get("sub"), claims.get("role")
    if role not in ROLES:
        raise InvalidToken("invalid role claim")
    try:
        user_id = str(uuid.UUID(str(sub)))
    except ValueError as exc:
        raise InvalidToken("invalid subject claim") from exc
    return Principal(user_id=user_id, role=str(role), token=token)
