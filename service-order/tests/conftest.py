"""Fixtures of the order tests: real service-product and service-cart processes (Redis carts),
a JWKS server standing in for service-user, and service-order itself in-process on a real socket,
against this run's own databases, Redis prefix, exchange and queues (chassis test plugin).

Two service-product processes share one products database but not their Redis cache: the one
service-cart prices with keeps what it cached, the one service-order prices with (and the tests
administer) reads the database. So a cart can hold a price, a currency or a product that the
catalogue no longer has, which is exactly what a checkout must never trust.

service-product and service-cart get an exchange of their own: these tests play the saga's other
participants themselves, publishing the stock events to service-order's exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from google.protobuf.message import Message

from chassis.messaging import Broker
from chassis.settings import AmqpSettings
from chassis.testing.plugin import AmqpIsolation, CreateDatabase
from chassis.testing.process import ServiceProcess, free_port
from chassis.testing.tokens import (
    BearerInterceptor,
    OwnerTokenInterceptor,
    TokenAuthority,
    serving_jwks,
)
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc
from ecommerce.order.v1 import order_pb2, order_pb2_grpc
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from ecommerce.user.v1 import user_pb2
from order_service.main import OrderApp, build_app
from order_service.settings import OrderSettings

from .support import Tap, open_tap, wait_serving

# The simulated provider's token that is authorised (service-payment is played by the tests).
PAYMENT_TOKEN = "pm_card_ok"
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


@dataclass(frozen=True)
class Upstreams:
    catalogue_address: str  # the service-product service-order prices with
    cart_address: str
    products_db_url: str


def _product_process(name: str, port: int, env: dict[str, str]) -> ServiceProcess:
    return ServiceProcess(
        [sys.executable, "-c", "from product_service.main import main; main()"],
        env={
            **env,
            "PRODUCT_GRPC_PORT": str(port),
            "REDIS_KEY_PREFIX": env["REDIS_KEY_PREFIX"] + name,
        },
        name=name,
    )


@pytest.fixture(scope="session")
async def upstreams(
    create_database: CreateDatabase,
    postgres_url: str,
    redis_url: str,
    redis_key_prefix: str,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
    jwks_address: str,
) -> AsyncIterator[Upstreams]:
    products_db_url = await create_database("order_products")
    common = {
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": "0.2",
        "SHUTDOWN_GRACE_SECONDS": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "USER_SERVICE_ADDR": jwks_address,
        "REDIS_URL": redis_url,
        "AMQP_URL": amqp_url,
        "EVENTS_EXCHANGE": f"{amqp_isolation.queue_prefix}upstreams.events",
        "QUEUE_PREFIX": f"{amqp_isolation.queue_prefix}upstreams.",
    }
    product_env = {
        **common,
        "PRODUCT_METRICS_PORT": "0",
        "POSTGRES_URL": postgres_url,
        "PRODUCT_DB_NAME": urlsplit(products_db_url).path.lstrip("/"),
        "REDIS_KEY_PREFIX": f"{redis_key_prefix}order-tests:",
    }
    catalogue_port, carts_catalogue_port, cart_port = free_port(), free_port(), free_port()
    catalogue = _product_process("catalogue:", catalogue_port, product_env)
    carts_catalogue = _product_process("carts-catalogue:", carts_catalogue_port, product_env)
    cart = ServiceProcess(
        [sys.executable, "-c", "from cart_service.main import main; main()"],
        env={
            **common,
            "CART_GRPC_PORT": str(cart_port),
            "CART_METRICS_PORT": "0",
            "CART_STORE": "redis",
            "REDIS_KEY_PREFIX": f"{redis_key_prefix}order-tests:carts:",
            "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{carts_catalogue_port}",
        },
        name="service-cart",
    )
    processes = (catalogue, carts_catalogue, cart)
    ports = (catalogue_port, carts_catalogue_port, cart_port)
    try:
        for process in processes:
            process.start()
        await asyncio.gather(
            *(
                p.wait_serving(f"127.0.0.1:{port}", 60)
                for p, port in zip(processes, ports, strict=True)
            )
        )
        yield Upstreams(
            catalogue_address=f"127.0.0.1:{catalogue_port}",
            cart_address=f"127.0.0.1:{cart_port}",
            products_db_url=products_db_url,
        )
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))


def order_settings(**values: Any) -> OrderSettings:
    """Settings of an in-process service-order: a free port, no metrics server, quick readiness."""
    defaults: dict[str, Any] = {
        "ORDER_GRPC_PORT": 0,
        "ORDER_METRICS_PORT": 0,
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": 0.2,
        "SHUTDOWN_GRACE_SECONDS": 1,
        "OTEL_EXPORTER_OTLP_ENDPOINT": None,
        # Orders of the API and event specs stay PENDING until a test moves them, so neither
        # the sweeper nor checkout admission may act on their age (test_checkout_admission.py
        # sets its own bounds).
        "SAGA_TIMEOUT_SECONDS": 3600,
        "CHECKOUT_BACKLOG_MAX_STALE_ORDERS": 1_000_000,
        # The relay takes nothing younger than a minute: every event these specs wait for is
        # published by the service at commit (its units of work are given the publisher).
        "OUTBOX_RELAY_GRACE_SECONDS": 60,
    }
    return OrderSettings(**{**defaults, **values})


@dataclass(frozen=True)
class RunningOrder:
    app: OrderApp
    address: str


@contextlib.asynccontextmanager
async def running_order(settings: OrderSettings) -> AsyncIterator[RunningOrder]:
    """The real composition root serving on a free port until the block ends; yields once its
    health is SERVING (database migrated, broker connected, queue consumed)."""
    app = await build_app(settings)
    serving = asyncio.create_task(app.runtime.run())
    try:
        await asyncio.wait_for(app.runtime.started.wait(), 60)
        address = f"127.0.0.1:{app.runtime.bound_port}"
        await wait_serving(address)
        yield RunningOrder(app, address)
    finally:
        app.runtime.stop()
        await asyncio.wait_for(serving, 30)


@pytest.fixture(scope="session")
def amqp_settings(amqp_url: str, amqp_isolation: AmqpIsolation) -> AmqpSettings:
    """The broker names of the in-process service-order (and of the tests publishing to it)."""
    return AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=f"{amqp_isolation.queue_prefix}order-tests.events",
        queue_prefix=f"{amqp_isolation.queue_prefix}order-tests.",
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
    """Plays service-product: publishes the stock events to service-order's exchange."""
    broker = Broker(amqp_settings, "order-tests", connection_name=f"order-tests-{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture(scope="session")
async def orders_db_url(create_database: CreateDatabase) -> str:
    url: str = await create_database("orders")
    return url


@pytest.fixture(scope="session")
def upstream_values(upstreams: Upstreams, jwks_address: str, postgres_url: str) -> dict[str, Any]:
    """What every service-order under test needs to reach its dependencies."""
    return {
        "POSTGRES_URL": postgres_url,
        "CART_SERVICE_ADDR": upstreams.cart_address,
        "PRODUCT_SERVICE_ADDR": upstreams.catalogue_address,
        "USER_SERVICE_ADDR": jwks_address,
    }


@pytest.fixture(scope="session")
async def service(
    upstream_values: dict[str, Any], orders_db_url: str, amqp_settings: AmqpSettings
) -> AsyncIterator[RunningOrder]:
    settings = order_settings(
        **upstream_values,
        **messaging_values(amqp_settings),
        ORDER_DB_NAME=urlsplit(orders_db_url).path.lstrip("/"),
    )
    async with running_order(settings) as running:
        yield running


@pytest.fixture(scope="session")
async def tap(amqp_settings: AmqpSettings, service: RunningOrder) -> AsyncIterator[Tap]:
    """Every event published on the in-process service-order's exchange."""
    async with open_tap(amqp_settings) as recorder:
        yield recorder


@dataclass
class Shop:
    """Clients of the services under test, each call carrying the token of the user it names."""

    orders: order_pb2_grpc.OrderServiceStub
    carts: cart_pb2_grpc.CartServiceStub
    products: product_pb2_grpc.ProductServiceStub  # as an admin
    orders_db: asyncpg.Pool
    products_db: asyncpg.Pool
    order_address: str

    async def create_product(
        self, *, price_cents: int = 1250, currency: str = "USD", stock: int = 50
    ) -> product_pb2.Product:
        request = product_pb2.CreateProductRequest(
            sku=f"sku-{uuid.uuid4().hex[:12]}",
            name=f"Order test product {uuid.uuid4().hex[:6]}",
            description="made by the order tests",
            price_cents=price_cents,
            currency=currency,
            stock=stock,
        )
        return (await self.products.CreateProduct(request, timeout=5)).product

    async def add_to_cart(self, user: str, product_id: str, quantity: int = 1) -> cart_pb2.Cart:
        request = cart_pb2.AddItemRequest(user_id=user, product_id=product_id, quantity=quantity)
        return (await self.carts.AddItem(request, timeout=5)).cart

    async def filled_cart(self, user: str, *quantities: int) -> list[product_pb2.Product]:
        """New products, each added to the user's cart with the quantity given."""
        products = [await self.create_product() for _ in quantities]
        for product, quantity in zip(products, quantities, strict=True):
            await self.add_to_cart(user, product.id, quantity)
        return products

    async def checkout(
        self, user: str, key: str = "", payment_token: str = PAYMENT_TOKEN
    ) -> order_pb2.Order:
        request = order_pb2.CheckoutRequest(
            user_id=user, idempotency_key=key, payment_token=payment_token
        )
        return (await self.orders.Checkout(request, timeout=10)).order

    async def get_order(self, user: str, order_id: str) -> order_pb2.Order:
        request = order_pb2.GetOrderRequest(user_id=user, order_id=order_id)
        return (await self.orders.GetOrder(request, timeout=5)).order

    async def outbox(self, order_id: str, event_type: type[Message]) -> list[bytes]:
        """Payloads of the events of that type service-order committed for the order."""
        rows = await self.orders_db.fetch(
            "SELECT payload FROM outbox WHERE correlation_id = $1 AND event_type = $2 ORDER BY id",
            order_id,
            event_type.DESCRIPTOR.full_name,
        )
        return [bytes(row["payload"]) for row in rows]


@pytest.fixture(scope="session")
async def shop(
    service: RunningOrder, upstreams: Upstreams, orders_db_url: str
) -> AsyncIterator[Shop]:
    admin = BearerInterceptor(lambda: AUTHORITY.metadata(role="admin"))
    async with (
        grpc.aio.insecure_channel(
            service.address, interceptors=[OwnerTokenInterceptor(AUTHORITY)]
        ) as oc,
        grpc.aio.insecure_channel(
            upstreams.cart_address, interceptors=[OwnerTokenInterceptor(AUTHORITY)]
        ) as cc,
        grpc.aio.insecure_channel(upstreams.catalogue_address, interceptors=[admin]) as pc,
        asyncpg.create_pool(orders_db_url, min_size=0, max_size=4) as orders_db,
        asyncpg.create_pool(upstreams.products_db_url, min_size=0, max_size=2) as products_db,
    ):
        yield Shop(
            orders=order_pb2_grpc.OrderServiceStub(oc),
            carts=cart_pb2_grpc.CartServiceStub(cc),
            products=product_pb2_grpc.ProductServiceStub(pc),
            orders_db=orders_db,
            products_db=products_db,
            order_address=service.address,
        )


@pytest.fixture
def user() -> str:
    return str(uuid.uuid4())
