"""Register and GetUser over real gRPC: normalised unique emails, field-level validation errors."""

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from chassis.errors import field_of
from chassis.testing.proxy import TcpProxy
from chassis.testing.tokens import TokenAuthority
from ecommerce.user.v1 import user_pb2, user_pb2_grpc


async def test_registered_user_can_log_in_and_be_fetched_with_the_token_it_got(
    stub: user_pb2_grpc.UserServiceStub, email: str, password: str
) -> None:
    registered = await stub.Register(
        user_pb2.RegisterRequest(email=f"  {email.upper()} ", password=password, full_name="Ada"),
        timeout=10,
    )
    user = registered.user
    assert uuid.UUID(user.id)
    assert user.email == email
    assert user.full_name == "Ada"
    assert user.role == user_pb2.ROLE_CUSTOMER
    assert user.created_at.seconds > 0

    login = await stub.Login(user_pb2.LoginRequest(email=email, password=password), timeout=10)
    assert login.token_type == "bearer"
    assert login.access_token.count(".") == 2

    fetched = await stub.GetUser(
        user_pb2.GetUserRequest(id=user.id),
        metadata=(("authorization", f"Bearer {login.access_token}"),),
        timeout=10,
    )
    assert fetched.user == user


async def test_duplicate_email_in_other_case_is_rejected(
    stub: user_pb2_grpc.UserServiceStub, email: str, registered: user_pb2.User
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Register(
            user_pb2.RegisterRequest(
                email=email.upper(), password="another password", full_name="Imposter"
            ),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_registrations_of_one_email_create_one_account(
    stub: user_pb2_grpc.UserServiceStub, email: str, password: str, users_table: asyncpg.Connection
) -> None:
    attempts = [
        stub.Register(
            user_pb2.RegisterRequest(email=variant, password=password, full_name="Racer"),
            timeout=10,
        )
        for variant in (email, email.upper(), email.title(), email, email.upper())
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    created = [r for r in results if isinstance(r, user_pb2.RegisterResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert {error.code() for error in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    assert await users_table.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 1


@pytest.mark.parametrize(
    ("field", "request_fields"),
    [
        ("email", {"email": "not-an-email"}),
        ("email", {"email": ""}),
        ("password", {"password": "short"}),
        ("password", {"password": "p" * 129}),
        ("full_name", {"full_name": ""}),
        ("full_name", {"full_name": "n" * 201}),
        ("full_name", {"full_name": "Ada\x00Lovelace"}),
    ],
)
async def test_each_invalid_field_is_rejected_naming_that_field(
    stub: user_pb2_grpc.UserServiceStub, email: str, field: str, request_fields: dict[str, str]
) -> None:
    valid = {"email": email, "password": "long enough password", "full_name": "Ada"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Register(user_pb2.RegisterRequest(**{**valid, **request_fields}), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == field


async def test_password_is_stored_only_as_an_argon2id_hash(
    stub: user_pb2_grpc.UserServiceStub,
    registered: user_pb2.User,
    password: str,
    users_table: asyncpg.Connection,
) -> None:
    stored = await users_table.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(registered.id)
    )
    assert stored.startswith("$argon2id$")
    assert password not in stored


async def test_unknown_user_id_is_not_found(
    stub: user_pb2_grpc.UserServiceStub, authority: TokenAuthority
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUser(
            user_pb2.GetUserRequest(id=str(uuid.uuid4())),
            metadata=authority.metadata(role="admin"),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("bad_id", ["", "42", "not-a-uuid", "' OR 1=1 --"])
async def test_malformed_user_id_is_an_invalid_argument_on_field_id(
    stub: user_pb2_grpc.UserServiceStub, authority: TokenAuthority, bad_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUser(
            user_pb2.GetUserRequest(id=bad_id), metadata=authority.metadata(), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == "id"


async def get_user_error(
    stub: user_pb2_grpc.UserServiceStub, user_id: str, metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUser(user_pb2.GetUserRequest(id=user_id), metadata=metadata, timeout=10)
    return raised.value.code()


async def test_the_internal_port_gives_no_account_without_a_valid_token(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User
) -> None:
    forged = TokenAuthority().metadata(registered.id)  # right shape, another key
    assert await get_user_error(stub, registered.id, ()) == grpc.StatusCode.UNAUTHENTICATED
    assert await get_user_error(stub, registered.id, forged) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_customer_token_reads_its_own_account_only(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, authority: TokenAuthority
) -> None:
    someone_else = authority.metadata(str(uuid.uuid4()))
    code = await get_user_error(stub, registered.id, someone_else)
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_token_reads_any_account(
    stub: user_pb2_grpc.UserServiceStub, registered: user_pb2.User, authority: TokenAuthority
) -> None:
    reply = await stub.GetUser(
        user_pb2.GetUserRequest(id=registered.id),
        metadata=authority.metadata(role="admin"),
        timeout=10,
    )
    assert reply.user.email == registered.email


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("full_name", "Ada\u202eecilA"),
        ("full_name", "Ada\u200bLovelace"),
        ("full_name", "Ada\x1b[31m"),
        ("email", "ad\u200ba@example.com"),
        ("email", "ada\u2066@example.com"),
    ],
    ids=["name-bidi-override", "name-zero-width", "name-control", "email-zero-width", "email-bidi"],
)
async def test_names_and_emails_that_disguise_themselves_are_invalid(
    stub: user_pb2_grpc.UserServiceStub, password: str, field: str, value: str
) -> None:
    fields = {"email": f"u{uuid.uuid4().hex[:8]}@example.com", "full_name": "Ada", field: value}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Register(user_pb2.RegisterRequest(password=password, **fields), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == field


async def test_an_unreachable_database_is_unavailable_not_an_internal_error(
    make_settings: Any, start_service: Any, authority: TokenAuthority, postgres_url: str
) -> None:
    """The account database going away answers UNAVAILABLE (retryable), never INTERNAL."""
    target = urlsplit(postgres_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        userinfo = target.netloc.rsplit("@", 1)[0] + "@" if "@" in target.netloc else ""
        proxied = urlunsplit(target._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}"))
        settings = make_settings(POSTGRES_URL=proxied)
        async with start_service(settings) as running:
            await proxy.cut()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await running.stub.GetUser(
                    user_pb2.GetUserRequest(id=str(uuid.uuid4())),
                    metadata=authority.metadata(role="admin"),
                    timeout=20,
                )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_logins_refused_during_a_database_outage_do_not_lock_out_the_owner(
    make_settings: Any, start_service: Any, postgres_url: str
) -> None:
    """Ten logins answered UNAVAILABLE while the database is away reached no verdict on the
    password: once it is back, the owner logs in (five counted failures would lock the pair)."""
    target = urlsplit(postgres_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        userinfo = target.netloc.rsplit("@", 1)[0] + "@" if "@" in target.netloc else ""
        proxied = urlunsplit(target._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}"))
        async with start_service(make_settings(POSTGRES_URL=proxied)) as running:
            email, password = f"owner-{uuid.uuid4().hex[:8]}@example.com", "owner password 1"
            await running.stub.Register(
                user_pb2.RegisterRequest(email=email, password=password, full_name="Owner"),
                timeout=10,
            )
            request = user_pb2.LoginRequest(email=email, password=password)
            await proxy.cut()
            for _ in range(10):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await running.stub.Login(request, timeout=20)
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            await proxy.restore()
            reply = await running.stub.Login(request, timeout=20)
    assert reply.access_token
