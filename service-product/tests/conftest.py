"""Fixtures: service-product running in-process on a real socket against this run's own
Postgres database and Redis key prefix (from the chassis test plugin)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from chassis.testing.plugin import AmqpIsolation
from chassis.testing.process import free_port
from chassis.testing.tokens import BearerInterceptor, TokenAuthority, serving_jwks
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from ecommerce.user.v1 import user_pb2
from product_service.main import ProductApp, build_app
from product_service.settings import ProductSettings

SettingsFactory = Callable[..., ProductSettings]


@dataclass
class RunningProduct:
    app: ProductApp
    stub: product_pb2_grpc.ProductServiceStub  # calls carry an admin's token unless told otherwise
    channel: grpc.aio.Channel
    address: str


def encode_jwks(keys: list[dict[str, str]]) -> bytes:
    return user_pb2.GetJwksResponse(
        keys=[user_pb2.JsonWebKey(**key) for key in keys]
    ).SerializeToString()


# One signing key for the whole run: `running` (used outside fixtures too) signs with it.
AUTHORITY = TokenAuthority()


@pytest.fixture(scope="session")
def authority() -> TokenAuthority:
    return AUTHORITY


@pytest.fixture(scope="session")
async def jwks_address(authority: TokenAuthority) -> AsyncIterator[str]:
    """Where the service under test fetches the verification keys (service-user's GetJwks)."""
    async with serving_jwks(authority, encode_jwks) as address:
        yield address


@pytest.fixture(scope="session")
async def products_db_name(create_database: Any) -> str:
    url = await create_database("products")
    return urlsplit(url).path.lstrip("/")


@pytest.fixture(scope="session")
def make_settings(
    postgres_url: str,
    products_db_name: str,
    redis_url: str,
    redis_key_prefix: str,
    jwks_address: str,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> SettingsFactory:
    def make(**overrides: Any) -> ProductSettings:
        values: dict[str, Any] = {
            "PRODUCT_GRPC_PORT": 0,
            "PRODUCT_METRICS_PORT": 0,
            "GRPC_HOST": "127.0.0.1",
            "POSTGRES_URL": postgres_url,
            "PRODUCT_DB_NAME": products_db_name,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": redis_key_prefix,
            "READINESS_INTERVAL_SECONDS": 0.2,
            "SHUTDOWN_GRACE_SECONDS": 1,
            "USER_SERVICE_ADDR": jwks_address,
            "AMQP_URL": amqp_url,
            "EVENTS_EXCHANGE": f"{amqp_isolation.queue_prefix}product-tests.events",
            "QUEUE_PREFIX": f"{amqp_isolation.queue_prefix}product-tests.",
            # The relay takes nothing younger than a minute: every event these specs wait for is
            # published by the service at commit (its units of work are given the publisher).
            "OUTBOX_RELAY_GRACE_SECONDS": 60,
            **overrides,
        }
        return ProductSettings(**values)

    return make


@contextlib.asynccontextmanager
async def running(settings: ProductSettings) -> AsyncIterator[RunningProduct]:
    """The real composition root serving on a free port until the block ends."""
    app = await build_app(settings)
    serving = asyncio.create_task(app.runtime.run())
    await asyncio.wait_for(app.runtime.started.wait(), 30)
    address = f"127.0.0.1:{app.runtime.bound_port}"
    admin = BearerInterceptor(lambda: AUTHORITY.metadata(role="admin"))
    channel = grpc.aio.insecure_channel(address, interceptors=[admin])
    await _serving(channel)
    try:
        yield RunningProduct(app, product_pb2_grpc.ProductServiceStub(channel), channel, address)
    finally:
        await channel.close()
        app.runtime.stop()
        await asyncio.wait_for(serving, 30)


async def _serving(channel: grpc.aio.Channel, within: float = 30.0) -> None:
    """Until health says SERVING: the database is migrated and the saga consumer consumes."""
    health = health_pb2_grpc.HealthStub(channel)
    async with asyncio.timeout(within):
        while True:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
async def service(make_settings: SettingsFactory) -> AsyncIterator[RunningProduct]:
    async with running(make_settings()) as product_service:
        yield product_service


@pytest.fixture
def stub(service: RunningProduct) -> product_pb2_grpc.ProductServiceStub:
    return service.stub


@pytest.fixture
def start_service() -> Callable[[ProductSettings], Any]:
    """`async with start_service(settings) as running:` another in-process instance."""
    return running


@pytest.fixture
def unreachable_redis_url() -> str:
    """A Redis URL on a port nothing listens on (connections are refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


MakeProduct = Callable[..., Awaitable[product_pb2.Product]]


@pytest.fixture
def make_product(stub: product_pb2_grpc.ProductServiceStub) -> MakeProduct:
    """Create a product over gRPC: a unique sku and name unless given."""

    async def make(**fields: Any) -> product_pb2.Product:
        values: dict[str, Any] = {
            "sku": f"SKU-{uuid.uuid4().hex[:12]}",
            "name": f"Test Product {uuid.uuid4().hex[:12]}",
            "description": "Made for tests",
            "price_cents": 1999,
            "stock": 10,
            **fields,
        }
        request = product_pb2.CreateProductRequest(**values)
        return (await stub.CreateProduct(request, timeout=5)).product

    return make


@pytest.fixture
def metric() -> Callable[..., float]:
    """Current value of a Prometheus sample on the default registry (0 when never set)."""

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return value
