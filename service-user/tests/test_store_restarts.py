"""service-user across a restart of each of its stores: once the server answers again, no call
fails. The restarts are proxies' in front of the shared servers (which are never restarted):
every pooled connection dropped, new ones refused for a second, then accepted again by a server
that knows none of the old connections."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest

from chassis.auth import client_metadata
from chassis.redis_client import create_redis
from chassis.testing.proxy import TcpProxy
from ecommerce.user.v1 import user_pb2

from .conftest import PASSWORD, RunningService

SHOPPERS = 12
AFTER_RESTART = 50


@pytest.fixture
async def postgres_proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.in_front_of(postgres_url) as proxy:
        yield proxy


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.in_front_of(redis_url) as proxy:
        yield proxy


@pytest.fixture
async def behind_proxies(
    make_settings: Callable[..., Any],
    start_service: Callable[..., Any],
    postgres_url: str,
    redis_url: str,
    postgres_proxy: TcpProxy,
    redis_proxy: TcpProxy,
) -> AsyncIterator[RunningService]:
    """A service-user of its own reaching PostgreSQL and Redis through the proxies; its hashing
    queue holds a whole burst (the point here is the stores, not the overload guard)."""
    settings = make_settings(
        POSTGRES_URL=postgres_proxy.url(postgres_url),
        REDIS_URL=redis_proxy.url(redis_url),
        ARGON2_MAX_QUEUED=500,
        REDIS_TIMEOUT_SECONDS=2,
    )
    async with start_service(settings) as running:
        yield running


async def until_answering(connect: Callable[[], Awaitable[None]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await connect()
            return
        except Exception:
            assert time.monotonic() < deadline, "the server never answered again"
            await asyncio.sleep(0.05)


async def redis_answers(url: str) -> None:
    async def ping() -> None:
        client = create_redis(url, timeout_seconds=0.5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    await until_answering(ping)


async def postgres_answers(url: str) -> None:
    async def connect() -> None:
        connection = await asyncpg.connect(url, timeout=1)
        await connection.close()

    await until_answering(connect)


class Accounts:
    """Shoppers with accounts, and every UserService call they make."""

    def __init__(self, service: RunningService) -> None:
        self.stub = service.stub
        self.emails = [f"restart-{uuid.uuid4().hex[:12]}@example.com" for _ in range(SHOPPERS)]
        self.tokens: dict[str, tuple[str, str]] = {}

    async def register_all(self) -> None:
        for email in self.emails:
            user = (await self.register(email)).user
            login = await self.login(email, PASSWORD, client=email)
            self.tokens[email] = (user.id, login.access_token)

    def register(self, email: str) -> Awaitable[Any]:
        return self.stub.Register(
            user_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Restart"),
            timeout=10,
        )

    def login(self, email: str, password: str, *, client: str) -> Any:
        return self.stub.Login(
            user_pb2.LoginRequest(email=email, password=password),
            metadata=client_metadata(client),
            timeout=10,
        )

    def get(self, email: str) -> Awaitable[Any]:
        user_id, token = self.tokens[email]
        return self.stub.GetUser(
            user_pb2.GetUserRequest(id=user_id),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )

    async def every_call_at_once(self) -> list[BaseException]:
        """AFTER_RESTART rounds of every call (a wrong password must answer UNAUTHENTICATED);
        the calls that failed otherwise."""
        calls: list[Awaitable[Any]] = []
        for index in range(AFTER_RESTART):
            email = self.emails[index % SHOPPERS]
            # A client of its own per login: the per-pair throttle is not what is tried here.
            calls += [
                self.login(email, PASSWORD, client=f"ok-{index}"),
                self.get(email),
                self.register(f"restart-new-{uuid.uuid4().hex[:12]}@example.com"),
            ]
        wrong = [
            self.login(self.emails[i % SHOPPERS], "not the password", client=f"bad-{i}")
            for i in range(10)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        refusals = await asyncio.gather(*wrong, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for refusal in refusals:
            unauthenticated = (
                isinstance(refusal, grpc.aio.AioRpcError)
                and refusal.code() == grpc.StatusCode.UNAUTHENTICATED
            )
            if not unauthenticated:
                failures.append(
                    refusal
                    if isinstance(refusal, BaseException)
                    else AssertionError("a wrong password was accepted")
                )
        return failures


@pytest.mark.slow
@pytest.mark.parametrize("store", ["redis", "postgres"])
async def test_once_a_restarted_store_answers_again_no_user_call_fails(
    behind_proxies: RunningService,
    postgres_proxy: TcpProxy,
    redis_proxy: TcpProxy,
    postgres_url: str,
    redis_url: str,
    user_db: tuple[str, str],
    store: str,
) -> None:
    accounts = Accounts(behind_proxies)
    await accounts.register_all()
    # Warm every pool: logins and reads at once.
    warmed = await asyncio.gather(
        *(accounts.login(e, PASSWORD, client=f"warm-{e}") for e in accounts.emails),
        *(accounts.get(e) for e in accounts.emails),
    )
    assert len(warmed) == 2 * SHOPPERS
    proxy = redis_proxy if store == "redis" else postgres_proxy
    assert proxy.connections >= 2, "the pool was not warmed by concurrent requests"

    await proxy.restart(down_for=1.0)
    if store == "redis":
        await redis_answers(redis_proxy.url(redis_url))
    else:
        database = user_db[0]
        await postgres_answers(f"{postgres_proxy.url(postgres_url)}/{database}")

    assert await accounts.every_call_at_once() == []
