"""Least privilege on the running platform: every service reaches its stores with an account of its
own (made by `platform-bootstrap` from deploy/accounts/accounts.toml, as `make dev` makes them),
does all its work with it, and with service-order's credentials another service's database, queue
or keys are refused."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from chassis.postgres import database_url
from chassis.testing.waiting import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Platform
from .shop import Admin, login, new_shopper

SERVICE_DATABASES = {
    "USER": "USER_DB_NAME",
    "PRODUCT": "PRODUCT_DB_NAME",
    "ORDER": "ORDER_DB_NAME",
    "PAYMENT": "PAYMENT_DB_NAME",
    "PAYMENT_PROVIDER": "PAYMENT_PROVIDER_DB_NAME",
}


def user_of(url: str) -> str:
    return unquote(urlsplit(url).username or "")


def connect_redis(url: str) -> redis.Redis:
    return redis.from_url(url, driver_info=None, socket_timeout=5)


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as http:
        yield http


async def test_every_service_works_on_an_account_of_its_own_and_no_other(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    env = platform.env
    admin = Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    product = await admin.create_product(stock=3)
    shopper = await new_shopper(client)
    for _ in range(2):  # the second read is served from the cache the first one filled
        assert (await client.get(f"/api/v1/products/{product['id']}")).status_code == 200
    await shopper.add(product["id"], 1)
    order = await shopper.final_order((await shopper.checkout_order())["id"])
    assert order["status"] == "CONFIRMED"  # the saga crossed product, payment, order and cart
    wrong = await client.post(
        "/api/v1/login", json={"email": shopper.email, "password": "not the password"}
    )
    assert wrong.status_code == 401  # counted by the login throttle, in Redis

    # What each account wrote sits under its own prefix.
    prefix = env["REDIS_KEY_PREFIX"]
    store = connect_redis(env["REDIS_URL"])
    try:
        assert await store.exists(f"{prefix}product:{product['id']}")
        assert [key async for key in store.scan_iter(f"{prefix}user:login-failures:*")]
        assert await store.exists(f"{prefix}cart:{shopper.user_id}")
        clients = await store.client_list()
    finally:
        await store.aclose()
    connected = {entry["user"] for entry in clients}
    for variable in ("USER_REDIS_URL", "PRODUCT_REDIS_URL", "CART_REDIS_URL"):
        assert user_of(env[variable]) in connected, f"no connection as {variable}'s user"

    # PostgreSQL: the platform's sessions in each database are its owner's only.
    admin_db = await asyncpg.connect(database_url(env["POSTGRES_URL"], "postgres"), timeout=10)
    try:
        for service, database in SERVICE_DATABASES.items():
            sessions = await admin_db.fetch(
                "SELECT DISTINCT usename FROM pg_stat_activity "
                "WHERE datname = $1 AND backend_type = 'client backend'",
                env[database],
            )
            assert {row["usename"] for row in sessions} == {user_of(env[f"{service}_POSTGRES_URL"])}
            owner = await admin_db.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", env[database]
            )
            assert owner == user_of(env[f"{service}_POSTGRES_URL"])
    finally:
        await admin_db.close()

    # RabbitMQ: the consumers' connections are their own users'.
    if shutil.which("rabbitmqctl"):
        listing = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "--quiet", "list_connections", "user",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(listing.communicate(), 60)
        users = set(out.decode().split())
        for variable in ("PRODUCT_AMQP_URL", "CART_AMQP_URL", "ORDER_AMQP_URL", "PAYMENT_AMQP_URL"):
            assert user_of(env[variable]) in users, f"no broker connection as {variable}'s user"


async def test_service_order_cannot_open_another_services_database(platform: Platform) -> None:
    env = platform.env
    own = await asyncpg.connect(
        database_url(env["ORDER_POSTGRES_URL"], env["ORDER_DB_NAME"]), timeout=10
    )
    try:
        assert await own.fetchval("SELECT count(*) >= 0 FROM orders")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await own.execute(f'CREATE DATABASE "t_{uuid.uuid4().hex[:8]}"')
    finally:
        await own.close()
    for other in ("USER_DB_NAME", "PRODUCT_DB_NAME", "PAYMENT_DB_NAME", "PAYMENT_PROVIDER_DB_NAME"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await asyncpg.connect(database_url(env["ORDER_POSTGRES_URL"], env[other]), timeout=10)


async def test_service_order_cannot_read_or_declare_another_services_queue(
    platform: Platform,
) -> None:
    env = platform.env
    prefix = env["QUEUE_PREFIX"]
    connection = await aio_pika.connect(env["ORDER_AMQP_URL"], timeout=10)
    async with connection:
        channel = await connection.channel()
        own_dlq = await channel.declare_queue(f"{prefix}service-order.dlq", passive=True)
        await own_dlq.get(fail=False)  # its own dead letters: allowed (what the operator tool does)
        for name in (f"{prefix}service-product", f"{prefix}service-cart.dlq"):
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await queue.get(fail=False)
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.declare_queue(
                    name, durable=True, arguments={"x-queue-type": "quorum"}
                )
        # Nor a queue of its own to bind to the events exchange and listen to everything.
        for name in (f"{prefix}eavesdropper", None):  # None: a server-named queue
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.declare_queue(name, exclusive=True)


async def test_service_orders_credentials_open_no_redis_and_other_prefixes_are_refused(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    env = platform.env
    # service-order uses no Redis, so it has no Redis account at all.
    order_user, order_password = (
        user_of(env["ORDER_POSTGRES_URL"]),
        unquote(urlsplit(env["ORDER_POSTGRES_URL"]).password or ""),
    )
    server = urlsplit(env["REDIS_URL"])
    as_order = redis.Redis(
        host=server.hostname or "127.0.0.1",
        port=server.port or 6379,
        username=order_user,
        password=order_password,
        driver_info=None,
        socket_timeout=5,
    )
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await as_order.ping()
    finally:
        await as_order.aclose()

    # The cart's account may touch carts only: not the product cache, not the login throttle.
    prefix = env["REDIS_KEY_PREFIX"]
    admin = Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    product = await admin.create_product(stock=1)
    await client.get(f"/api/v1/products/{product['id']}")
    cached = f"{prefix}product:{product['id']}"
    await eventually(lambda: _exists(env["REDIS_URL"], cached))
    as_cart = connect_redis(env["CART_REDIS_URL"])
    try:
        await as_cart.get(f"{prefix}cart:{uuid.uuid4()}")  # its own keys: allowed
        for attempt in (
            lambda: as_cart.get(cached),
            lambda: as_cart.set(cached, b"poisoned"),
            lambda: as_cart.get(f"{prefix}user:login-failures:x"),
            lambda: as_cart.keys("*"),
            lambda: as_cart.flushdb(),
            lambda: as_cart.config_get("*"),
        ):
            with pytest.raises(NoPermissionError):
                await attempt()
    finally:
        await as_cart.aclose()


async def _exists(url: str, key: str) -> bool:
    client = connect_redis(url)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()
