"""Admin bootstrap from ADMIN_EMAIL / ADMIN_PASSWORD: created once, whatever restarts and races."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import jwt
import pytest

from ecommerce.user.v1 import user_pb2, user_pb2_grpc
from user_service import handlers
from user_service.passwords import PasswordHashing
from user_service.store import UserStore

ADMIN_PASSWORD = "admin password 123"


@pytest.fixture
async def store(
    user_db: tuple[str, str], users_table: asyncpg.Connection
) -> AsyncIterator[UserStore]:
    pool = await asyncpg.create_pool(user_db[1], min_size=0, max_size=5)
    try:
        yield UserStore(pool)
    finally:
        await pool.close()


@pytest.fixture
def hashing() -> PasswordHashing:
    return PasswordHashing(time_cost=1, memory_cost_kib=64, parallelism=1)


@pytest.fixture
def admin_email() -> str:
    return f"admin-{uuid.uuid4().hex[:10]}@example.com"


async def role_in_token(stub: user_pb2_grpc.UserServiceStub, email: str, password: str) -> str:
    reply = await stub.Login(user_pb2.LoginRequest(email=email, password=password), timeout=10)
    claims = jwt.decode(reply.access_token, options={"verify_signature": False})
    return str(claims["role"])


async def test_service_started_with_admin_settings_creates_an_admin_who_can_log_in(
    make_settings: Callable[..., Any], start_service: Callable[..., Any], admin_email: str
) -> None:
    settings = make_settings(ADMIN_EMAIL=admin_email.upper(), ADMIN_PASSWORD=ADMIN_PASSWORD)
    async with start_service(settings) as service:
        assert await role_in_token(service.stub, admin_email, ADMIN_PASSWORD) == "admin"


@pytest.mark.parametrize("weak_password", ["change-me-admin", "Change-Me-Please", "short pw 1"])
async def test_no_admin_is_created_with_a_default_or_short_password_and_one_line_says_why(
    make_settings: Callable[..., Any],
    start_service: Callable[..., Any],
    admin_email: str,
    users_table: asyncpg.Connection,
    capsys: pytest.CaptureFixture[str],
    weak_password: str,
) -> None:
    settings = make_settings(ADMIN_EMAIL=admin_email, ADMIN_PASSWORD=weak_password)
    async with start_service(settings):
        pass
    count = await users_table.fetchval("SELECT count(*) FROM users WHERE email = $1", admin_email)
    assert count == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "ADMIN_PASSWORD" in line]
    assert len(said) == 1
    assert "no admin account was created" in said[0]
    assert weak_password not in said[0]


async def test_two_replicas_starting_together_create_one_admin_and_both_serve(
    make_settings: Callable[..., Any],
    start_service: Callable[..., Any],
    admin_email: str,
    users_table: asyncpg.Connection,
) -> None:
    settings = make_settings(ADMIN_EMAIL=admin_email, ADMIN_PASSWORD=ADMIN_PASSWORD)
    async with contextlib.AsyncExitStack() as stack:
        first, second = await asyncio.gather(
            stack.enter_async_context(start_service(settings)),
            stack.enter_async_context(start_service(settings)),
        )
        for replica in (first, second):
            assert await role_in_token(replica.stub, admin_email, ADMIN_PASSWORD) == "admin"
    count = await users_table.fetchval("SELECT count(*) FROM users WHERE email = $1", admin_email)
    assert count == 1


async def test_bootstrap_run_repeatedly_and_concurrently_keeps_one_unchanged_admin(
    store: UserStore, hashing: PasswordHashing, admin_email: str, users_table: asyncpg.Connection
) -> None:
    async def bootstrap() -> None:
        await handlers.bootstrap_admin(store, hashing, email=admin_email, password=ADMIN_PASSWORD)

    await asyncio.gather(*(bootstrap() for _ in range(5)))
    first = await users_table.fetchrow("SELECT * FROM users WHERE email = $1", admin_email)
    await bootstrap()
    rows = await users_table.fetch("SELECT * FROM users WHERE email = $1", admin_email)
    assert rows == [first]
    assert first["role"] == "admin"


async def test_existing_customer_with_the_admin_email_is_not_promoted(
    store: UserStore,
    hashing: PasswordHashing,
    admin_email: str,
    stub: user_pb2_grpc.UserServiceStub,
) -> None:
    await stub.Register(
        user_pb2.RegisterRequest(email=admin_email, password="squatter pass", full_name="Sq"),
        timeout=10,
    )
    await handlers.bootstrap_admin(store, hashing, email=admin_email, password=ADMIN_PASSWORD)
    assert await role_in_token(stub, admin_email, "squatter pass") == "customer"
