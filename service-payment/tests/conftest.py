"""Fixtures of the payment tests: the simulated provider as a real process on a real socket, a
JWKS server standing in for service-user, and service-payment itself in-process on a real socket,
against this run's own databases, exchange and queues (chassis test plugin). The tests play the
saga's other participants themselves, publishing order and stock events to service-payment's
exchange and reading the payment events back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import httpx
import pytest

from chassis.messaging import Broker
from chassis.postgres import database_url
from chassis.settings import AmqpSettings
from chassis.testing.events import EventTap
from chassis.testing.plugin import AmqpIsolation, CreateDatabase
from chassis.testing.process import ServiceProcess, free_port
from chassis.testing.tokens import TokenAuthority, serving_jwks
from ecommerce.events.v1 import events_pb2
from ecommerce.payment.v1 import payment_pb2_grpc
from ecommerce.user.v1 import user_pb2
from payment_service.main import PaymentApp, build_app
from payment_service.settings import PaymentSettings

from .support import provider_process, wait_ready, wait_serving

# The key service-payment trusts (served as service-user's GetJwks) and the tests sign with.
AUTHORITY = TokenAuthority()
PAYMENT_EVENTS = (
    events_pb2.PaymentAuthorized,
    events_pb2.PaymentDeclined,
    events_pb2.PaymentVoided,
    events_pb2.PaymentRefunded,
)
# How long `pm_card_slow` waits at the test provider.
SLOW_SECONDS = 1.5


def encode_jwks(keys: list[dict[str, str]]) -> bytes:
    reply = user_pb2.GetJwksResponse(keys=[user_pb2.JsonWebKey(**key) for key in keys])
    return reply.SerializeToString()


@pytest.fixture(scope="session")
async def jwks_address() -> AsyncIterator[str]:
    async with serving_jwks(AUTHORITY, encode_jwks) as address:
        yield address


@dataclass
class Provider:
    """The provider process (restartable on the same port and database) and a client of it."""

    url: str
    env: dict[str, Any]
    process: ServiceProcess
    client: httpx.AsyncClient
    db: asyncpg.Pool

    async def start(self) -> None:
        self.process = provider_process(self.env)
        self.process.start()
        await wait_ready(self.process, self.url)

    async def kill(self) -> None:
        self.process.kill()
        await asyncio.to_thread(self.process.wait, 15)

    async def ledger(self, key: str) -> list[tuple[str, int]]:
        """(kind, amount) of the key's ledger entries, in order."""
        reply = await self.client.get("/v1/ledger", params={"idempotency_key": key})
        assert reply.status_code == 200
        return [(e["kind"], e["amount_cents"]) for e in reply.json()["entries"]]


async def _started_provider(env: dict[str, Any]) -> tuple[ServiceProcess, str, dict[str, Any]]:
    """A provider process on a free port; another port when the one picked was taken meanwhile
    (other test runs share this machine), up to three times."""
    for attempt in range(3):
        port = free_port()
        values = {**env, "PAYMENT_PROVIDER_PORT": port}
        url = f"http://127.0.0.1:{port}"
        process = provider_process(values)
        process.start()
        try:
            await wait_ready(process, url)
        except RuntimeError:
            await asyncio.to_thread(process.stop)
            if attempt == 2:
                raise
            continue
        return process, url, values
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
async def provider(create_database: CreateDatabase, postgres_url: str) -> AsyncIterator[Provider]:
    database = urlsplit(await create_database("payment_provider")).path.lstrip("/")
    process, url, env = await _started_provider(
        {
            "POSTGRES_URL": postgres_url,
            "POSTGRES_POOL_MAX": 3,
            "PAYMENT_PROVIDER_DB_NAME": database,
            "PAYMENT_PROVIDER_SLOW_SECONDS": SLOW_SECONDS,
        }
    )
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            asyncpg.create_pool(database_url(postgres_url, database), min_size=0, max_size=2) as db,
        ):
            handle = Provider(url=url, env=env, process=process, client=client, db=db)
            yield handle
            process = handle.process
    finally:
        await asyncio.to_thread(process.stop)


def payment_settings(**values: Any) -> PaymentSettings:
    """Settings of an in-process service-payment: a free port, no metrics server, quick
    readiness, quick retries and a small pool."""
    defaults: dict[str, Any] = {
        "PAYMENT_GRPC_PORT": 0,
        "PAYMENT_METRICS_PORT": 0,
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": 0.2,
        "SHUTDOWN_GRACE_SECONDS": 1,
        "OTEL_EXPORTER_OTLP_ENDPOINT": None,
        "POSTGRES_POOL_MAX": 4,
        "PAYMENT_RETRY_BASE_SECONDS": 0.05,
        "PAYMENT_RETRY_MAX_SECONDS": 0.3,
        "PAYMENT_WORKER_INTERVAL_SECONDS": 0.1,
        # The relay takes nothing younger than a minute: every event these specs wait for is
        # published by the service at commit (its units of work are given the publisher).
        "OUTBOX_RELAY_GRACE_SECONDS": 60,
    }
    return PaymentSettings(**{**defaults, **values})


@dataclass(frozen=True)
class RunningPayment:
    app: PaymentApp
    address: str


@contextlib.asynccontextmanager
async def running_payment(settings: PaymentSettings) -> AsyncIterator[RunningPayment]:
    """The real composition root serving on a free port until the block ends; yields once its
    health is SERVING (database migrated, broker connected, queue consumed)."""
    app = await build_app(settings)
    serving = asyncio.create_task(app.runtime.run())
    try:
        await asyncio.wait_for(app.runtime.started.wait(), 60)
        address = f"127.0.0.1:{app.runtime.bound_port}"
        await wait_serving(address)
        yield RunningPayment(app, address)
    finally:
        app.runtime.stop()
        await asyncio.wait_for(serving, 30)


@pytest.fixture(scope="session")
def amqp_settings(amqp_url: str, amqp_isolation: AmqpIsolation) -> AmqpSettings:
    """The broker names of the in-process service-payment (and of the tests publishing to it)."""
    return AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=f"{amqp_isolation.queue_prefix}payment-tests.events",
        queue_prefix=f"{amqp_isolation.queue_prefix}payment-tests.",
        delivery_limit=2,
    )


def messaging_values(settings: AmqpSettings) -> dict[str, Any]:
    return {
        "AMQP_URL": settings.amqp_url,
        "EVENTS_EXCHANGE": settings.events_exchange,
        "QUEUE_PREFIX": settings.queue_prefix,
        "DELIVERY_LIMIT": settings.delivery_limit,
    }


@pytest.fixture(scope="session")
async def broker(amqp_settings: AmqpSettings) -> AsyncIterator[Broker]:
    """Plays service-order and service-product: publishes their events."""
    broker = Broker(amqp_settings, "payment-tests", connection_name=f"payment-tests-{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture(scope="session")
async def payments_db_url(create_database: CreateDatabase) -> str:
    url: str = await create_database("payments")
    return url


@pytest.fixture(scope="session")
async def service(
    provider: Provider,
    payments_db_url: str,
    amqp_settings: AmqpSettings,
    postgres_url: str,
    jwks_address: str,
) -> AsyncIterator[RunningPayment]:
    settings = payment_settings(
        **messaging_values(amqp_settings),
        POSTGRES_URL=postgres_url,
        PAYMENT_DB_NAME=urlsplit(payments_db_url).path.lstrip("/"),
        PAYMENT_PROVIDER_URL=provider.url,
        USER_SERVICE_ADDR=jwks_address,
    )
    async with running_payment(settings) as running:
        yield running


@pytest.fixture(scope="session")
async def tap(amqp_settings: AmqpSettings, service: RunningPayment) -> AsyncIterator[EventTap]:
    """Every event published on the in-process service-payment's exchange."""
    async with EventTap(amqp_settings, PAYMENT_EVENTS) as recorder:
        yield recorder


@pytest.fixture(scope="session")
async def payments_db(payments_db_url: str, service: RunningPayment) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(payments_db_url, min_size=0, max_size=2) as pool:
        yield pool


@pytest.fixture(scope="session")
async def payments(service: RunningPayment) -> AsyncIterator[payment_pb2_grpc.PaymentServiceStub]:
    async with grpc.aio.insecure_channel(service.address) as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


@pytest.fixture
def user() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def order_id() -> str:
    return str(uuid.uuid4())
