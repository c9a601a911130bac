"""Access-token verification: EdDSA JWTs checked locally against service-user's JWKS.

Keys are cached and refetched on an unknown `kid`, at most once per `min_refetch_seconds`,
so garbage kids cannot hammer service-user. The algorithm is pinned to the key's own `alg`.
A token that verified is remembered until it expires (keyed by the whole token, so any change to
it misses), which spares the signature check that was a fifth of an authenticated request's CPU.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt

from chassis.logging import get_logger
from ecommerce.user.v1 import user_pb2

log = get_logger(__name__)

REQUIRED_CLAIMS = ["exp", "iat", "sub", "role", "iss", "aud", "jti"]
VERIFIED_CACHE_MAX = 10_000
ROLES = frozenset({"customer", "admin"})

JwksFetcher = Callable[[], Awaitable[list[user_pb2.JsonWebKey]]]


class InvalidToken(Exception):
    """The bearer token is missing, malformed, forged or expired (-> 401)."""


class SigningKeysUnavailable(Exception):
    """No verification key could ever be fetched from service-user (-> 503)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the verified token says."""

    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class _VerificationKey:
    key: Any
    algorithm: str


def _key_from_jwk(jwk: user_pb2.JsonWebKey) -> _VerificationKey:
    fields = {
        name: value
        for name in ("kid", "kty", "alg", "use", "crv", "x", "n", "e")
        if (value := getattr(jwk, name))
    }
    parsed = jwt.PyJWK(fields)
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

    async def verify(self, token: str) -> Principal:
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
        principal = _principal(claims)
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
            raise SigningKeysUnavailable("signing keys unavailable")
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
                # (instead of the full interval) so a gateway started before service-user recovers.
                log.warning("jwks_fetch_failed", error_type=type(exc).__name__)
                if self._loaded_at is None:
                    self._last_attempt -= max(self._min_refetch - 1.0, 0.0)
                return
            keys = {}
            for jwk in jwks:
                try:
                    keys[jwk.kid] = _key_from_jwk(jwk)
                except jwt.PyJWTError:
                    log.warning("jwks_key_skipped", kid=jwk.kid, kty=jwk.kty, alg=jwk.alg)
            self._keys = keys
            self._loaded_at = self._clock()
            log.info("jwks_loaded", kids=sorted(keys))


def _principal(claims: dict[str, Any]) -> Principal:
    sub, role = claims.get("sub"), claims.get("role")
    if role not in ROLES:
        raise InvalidToken("invalid role claim")
    try:
        user_id = str(uuid.UUID(str(sub)))
    except ValueError as exc:
        raise InvalidToken("invalid subject claim") from exc
    return Principal(user_id=user_id, role=str(role))
