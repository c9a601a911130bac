"""Access tokens: the Ed25519 signing key (configured, persisted or ephemeral), JWKS, issuing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chassis.logging import get_logger
from user_service.domain import User

ALGORITHM = "EdDSA"
log = get_logger(__name__)


class SigningKeyError(ValueError):
    """The configured private key cannot be used to sign tokens."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class PublicJwk:
    """One public key in RFC 8037 OKP form."""

    kid: str
    x: str
    kty: str = "OKP"
    crv: str = "Ed25519"
    alg: str = ALGORITHM
    use: str = "sig"


def okp_jwk(public_key: Ed25519PublicKey) -> PublicJwk:
    """The JWK of an Ed25519 public key, with its RFC 7638 thumbprint as `kid`."""
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    # RFC 7638: the required members, sorted, without whitespace, hashed with SHA-256.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return PublicJwk(kid=_b64url(hashlib.sha256(canonical.encode("ascii")).digest()), x=x)


def retired_public_keys(pems: str) -> list[PublicJwk]:
    """Parse concatenated Ed25519 public-key PEMs: keys no longer signing but still published."""
    text = pems.replace("\\n", "\n")
    end = "-----END PUBLIC KEY-----"
    blocks = [block + end for block in text.split(end) if block.strip()]
    keys = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block.strip().encode("ascii"))
        except (ValueError, TypeError) as error:
            raise SigningKeyError(f"not a readable PEM public key: {error}") from error
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"expected an Ed25519 public key, got {type(key).__name__}")
        keys.append(okp_jwk(key))
    return keys


class SigningKey:
    """An Ed25519 private key and its RFC 7638 thumbprint, used as the token's `kid`."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._jwk = okp_jwk(private_key.public_key())
        self.kid = self._jwk.kid

    @classmethod
    def from_pem(cls, pem: str) -> SigningKey:
        # Env files often carry a PEM on one line with literal "\n" separators.
        data = pem.replace("\\n", "\n").strip().encode("ascii")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise SigningKeyError(f"not a readable unencrypted PEM private key: {error}") from error
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"expected an Ed25519 key, got {type(key).__name__}")
        return cls(key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def to_pem(self) -> bytes:
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_jwk(self) -> PublicJwk:
        return self._jwk

    def public_pem(self) -> bytes:
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, object]) -> str:
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid})


def load_signing_key(pem: str | None, path: Path | None) -> SigningKey:
    """Key from the PEM value, else from (or, when missing, written to) the file, else ephemeral."""
    if pem:
        return SigningKey.from_pem(pem)
    if path is not None:
        return _load_or_create_key_file(path)
    key = SigningKey.generate()
    log.warning(
        "signing_key_ephemeral",
        kid=key.kid,
        detail="tokens will not survive a restart; set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE",
    )
    return key


def _load_or_create_key_file(path: Path) -> SigningKey:
    if path.exists():
        return SigningKey.from_pem(path.read_text(encoding="ascii"))
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key.to_pem())
    try:
        # link() never overwrites: when replicas start together, one key wins and all use it,
        # and nobody can read a half-written file.
        os.link(temporary, path)
    except FileExistsError:
        return SigningKey.from_pem(path.read_text(encoding="ascii"))
    finally:
        temporary.unlink()
    log.warning("signing_key_generated", path=str(path), kid=key.kid)
    return key


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenIssuer:
    """Issues access tokens for accounts: sub, role, iss, aud, iat, exp and a unique jti."""

    def __init__(
        self,
        key: SigningKey,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        retired_keys: Sequence[PublicJwk] = (),
    ) -> None:
        self.key = key
        # Published until the tokens they signed have expired, so a key rotation logs nobody out.
        self._retired = [jwk for jwk in retired_keys if jwk.kid != key.kid]
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds

    def issue(self, user: User, *, now: datetime | None = None) -> IssuedToken:
        issued_at = now or datetime.now(UTC)
        claims: dict[str, object] = {
            "sub": str(user.id),
            "role": user.role.value,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": issued_at,
            "exp": issued_at + timedelta(seconds=self._ttl),
            "jti": str(uuid.uuid4()),
        }
        return IssuedToken(access_token=self.key.sign(claims), expires_in=self._ttl)

    def jwks(self) -> list[PublicJwk]:
        return [self.key.public_jwk(), *self._retired]
