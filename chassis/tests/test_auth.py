"""chassis.auth: the token verifier every service and the gateway share, and `authenticate` reading
the caller's token from real gRPC metadata."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence

import grpc
import pytest

from chassis.auth import (
    MAX_TOKEN_CHARS,
    InvalidToken,
    SigningKeysUnavailable,
    TokenVerifier,
    authenticate,
    bearer_metadata,
    client_address,
    client_metadata,
)
from chassis.rpc_observer import RpcObserver
from chassis.testing.tokens import AUDIENCE, ISSUER, BearerInterceptor, TokenAuthority


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority()


def verifier_for(authority: TokenAuthority, **options: float) -> TokenVerifier:
    return TokenVerifier(authority.fetch_jwks, issuer=ISSUER, audience=AUDIENCE, **options)  # type: ignore[arg-type]


async def test_a_valid_token_names_its_user_role_and_carries_itself(
    authority: TokenAuthority,
) -> None:
    token = authority.token("0b8f6a0e-4c1a-4a55-9d43-2a3f0c5e7d11", role="admin")
    principal = await verifier_for(authority).verify(token)
    assert principal.user_id == "0b8f6a0e-4c1a-4a55-9d43-2a3f0c5e7d11"
    assert principal.is_admin
    assert principal.token == token


async def test_a_token_over_the_length_bound_is_refused_before_any_decoding(
    authority: TokenAuthority,
) -> None:
    fetched = 0

    async def fetch() -> Sequence[Mapping[str, str]]:
        nonlocal fetched
        fetched += 1
        return authority.jwks()

    verifier = TokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
    header = authority.token().split(".")[0]
    huge = f"{header}.{'A' * MAX_TOKEN_CHARS}.AAAA"
    with pytest.raises(InvalidToken, match="longer than"):
        await verifier.verify(huge)
    assert fetched == 0  # not even the key set was looked at


@pytest.mark.slow
async def test_a_verified_token_is_rejected_once_its_expiry_passes(
    authority: TokenAuthority,
) -> None:
    verifier = verifier_for(authority)
    token = authority.token(ttl_seconds=2)
    first = await verifier.verify(token)
    assert await verifier.verify(token) == first  # served from memory
    await asyncio.sleep(3.1)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_a_remembered_token_stops_working_when_its_key_is_withdrawn(
    authority: TokenAuthority,
) -> None:
    monotonic = Clock()
    jwks = authority.jwks()

    async def fetch() -> Sequence[Mapping[str, str]]:
        return list(jwks)

    verifier = TokenVerifier(
        fetch, issuer=ISSUER, audience=AUDIENCE, min_refetch_seconds=0, clock=monotonic
    )
    token = authority.token()
    await verifier.verify(token)
    jwks.clear()  # service-user no longer publishes the key
    monotonic.now += 301  # the key set is due for a refetch
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


async def test_a_tampered_copy_of_a_remembered_token_is_still_rejected(
    authority: TokenAuthority,
) -> None:
    verifier = verifier_for(authority)
    token = authority.token()
    await verifier.verify(token)
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidToken):
        await verifier.verify(f"{header}.{payload}.{flipped}")


async def test_keys_that_cannot_be_fetched_are_unavailable_not_unauthenticated(
    authority: TokenAuthority,
) -> None:
    async def fetch() -> Sequence[Mapping[str, str]]:
        raise ConnectionError("service-user is down")

    verifier = TokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(SigningKeysUnavailable):
        await verifier.verify(authority.token())


@pytest.fixture
async def whoami(authority: TokenAuthority) -> AsyncIterator[grpc.aio.Channel]:
    """A real gRPC server whose one method answers `<user id> <role> <client address>`."""
    verifier = verifier_for(authority)

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        principal = await authenticate(context, verifier)
        return f"{principal.user_id} {principal.role} {client_address(context)}".encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Identity", {"WhoAmI": grpc.unary_unary_rpc_method_handler(who)}
    )
    server = grpc.aio.server(interceptors=[RpcObserver("test")])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


async def call_whoami(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    reply: bytes = await channel.unary_unary("/test.Identity/WhoAmI")(
        b"", metadata=metadata, timeout=5
    )
    return reply.decode()


async def test_authenticate_reads_the_forwarded_bearer_token_and_client_address(
    whoami: grpc.aio.Channel, authority: TokenAuthority
) -> None:
    user_id = "6f1c3c5e-9a0b-4b7e-8c6d-1e2f3a4b5c6d"
    metadata = (*bearer_metadata(authority.token(user_id)), *client_metadata("203.0.113.9"))
    assert await call_whoami(whoami, metadata) == f"{user_id} customer 203.0.113.9"


async def test_without_a_client_address_the_peer_host_is_the_client(
    whoami: grpc.aio.Channel, authority: TokenAuthority
) -> None:
    assert (await call_whoami(whoami, authority.metadata())).endswith(" 127.0.0.1")


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Basic dXNlcjpwYXNz"),), (("authorization", "Bearer not.a.jwt"),)],
    ids=["missing", "not-bearer", "garbage"],
)
async def test_a_call_without_a_valid_token_is_unauthenticated(
    whoami: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_whoami(whoami, metadata)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_signed_by_another_key_is_unauthenticated(whoami: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_whoami(whoami, TokenAuthority().metadata())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_test_channels_bearer_interceptor_mints_a_token_per_call() -> None:
    """A session-long test channel sends a fresh token each call (one minted at the session's
    start expires while a long run is still going)."""
    minted: list[str] = []

    def fresh() -> tuple[tuple[str, str], ...]:
        minted.append(f"token-{len(minted)}")
        return (("authorization", f"Bearer {minted[-1]}"),)

    sent: list[object] = []

    async def continuation(details: grpc.aio.ClientCallDetails, request: object) -> object:
        sent.append(dict(details.metadata or ()).get("authorization"))
        return request

    interceptor = BearerInterceptor(fresh)
    details = grpc.aio.ClientCallDetails("/pkg.Service/Method", None, None, None, None)
    for _ in range(2):
        await interceptor.intercept_unary_unary(continuation, details, object())
    assert sent == ["Bearer token-0", "Bearer token-1"]
