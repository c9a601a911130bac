"""Login over real gRPC: tokens that verify with the JWKS, indistinguishable failures, throttling,
rehash on parameter change, and failing closed when Redis is down or silent."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from prometheus_client import REGISTRY

from chassis.auth import client_metadata
from chassis.errors import retry_delay_of
from ecommerce.user.v1 import user_pb2, user_pb2_grpc


async def login(
    stub: user_pb2_grpc.UserServiceStub, email: str, password: str, client: str | None = None
) -> Any:
    metadata = client_metadata(client) if client else ()
    return await stub.Login(
        user_pb2.LoginRequest(email=email, password=password), metadata=metadata, timeout=10
    )


async def login_error(
    stub: user_pb2_grpc.UserServiceStub, email: str, password: str, client: str | None = None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await login(stub, email, password, client)
    return raised.value


def logins_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("user_logins_total", {"outcome": outcome}) or 0.0


async def test_token_claims_verify_with_the_jwks_public_key(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, email: str, password: str
) -> None:
    successes_before = logins_counted("success")
    reply = await login(stub, email.upper(), password)
    assert logins_counted("success") == successes_before + 1
    jwks = await stub.GetJwks(user_pb2.GetJwksRequest(), timeout=10)
    kid = jwt.get_unverified_header(reply.access_token)["kid"]
    (jwk,) = [key for key in jwks.keys if key.kid == kid]
    assert (jwk.kty, jwk.crv, jwk.alg, jwk.use) == ("OKP", "Ed25519", "EdDSA", "sig")
    public_key = jwt.PyJWK({"kty": jwk.kty, "crv": jwk.crv, "x": jwk.x}).key
    claims = jwt.decode(
        reply.access_token,
        public_key,
        algorithms=["EdDSA"],
        audience="ecommerce-api",
        issuer="ecommerce-user-service",
        options={"require": ["sub", "role", "iss", "aud", "exp", "iat", "jti"]},
    )
    assert claims["sub"] == registered.id
    assert claims["role"] == "customer"
    assert claims["exp"] - claims["iat"] == reply.expires_in == 3600


async def test_unknown_email_and_wrong_password_get_the_same_code_and_message(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, email: str
) -> None:
    wrong_password = await login_error(stub, email, "not the password")
    unknown_email = await login_error(stub, f"nobody-{uuid.uuid4().hex}@example.com", "whatever1")
    assert wrong_password.code() == unknown_email.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong_password.details() == unknown_email.details()


async def test_sixth_attempt_after_five_failures_is_refused_even_with_the_right_password(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, email: str, password: str
) -> None:
    throttled_before = logins_counted("throttled")
    for _ in range(5):
        error = await login_error(stub, email, "wrong password")
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    throttled = await login_error(stub, email.upper(), password)
    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert logins_counted("throttled") == throttled_before + 1
    # When to try again, as the standard google.rpc.RetryInfo: the rest of the 15-minute window.
    retry_after = retry_delay_of(throttled)
    assert retry_after is not None
    assert 890 < retry_after <= 900


async def test_the_owner_of_a_throttled_email_still_logs_in_from_another_client(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, email: str, password: str
) -> None:
    attacker, owner = "203.0.113.66", "198.51.100.20"
    for _ in range(5):
        assert (await login_error(stub, email, "guess", attacker)).code().name == "UNAUTHENTICATED"
    refused = await login_error(stub, email, password, attacker)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await login(stub, email, password, owner)).access_token
    # ...and the attacker's lock on its own attempts holds.
    assert (await login_error(stub, email, "guess", attacker)).code().name == "RESOURCE_EXHAUSTED"


async def test_a_burst_of_parallel_guesses_gets_only_five_tries(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, email: str, password: str
) -> None:
    guesses = [login(stub, email, f"guess number {n}") for n in range(12)]
    results = await asyncio.gather(*guesses, return_exceptions=True)
    codes = sorted(error.code().name for error in results if isinstance(error, grpc.RpcError))
    assert codes == ["RESOURCE_EXHAUSTED"] * 7 + ["UNAUTHENTICATED"] * 5
    assert (await login_error(stub, email, password)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_throttling_one_email_leaves_other_accounts_alone(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, email: str, password: str
) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(6):
        await login_error(stub, victim, "guess guess")
    assert (await login(stub, email, password)).access_token


async def test_unknown_emails_are_throttled_too(stub: user_pb2_grpc.UserServiceStub) -> None:
    unknown = f"ghost-{uuid.uuid4().hex[:8]}@example.com"
    codes = [(await login_error(stub, unknown, "guess guess")).code() for _ in range(6)]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


async def test_successful_login_clears_earlier_failures(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, email: str, password: str
) -> None:
    for _ in range(4):
        await login_error(stub, email, "wrong password")
    await login(stub, email, password)
    for _ in range(4):
        error = await login_error(stub, email, "wrong password")
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await login(stub, email, password)).access_token


async def test_login_input_without_email_is_an_invalid_argument(
    stub: user_pb2_grpc.UserServiceStub,
) -> None:
    error = await login_error(stub, "  ", "some password")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_login_rehashes_a_password_hashed_with_other_parameters(
    stub: user_pb2_grpc.UserServiceStub,
    registered: user_pb2.User,
    email: str,
    password: str,
    users_table: asyncpg.Connection,
    make_settings: Callable[..., Any],
    start_service: Callable[..., Any],
) -> None:
    user_id = uuid.UUID(registered.id)
    before = await users_table.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert "m=64,t=1,p=1" in before
    stronger = make_settings(ARGON2_TIME_COST=2, ARGON2_MEMORY_COST_KIB=128)
    async with start_service(stronger) as upgraded:
        await login(upgraded.stub, email, password)
    after = await users_table.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert after != before
    assert "m=128,t=2,p=1" in after
    # The new hash still proves the same password, through the original service too.
    assert (await login(stub, email, password)).access_token


async def test_login_succeeds_when_storing_the_upgraded_hash_fails(
    registered: user_pb2.User,
    email: str,
    password: str,
    users_table: asyncpg.Connection,
    make_settings: Callable[..., Any],
    start_service: Callable[..., Any],
) -> None:
    user_id = uuid.UUID(registered.id)
    before = await users_table.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    # A real database failure on exactly this account's UPDATE, nothing else.
    name = f"refuse_{uuid.uuid4().hex[:12]}"
    await users_table.execute(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = '{user_id}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    try:
        stronger = make_settings(ARGON2_TIME_COST=2, ARGON2_MEMORY_COST_KIB=128)
        async with start_service(stronger) as upgraded:
            reply = await login(upgraded.stub, email, password)
    finally:
        await users_table.execute(f"DROP TRIGGER {name} ON users; DROP FUNCTION {name}();")
    claims = jwt.decode(reply.access_token, options={"verify_signature": False})
    assert claims["sub"] == registered.id
    after = await users_table.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert after == before


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: Redis hung, not down."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("outage", ["refused", "silent"])
async def test_redis_outage_fails_login_closed_with_unavailable(
    stub: user_pb2_grpc.UserServiceStub,
    registered: user_pb2.User,
    email: str,
    password: str,
    make_settings: Callable[..., Any],
    start_service: Callable[..., Any],
    silent_redis: str,
    outage: str,
) -> None:
    redis_url = silent_redis if outage == "silent" else "redis://127.0.0.1:1/0"
    settings = make_settings(REDIS_URL=redis_url, REDIS_TIMEOUT_SECONDS=0.3)
    async with start_service(settings, wait_for_serving=False) as cut_off:
        error = await login_error(cut_off.stub, email, password)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        # Accounts that do not need Redis keep working.
        other = f"other-{uuid.uuid4().hex[:8]}@example.com"
        reply = await cut_off.stub.Register(
            user_pb2.RegisterRequest(email=other, password=password, full_name="Bo"), timeout=10
        )
        assert reply.user.email == other
