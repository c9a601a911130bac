"""A real platform for the gateway tests: service-user, service-product and service-cart as
subprocesses on isolated databases and Redis prefixes, and the gateway itself as a uvicorn
subprocess, all on free ports. Tests talk to the gateway over real HTTP only."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chassis.testing.plugin import AmqpIsolation
from chassis.testing.process import ServiceProcess, free_port

ADMIN_EMAIL = "root.admin@example.com"
ADMIN_PASSWORD = "admin-password-42"
# Cheap argon2 so registering and logging in many users stays fast.
FAST_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST_KIB": "8", "ARGON2_PARALLELISM": "1"}


@dataclass
class SigningMaterial:
    """The Ed25519 key service-user signs with, so tests can forge tokens with it."""

    private_key: Ed25519PrivateKey
    path: Path
    kid: str = ""

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private_key, algorithm="EdDSA", headers={"kid": kid or self.kid}
        )


@dataclass
class Platform:
    gateway_url: str
    user_addr: str
    product_addr: str
    cart_addr: str
    metrics_url: str
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def log_lines(self) -> list[str]:
        return [line for p in self.processes.values() for line in p.stdout_lines + p.stderr_lines]


def service_command(entry_point: str) -> list[str]:
    """The console script installed next to this interpreter (the workspace venv)."""
    return [str(Path(sys.executable).parent / entry_point)]


async def wait_http_ok(process: ServiceProcess, url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"{process.name} exited\n{process.output_tail()}")
            try:
                status = (await client.get(url)).status_code
            except httpx.TransportError:
                status = None  # not listening yet
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} not answering {url}\n{process.output_tail()}")
            await asyncio.sleep(0.1)


def start_gateway(env: dict[str, str], metrics_port: int = 0) -> tuple[ServiceProcess, str]:
    port = free_port()
    process = ServiceProcess(
        service_command("api-gateway"),
        env={
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_METRICS_PORT": str(metrics_port),
            # No load balancer to leave: stop at once (the draining test sets its own delay).
            "GATEWAY_SHUTDOWN_DRAIN_DELAY_SECONDS": "0",
            **env,
        },
        name="api-gateway",
    ).start()
    return process, f"http://127.0.0.1:{port}"


def start_user_service(
    database_url: str, redis_url: str, prefix: str, key_path: Path, **extra: str
) -> tuple[ServiceProcess, str]:
    port = free_port()
    parsed = urlparse(database_url)
    env = {
        "POSTGRES_URL": f"{parsed.scheme}://{parsed.netloc}",
        "USER_DB_NAME": parsed.path.lstrip("/"),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "USER_GRPC_PORT": str(port),
        "USER_METRICS_PORT": "0",
        "JWT_PRIVATE_KEY_FILE": str(key_path),
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        # Every test client is 127.0.0.1: the per-client limits are specified in service-user.
        "LOGIN_RATE_PER_CLIENT": "100000",
        "REGISTER_RATE_PER_CLIENT": "100000",
        **FAST_ARGON2,
        **extra,
    }
    process = ServiceProcess(service_command("service-user"), env=env, name="service-user")
    return process.start(), f"127.0.0.1:{port}"


def start_product_service(
    database_url: str, redis_url: str, prefix: str, user_addr: str, amqp: Mapping[str, str]
) -> tuple[ServiceProcess, str]:
    port = free_port()
    parsed = urlparse(database_url)
    env = {
        "POSTGRES_URL": f"{parsed.scheme}://{parsed.netloc}",
        "PRODUCT_DB_NAME": parsed.path.lstrip("/"),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "PRODUCT_GRPC_PORT": str(port),
        "PRODUCT_METRICS_PORT": "0",
        "USER_SERVICE_ADDR": user_addr,
        **amqp,
    }
    process = ServiceProcess(service_command("service-product"), env=env, name="service-product")
    return process.start(), f"127.0.0.1:{port}"


def start_cart_service(
    redis_url: str, prefix: str, product_addr: str, user_addr: str, amqp: Mapping[str, str]
) -> tuple[ServiceProcess, str]:
    port = free_port()
    env = {
        "CART_STORE": "redis",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "CART_GRPC_PORT": str(port),
        "CART_METRICS_PORT": "0",
        "PRODUCT_SERVICE_ADDR": product_addr,
        "USER_SERVICE_ADDR": user_addr,
        **amqp,
    }
    process = ServiceProcess(service_command("service-cart"), env=env, name="service-cart")
    return process.start(), f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def signing(tmp_path_factory: pytest.TempPathFactory) -> SigningMaterial:
    key = Ed25519PrivateKey.generate()
    path = tmp_path_factory.mktemp("jwt") / "signing-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return SigningMaterial(private_key=key, path=path)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def platform(
    create_database: Callable[[str], Any],
    redis_url: str,
    redis_key_prefix: str,
    signing: SigningMaterial,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> AsyncIterator[Platform]:
    processes: dict[str, ServiceProcess] = {}
    amqp = {
        "AMQP_URL": amqp_url,
        "EVENTS_EXCHANGE": f"{amqp_isolation.queue_prefix}gw.events",
        "QUEUE_PREFIX": f"{amqp_isolation.queue_prefix}gw.",
    }
    users_db, products_db = await asyncio.gather(
        create_database("gw_users"), create_database("gw_products")
    )
    try:
        # Everything starts at once; the gateway itself needs no upstream to come up.
        users, user_addr = start_user_service(
            users_db, redis_url, redis_key_prefix + "users:", signing.path
        )
        processes["service-user"] = users
        products, product_addr = start_product_service(
            products_db, redis_url, redis_key_prefix + "products:", user_addr, amqp
        )
        processes["service-product"] = products
        waits = [users.wait_serving(user_addr, 120), products.wait_serving(product_addr, 120)]
        carts, cart_addr = start_cart_service(
            redis_url, redis_key_prefix + "carts:", product_addr, user_addr, amqp
        )
        processes["service-cart"] = carts
        waits.append(carts.wait_serving(cart_addr, 120))
        metrics_port = free_port()
        gateway, gateway_url = start_gateway(
            {
                "USER_SERVICE_ADDR": user_addr,
                "PRODUCT_SERVICE_ADDR": product_addr,
                "CART_SERVICE_ADDR": cart_addr,
                # The order routes are specified end to end (tests/e2e): no service-order here.
                "ORDER_SERVICE_ADDR": "",
            },
            metrics_port,
        )
        processes["api-gateway"] = gateway
        await asyncio.gather(*waits, wait_http_ok(gateway, gateway_url + "/healthz"))
        yield Platform(
            gateway_url,
            user_addr,
            product_addr,
            cart_addr,
            f"http://127.0.0.1:{metrics_port}/metrics",
            processes,
        )
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes.values()))


@pytest_asyncio.fixture(loop_scope="session")
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=10.0) as client:
        yield client


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_email(label: str = "shopper") -> str:
    return f"{label}.{uuid.uuid4().hex[:12]}@example.com"


async def _login(api: httpx.AsyncClient, email: str, password: str) -> str:
    reply = await api.post("/api/v1/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    token: str = reply.json()["access_token"]
    return token


MakeCustomer = Callable[[], Awaitable[Account]]


@pytest.fixture
def make_customer(api: httpx.AsyncClient) -> MakeCustomer:
    """Factory: registers a fresh customer through the API and logs it in."""

    async def make() -> Account:
        email, password = unique_email(), "s3cret-passphrase"
        reply = await api.post(
            "/api/v1/register",
            json={"email": email, "password": password, "full_name": "Test User"},
        )
        assert reply.status_code == 201, reply.text
        return Account(reply.json()["id"], email, password, await _login(api, email, password))

    return make


@pytest_asyncio.fixture(loop_scope="session")
async def customer(make_customer: MakeCustomer) -> Account:
    return await make_customer()


@pytest_asyncio.fixture(loop_scope="session")
async def admin(api: httpx.AsyncClient) -> Account:
    token = await _login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = await api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    return Account(me.json()["id"], ADMIN_EMAIL, ADMIN_PASSWORD, token)


@dataclass
class LoneUserGateway:
    """A private service-user behind a gateway whose product and cart upstreams are disabled."""

    users: ServiceProcess
    gateway: ServiceProcess
    url: str


@pytest_asyncio.fixture(loop_scope="session")
async def lone_user_gateway(
    create_database: Callable[[str], Any],
    redis_url: str,
    redis_key_prefix: str,
    signing: SigningMaterial,
) -> AsyncIterator[LoneUserGateway]:
    database = await create_database(f"gw_lone_{uuid.uuid4().hex[:6]}")
    users, user_addr = start_user_service(
        database, redis_url, redis_key_prefix + "lone:", signing.path
    )
    gateway, url = start_gateway(
        {
            "USER_SERVICE_ADDR": user_addr,
            "PRODUCT_SERVICE_ADDR": "",
            "CART_SERVICE_ADDR": "",
            "ORDER_SERVICE_ADDR": "",
        }
    )
    try:
        await asyncio.gather(
            users.wait_serving(user_addr, 120), wait_http_ok(gateway, url + "/healthz")
        )
        yield LoneUserGateway(users, gateway, url)
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in (gateway, users)))


@pytest_asyncio.fixture(loop_scope="session")
async def extra_gateway(platform: Platform) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Factory: another gateway on the shared upstreams with some settings overridden."""
    started: list[ServiceProcess] = []

    async def start(**env: str) -> str:
        gateway, url = start_gateway(
            {
                "USER_SERVICE_ADDR": platform.user_addr,
                "PRODUCT_SERVICE_ADDR": platform.product_addr,
                "CART_SERVICE_ADDR": "",
                "ORDER_SERVICE_ADDR": "",
                **env,
            }
        )
        started.append(gateway)
        await wait_http_ok(gateway, url + "/healthz")
        return url

    yield start
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in started))
