"""Fixtures: service-user running in-process on a real socket against an isolated database and
Redis key prefix (from the chassis test plugin), with argon2 costs kept low so the suite is fast."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chassis.grpc_server import ServiceRuntime
from chassis.testing.tokens import TokenAuthority
from ecommerce.user.v1 import user_pb2, user_pb2_grpc
from user_service.main import build_runtime
from user_service.settings import UserSettings

LOW_ARGON2 = {"ARGON2_TIME_COST": 1, "ARGON2_MEMORY_COST_KIB": 64, "ARGON2_PARALLELISM": 1}
PASSWORD = "correct horse battery"
# Generous: a loaded CI machine can take many seconds to import Alembic and migrate.
STARTUP_TIMEOUT_S = 60


@dataclass
class RunningService:
    runtime: ServiceRuntime
    channel: grpc.aio.Channel
    stub: user_pb2_grpc.UserServiceStub
    settings: UserSettings


SettingsFactory = Callable[..., UserSettings]


@pytest.fixture(scope="session")
async def user_db(create_database: Any) -> tuple[str, str]:
    """(database name, URL) of this run's users database, dropped at the end of the session."""
    url = await create_database("users")
    return urlsplit(url).path.lstrip("/"), url


@pytest.fixture(scope="session")
def authority() -> TokenAuthority:
    """Holds the key the service signs with, so tests can mint tokens for any user or admin."""
    return TokenAuthority()


@pytest.fixture(scope="session")
def signing_key_pem(authority: TokenAuthority) -> str:
    return authority.private_pem()


@pytest.fixture(scope="session")
def make_settings(
    postgres_url: str,
    user_db: tuple[str, str],
    redis_url: str,
    redis_key_prefix: str,
    signing_key_pem: str,
) -> SettingsFactory:
    def make(**overrides: Any) -> UserSettings:
        values: dict[str, Any] = {
            "USER_GRPC_PORT": 0,
            "USER_METRICS_PORT": 0,
            "GRPC_HOST": "127.0.0.1",
            "POSTGRES_URL": postgres_url,
            "USER_DB_NAME": user_db[0],
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": redis_key_prefix,
            "JWT_PRIVATE_KEY": signing_key_pem,
            "READINESS_INTERVAL_SECONDS": 0.2,
            "SHUTDOWN_GRACE_SECONDS": 1,
            # Every test calls from 127.0.0.1; the per-client limits have tests of their own.
            "LOGIN_RATE_PER_CLIENT": 100_000,
            "REGISTER_RATE_PER_CLIENT": 100_000,
            **LOW_ARGON2,
        }
        values.update(overrides)
        return UserSettings(**values)

    return make


async def wait_until_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        while True:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(
    settings: UserSettings, *, wait_for_serving: bool = True
) -> AsyncIterator[RunningService]:
    """Run service-user in this event loop until the block exits, then stop it gracefully."""
    runtime = await build_runtime(settings)
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            await runtime.started.wait()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.bound_port}") as channel:
            if wait_for_serving:
                await wait_until_serving(channel)
            yield RunningService(runtime, channel, user_pb2_grpc.UserServiceStub(channel), settings)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, STARTUP_TIMEOUT_S)


@pytest.fixture(scope="session")
async def service(make_settings: SettingsFactory) -> AsyncIterator[RunningService]:
    async with running(make_settings()) as running_service:
        yield running_service


@pytest.fixture(scope="session")
def stub(service: RunningService) -> user_pb2_grpc.UserServiceStub:
    return service.stub


@pytest.fixture
async def users_table(
    user_db: tuple[str, str], service: RunningService
) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the migrated database, to check what was really stored."""
    connection = await asyncpg.connect(user_db[1])
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def start_service() -> Callable[..., contextlib.AbstractAsyncContextManager[RunningService]]:
    """Start another instance (other settings) next to the shared one: `async with start(...)`."""
    return running


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def email() -> str:
    """A fresh address per test, so tests never share accounts or throttle counters."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
async def registered(stub: user_pb2_grpc.UserServiceStub, email: str) -> user_pb2.User:
    """An account registered with `email` and `password`."""
    reply = await stub.Register(
        user_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Ada Lovelace"),
        timeout=10,
    )
    return reply.user
