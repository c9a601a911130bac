"""Signing keys and access tokens: kid thumbprint, claims, JWKS verification, key loading."""

import base64
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from user_service.domain import Role, User
from user_service.tokens import (
    SigningKey,
    SigningKeyError,
    TokenIssuer,
    load_signing_key,
    retired_public_keys,
)

# RFC 8037 appendix A.1 (private key) and A.3 (its RFC 7638 thumbprint).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _user(role: Role = Role.CUSTOMER) -> User:
    return User(
        id=uuid.uuid4(),
        email="ada@example.com",
        full_name="Ada",
        role=role,
        password_hash="$argon2id$not-used",
        created_at=datetime.now(UTC),
    )


def test_kid_is_the_rfc7638_thumbprint_of_the_public_key() -> None:
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(_b64decode(RFC8037_D)))
    assert key.kid == RFC8037_THUMBPRINT
    assert key.public_jwk().x == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def test_token_carries_every_claim_and_verifies_with_the_published_jwk() -> None:
    issuer = TokenIssuer(SigningKey.generate(), issuer="iss-x", audience="aud-y", ttl_seconds=600)
    user = _user(Role.ADMIN)
    token = issuer.issue(user)
    (jwk,) = issuer.jwks()
    assert jwt.get_unverified_header(token.access_token) == {
        "alg": "EdDSA",
        "kid": jwk.kid,
        "typ": "JWT",
    }
    public = jwt.PyJWK({"kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "kid": jwk.kid, "alg": jwk.alg})
    claims = jwt.decode(
        token.access_token, public.key, algorithms=["EdDSA"], audience="aud-y", issuer="iss-x"
    )
    assert claims["sub"] == str(user.id)
    assert claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 600
    assert uuid.UUID(claims["jti"])
    assert token.expires_in == 600


def test_each_token_has_its_own_jti() -> None:
    issuer = TokenIssuer(SigningKey.generate(), issuer="i", audience="a", ttl_seconds=60)
    user = _user()
    first, second = issuer.issue(user), issuer.issue(user)
    jtis = {
        jwt.decode(t.access_token, options={"verify_signature": False})["jti"]
        for t in (first, second)
    }
    assert len(jtis) == 2


def test_token_from_another_key_does_not_verify() -> None:
    issuer = TokenIssuer(SigningKey.generate(), issuer="i", audience="a", ttl_seconds=60)
    other = SigningKey.generate().public_jwk()
    public = jwt.PyJWK({"kty": "OKP", "crv": "Ed25519", "x": other.x})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            issuer.issue(_user()).access_token, public.key, algorithms=["EdDSA"], audience="a"
        )


def test_pem_value_is_used_as_is_even_with_escaped_newlines() -> None:
    key = SigningKey.generate()
    one_line = key.to_pem().decode().replace("\n", "\\n")
    assert load_signing_key(one_line, None).kid == key.kid


def test_pem_that_is_not_ed25519_is_refused() -> None:
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(SigningKeyError, match="Ed25519"):
        load_signing_key(rsa_pem, None)
    with pytest.raises(SigningKeyError):
        load_signing_key("not a pem", None)


def test_without_configuration_an_ephemeral_key_is_generated_with_a_warning() -> None:
    with capture_logs() as logs:
        first = load_signing_key(None, None)
    second = load_signing_key(None, None)
    assert first.kid != second.kid
    assert any(
        entry["event"] == "signing_key_ephemeral"
        and entry["kid"] == first.kid
        and entry["log_level"] == "warning"
        for entry in logs
    )


def test_missing_key_file_is_generated_private_and_reused_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "jwt.pem"
    created = load_signing_key(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(None, path).kid == created.kid
    assert [p.name for p in path.parent.iterdir()] == ["jwt.pem"]


def test_existing_key_file_is_loaded(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "jwt.pem"
    path.write_bytes(key.to_pem())
    assert load_signing_key(None, path).kid == key.kid


def test_retired_public_keys_stay_in_the_jwks_so_their_tokens_still_verify() -> None:
    old_key, new_key = SigningKey.generate(), SigningKey.generate()
    old_token = TokenIssuer(old_key, issuer="i", audience="a", ttl_seconds=60).issue(_user())
    retired = retired_public_keys(old_key.public_pem().decode() + new_key.public_pem().decode())
    rotated = TokenIssuer(new_key, issuer="i", audience="a", ttl_seconds=60, retired_keys=retired)
    jwks = {jwk.kid: jwk for jwk in rotated.jwks()}
    assert list(jwks) == [new_key.kid, old_key.kid]
    jwk = jwks[jwt.get_unverified_header(old_token.access_token)["kid"]]
    public = jwt.PyJWK({"kty": "OKP", "crv": "Ed25519", "x": jwk.x}).key
    assert jwt.decode(old_token.access_token, public, algorithms=["EdDSA"], audience="a")


def test_retired_key_that_is_not_an_ed25519_public_key_is_refused() -> None:
    with pytest.raises(SigningKeyError):
        retired_public_keys("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
