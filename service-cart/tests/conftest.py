"""Fixtures of the cart tests: every reachable store behind one `CartStore` fixture, and a real
service-product (subprocess) with service-cart (in-process) on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import redis.asyncio as redis

from cart_service.couchbase_store import CouchbaseCartStore
from cart_service.handlers import CONSUMER
from cart_service.main import build_runtime
from cart_service.redis_store import RedisCartStore
from cart_service.settings import CartSettings, CouchbaseLocation
from cart_service.store import CartStore
from chassis.grpc_server import ServiceRuntime
from chassis.messaging import DocumentInbox
from chassis.testing.plugin import AmqpIsolation
from chassis.testing.process import ServiceProcess, free_port
from chassis.testing.tokens import (
    BearerInterceptor,
    OwnerTokenInterceptor,
    TokenAuthority,
    serving_jwks,
)
from ecommerce.cart.v1 import cart_pb2_grpc
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from ecommerce.user.v1 import user_pb2

TTL_DAYS = 30
# The key the services under test trust (served as service-user's GetJwks) and tests sign with.
AUTHORITY = TokenAuthority()


def encode_jwks(keys: list[dict[str, str]]) -> bytes:
    reply = user_pb2.GetJwksResponse(keys=[user_pb2.JsonWebKey(**key) for key in keys])
    return reply.SerializeToString()


@pytest.fixture(scope="session")
def authority() -> TokenAuthority:
    return AUTHORITY


@pytest.fixture(scope="session")
async def jwks_address() -> AsyncIterator[str]:
    async with serving_jwks(AUTHORITY, encode_jwks) as address:
        yield address


def inbox() -> DocumentInbox:
    """The inbox service-cart's stores claim events in (as its main wires it)."""
    return DocumentInbox(CONSUMER, retention=timedelta(days=14))


@dataclass
class StoreUnderTest:
    """A store plus a way to read a cart's expiry behind its back."""

    store: CartStore
    seconds_to_expiry: Callable[[str], Awaitable[float | None]]


def couchbase_location() -> CouchbaseLocation | None:
    connstr = os.environ.get("COUCHBASE_CONNSTR")
    if not connstr:
        return None
    return CouchbaseLocation(
        connstr=connstr,
        username=os.environ.get("COUCHBASE_USERNAME", "Administrator"),
        password=os.environ.get("COUCHBASE_PASSWORD", "password"),
        bucket=os.environ.get("COUCHBASE_BUCKET", "carts"),
        scope=os.environ.get("COUCHBASE_SCOPE", "_default"),
        collection=os.environ.get("COUCHBASE_COLLECTION", "_default"),
    )


async def _redis_store(url: str, prefix: str) -> AsyncIterator[StoreUnderTest]:
    store = await RedisCartStore.connect(url, prefix, ttl_days=TTL_DAYS, inbox=inbox())
    probe = redis.from_url(url)

    async def seconds_to_expiry(user_id: str) -> float | None:
        ttl = await probe.ttl(store.key(user_id))
        return float(ttl) if ttl >= 0 else None

    yield StoreUnderTest(store, seconds_to_expiry)
    await store.close()
    await probe.aclose()


async def _couchbase_store(location: CouchbaseLocation) -> AsyncIterator[StoreUnderTest]:
    from couchbase.exceptions import DocumentNotFoundException
    from couchbase.options import GetOptions

    store = await CouchbaseCartStore.connect(location, ttl_days=TTL_DAYS, inbox=inbox())

    async def seconds_to_expiry(user_id: str) -> float | None:
        try:
            result = await store.collection.get(store.key(user_id), GetOptions(with_expiry=True))
        except DocumentNotFoundException:
            return None
        if result.expiry_time is None:
            return None
        expiry = result.expiry_time
        if expiry.tzinfo is None:  # the SDK gives a naive datetime in the local time zone
            expiry = expiry.astimezone()
        return (expiry - datetime.now(UTC)).total_seconds()

    yield StoreUnderTest(store, seconds_to_expiry)
    await store.close()


@pytest.fixture(params=["redis", pytest.param("couchbase", marks=pytest.mark.couchbase)])
async def under_test(
    request: pytest.FixtureRequest, redis_url: str, redis_key_prefix: str
) -> AsyncIterator[StoreUnderTest]:
    if request.param == "redis":
        async for item in _redis_store(redis_url, redis_key_prefix):
            yield item
        return
    location = couchbase_location()
    if location is None:
        pytest.skip("COUCHBASE_CONNSTR is not set: no Couchbase cluster for the cart contract")
    async for item in _couchbase_store(location):
        yield item


@pytest.fixture
def store(under_test: StoreUnderTest) -> CartStore:
    return under_test.store


@pytest.fixture
def seconds_to_expiry(under_test: StoreUnderTest) -> Callable[[str], Awaitable[float | None]]:
    """Reads how long a cart has left to live, straight from the store's server."""
    return under_test.seconds_to_expiry


@pytest.fixture
def user_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Platform:
    """service-product as a real subprocess and service-cart in-process, both on real sockets."""

    products: product_pb2_grpc.ProductServiceStub  # as an admin
    carts: cart_pb2_grpc.CartServiceStub  # as the user each request names
    product_address: str
    cart_address: str

    async def create_product(
        self, *, stock: int = 10, price_cents: int = 250, currency: str = "USD"
    ) -> product_pb2.Product:
        response = await self.products.CreateProduct(
            product_pb2.CreateProductRequest(
                sku=f"sku-{uuid.uuid4().hex[:12]}",
                name=f"Product {uuid.uuid4().hex[:6]}",
                description="made by the cart tests",
                price_cents=price_cents,
                currency=currency,
                stock=stock,
            ),
            timeout=5,
        )
        return response.product


@pytest.fixture(scope="session")
async def product_db_url(create_database: Any) -> str:
    """The database of the service-product the cart tests run against."""
    url: str = await create_database("cart_products")
    return url


@pytest.fixture(scope="session")
async def product_address(
    product_db_url: str,
    postgres_url: str,
    redis_url: str,
    redis_key_prefix: str,
    jwks_address: str,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> AsyncIterator[str]:
    database = urlsplit(product_db_url).path.lstrip("/")
    port = free_port()
    process = ServiceProcess(
        [sys.executable, "-c", "from product_service.main import main; main()"],
        env={
            "PRODUCT_GRPC_PORT": str(port),
            "PRODUCT_METRICS_PORT": "0",
            "GRPC_HOST": "127.0.0.1",
            "POSTGRES_URL": postgres_url,
            "PRODUCT_DB_NAME": database,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"{redis_key_prefix}product:",
            "READINESS_INTERVAL_SECONDS": "0.2",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            "USER_SERVICE_ADDR": jwks_address,
            "AMQP_URL": amqp_url,
            "EVENTS_EXCHANGE": f"{amqp_isolation.queue_prefix}cart-tests.events",
            "QUEUE_PREFIX": f"{amqp_isolation.queue_prefix}cart-tests.",
        },
        name="service-product",
    ).start()
    address = f"127.0.0.1:{port}"
    try:
        await process.wait_serving(address, timeout_s=60)
        yield address
    finally:
        process.stop()


# The run's broker names, set once per session (`_run_broker`); every cart started by the tests
# consumes its own queue on the run's exchange, never the shared `ecommerce.events`.
RUN_BROKER: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def _run_broker(amqp_url: str, amqp_isolation: AmqpIsolation) -> None:
    RUN_BROKER.update(
        AMQP_URL=amqp_url,
        EVENTS_EXCHANGE=f"{amqp_isolation.queue_prefix}cart-tests.events",
        QUEUE_PREFIX=f"{amqp_isolation.queue_prefix}cart-tests.",
    )


def cart_settings(**overrides: Any) -> CartSettings:
    values: dict[str, Any] = {
        **RUN_BROKER,
        "CART_GRPC_PORT": 0,
        "CART_METRICS_PORT": 0,
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": 0.2,
        "SHUTDOWN_GRACE_SECONDS": 1,
        **overrides,
    }
    return CartSettings(**values)


@contextlib.asynccontextmanager
async def running_cart(settings: CartSettings) -> AsyncIterator[ServiceRuntime]:
    """The real composition root serving on a free port until the block ends."""
    runtime = build_runtime(settings)
    serving = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 30)
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(serving, 30)


@pytest.fixture(scope="session")
async def platform(
    product_address: str, redis_url: str, redis_key_prefix: str, jwks_address: str
) -> AsyncIterator[Platform]:
    settings = cart_settings(
        CART_STORE="redis",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=f"{redis_key_prefix}svc:",
        PRODUCT_SERVICE_ADDR=product_address,
        USER_SERVICE_ADDR=jwks_address,
    )
    admin = BearerInterceptor(lambda: AUTHORITY.metadata(role="admin"))
    async with running_cart(settings) as runtime:
        cart_address = f"127.0.0.1:{runtime.bound_port}"
        async with (
            grpc.aio.insecure_channel(product_address, interceptors=[admin]) as product_channel,
            grpc.aio.insecure_channel(
                cart_address, interceptors=[OwnerTokenInterceptor(AUTHORITY)]
            ) as cart_channel,
        ):
            yield Platform(
                products=product_pb2_grpc.ProductServiceStub(product_channel),
                carts=cart_pb2_grpc.CartServiceStub(cart_channel),
                product_address=product_address,
                cart_address=cart_address,
            )
