"""After a store restarts, no request fails once it answers again (issue 18).

For each store in turn (PostgreSQL, Redis, RabbitMQ): every pool is warmed with requests at once,
the store restarts, and once it answers, about fifty requests at once over every route that needs
it all succeed, and the orders they place all reach CONFIRMED (the saga's relays and consumers
recovered too). The restart is the fault platform's proxies' (`faults.Servers`): every connection
closed the way a stopping server closes them, new ones refused for a few seconds, then accepted
again. The real servers, which other test runs share, are restarted only by the gated tests at the
end (`E2E_RESTART_SHARED_*`), which restart them whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from chassis.testing.accounts import RunAccounts

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, SAGA_TIMEOUT_SECONDS, FaultPlatform
from .faults import (
    answering,
    pg_ctlcluster,
    rabbitmqctl,
    start_redis,
    stop_redis,
)
from .shop import Admin, Shopper, login, new_shopper

# A stream through a fault takes one to two minutes, more on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Shoppers per round of requests: each makes six calls, the anonymous and admin routes the rest.
SHOPPERS = 6
DOWN_FOR_SECONDS = 3.0


@pytest.fixture
async def faulty(fault_platform: FaultPlatform) -> FaultPlatform:
    await asyncio.to_thread(fault_platform.ensure_running)
    return fault_platform


@pytest.fixture
async def client(faulty: FaultPlatform) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=faulty.platform.base_url, timeout=30, limits=limits
    ) as http:
        yield http


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> Admin:
    return Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))


@dataclass
class Answer:
    route: str
    status: int | str  # the HTTP status, or the transport error's name

    @property
    def failed(self) -> bool:
        return not isinstance(self.status, int) or self.status >= 500


@dataclass
class Customer:
    """A shopper with a cart line to check out and an earlier order to read and cancel."""

    shopper: Shopper
    earlier_order: str


@dataclass
class Shop:
    """What the rounds of requests need: products, and customers ready for one round each."""

    client: httpx.AsyncClient
    admin: Admin
    checked_out: str  # the product every customer's cart holds
    changed: str  # the product customers set a line of, and the admin edits
    customers: list[Customer] = field(default_factory=list)
    placed: list[tuple[Shopper, str]] = field(default_factory=list)

    @classmethod
    async def open(cls, client: httpx.AsyncClient, admin: Admin) -> Shop:
        checked_out = await admin.create_product(stock=1_000_000, price_cents=300)
        changed = await admin.create_product(stock=1_000_000, price_cents=200)
        return cls(client, admin, checked_out["id"], changed["id"])

    async def customers_for_a_round(self) -> list[Customer]:
        """SHOPPERS customers, each with a CONFIRMED earlier order and a cart to check out."""

        async def customer() -> Customer:
            shopper = await new_shopper(self.client)
            await shopper.add(self.changed, 1)
            earlier = (await shopper.checkout_order(str(uuid.uuid4())))["id"]
            assert (await shopper.final_order(earlier))["status"] == "CONFIRMED"
            return Customer(shopper, earlier)

        return list(await asyncio.gather(*(customer() for _ in range(SHOPPERS))))

    async def fill_carts(self, customers: list[Customer]) -> list[Answer]:
        """Each customer's cart set to one unit to check out (an absolute quantity: the same
        request whether the cart survived the restart or not)."""
        return await asyncio.gather(
            *(
                self._ask(
                    "PUT /cart/items/{id}",
                    "PUT",
                    f"/api/v1/cart/items/{self.checked_out}",
                    headers=c.shopper.headers,
                    json={"quantity": 1},
                )
                for c in customers
            )
        )

    async def every_route_at_once(self, customers: list[Customer]) -> list[Answer]:
        """One request per route for each customer, and the anonymous and admin routes, all at
        once (about fifty); the orders placed are remembered in `placed`."""
        calls: list[Awaitable[Answer]] = []
        for customer in customers:
            shopper, headers = customer.shopper, customer.shopper.headers
            calls += [
                self._checkout(shopper),
                self._ask("GET /users/me", "GET", "/api/v1/users/me", headers=headers),
                self._ask("GET /cart", "GET", "/api/v1/cart", headers=headers),
                self._ask(
                    "PUT /cart/items/{id}",
                    "PUT",
                    f"/api/v1/cart/items/{self.changed}",
                    headers=headers,
                    json={"quantity": 3},
                ),
                self._ask("GET /orders", "GET", "/api/v1/orders", headers=headers),
                self._ask(
                    "POST /orders/{id}/cancel",
                    "POST",
                    f"/api/v1/orders/{customer.earlier_order}/cancel",
                    headers=headers,
                ),
                self._ask(
                    "POST /login",
                    "POST",
                    "/api/v1/login",
                    json={"email": shopper.email, "password": "correct horse battery"},
                ),
            ]
        email = f"restart-{uuid.uuid4().hex[:12]}@example.com"
        calls += [
            self._ask(
                "POST /register",
                "POST",
                "/api/v1/register",
                json={"email": email, "password": "correct horse battery", "full_name": "New"},
            ),
            self._ask("GET /products", "GET", "/api/v1/products", params={"limit": 5}),
            self._ask("GET /products/{id}", "GET", f"/api/v1/products/{self.checked_out}"),
            self._ask(
                "PATCH /products/{id}",
                "PATCH",
                f"/api/v1/products/{self.changed}",
                headers=self.admin.headers,
                json={"description": f"edited {uuid.uuid4().hex[:6]}"},
            ),
            self._ask(
                "POST /products",
                "POST",
                "/api/v1/products",
                headers=self.admin.headers,
                json={
                    "sku": f"RESTART-{uuid.uuid4().hex[:12]}",
                    "name": "Restart kettle",
                    "description": "made across a store restart",
                    "price_cents": 900,
                    "stock": 5,
                },
            ),
        ]
        return list(await asyncio.gather(*calls))

    async def _checkout(self, shopper: Shopper) -> Answer:
        response = await shopper.checkout(str(uuid.uuid4()))
        if response.status_code == 202:
            self.placed.append((shopper, response.json()["id"]))
        return Answer("POST /checkout", response.status_code)

    async def _ask(self, route: str, method: str, url: str, **kwargs: Any) -> Answer:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TransportError as error:
            return Answer(route, type(error).__name__)
        return Answer(route, response.status_code)

    async def every_order_confirmed(self) -> None:
        """The orders placed in the rounds all reach CONFIRMED (stock is ample): the relays
        published their events and every consumer handled them."""
        within = SAGA_TIMEOUT_SECONDS + 30
        finals = await asyncio.gather(*(s.final_order(o, within) for s, o in self.placed))
        others = [
            (order["id"], order["status"], order.get("cancel_reason"), order.get("payment_status"))
            for order in finals
            if order["status"] != "CONFIRMED"
        ]
        assert finals
        assert others == []


EXPECTED = {
    "POST /checkout": {202},
    "GET /users/me": {200},
    "GET /cart": {200},
    "PUT /cart/items/{id}": {200},
    "GET /orders": {200},
    "POST /orders/{id}/cancel": {200},
    "POST /login": {200},
    "POST /register": {201},
    "GET /products": {200},
    "GET /products/{id}": {200},
    "PATCH /products/{id}": {200},
    "POST /products": {201},
}


def unexpected(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.failed or a.status not in EXPECTED[a.route]]


async def across_a_restart(
    client: httpx.AsyncClient,
    admin: Admin,
    restart: Callable[[], Awaitable[None]],
) -> None:
    """Warm every pool, `restart` (returns once the store answers again), then every route at
    once: not one request may fail, and every order placed is confirmed."""
    shop = await Shop.open(client, admin)
    warming, after = await asyncio.gather(
        shop.customers_for_a_round(), shop.customers_for_a_round()
    )
    assert unexpected(await shop.fill_carts([*warming, *after])) == []
    assert unexpected(await shop.every_route_at_once(warming)) == []

    await restart()

    answers = await shop.fill_carts(after)
    answers += await shop.every_route_at_once(after)
    assert len(answers) >= 50
    assert unexpected(answers) == []
    await shop.every_order_confirmed()


@pytest.mark.parametrize("store", ["postgres", "redis", "amqp"])
async def test_once_a_restarted_store_answers_again_no_request_fails(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin, store: str
) -> None:
    async def proxies_restart() -> None:
        with faulty.servers.down(store, graceful=True):
            await asyncio.sleep(DOWN_FOR_SECONDS)
        await faulty.servers.answering(store)

    await across_a_restart(client, admin, proxies_restart)
    await faulty.queues.wait_drained()


# The real servers: gated, because every test run on the machine shares them. Each is started
# again whatever happens (`finally`); the lead runs these alone.


@pytest.mark.postgres_restart
@pytest.mark.skipif(
    os.environ.get("E2E_RESTART_SHARED_POSTGRES") != "1",
    reason="restarts the PostgreSQL every test run on this machine shares: "
    "E2E_RESTART_SHARED_POSTGRES=1",
)
async def test_once_the_real_postgresql_is_back_no_request_fails(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin
) -> None:
    async def restart() -> None:
        await asyncio.to_thread(pg_ctlcluster, "stop", "-m", "fast")
        try:
            await asyncio.sleep(DOWN_FOR_SECONDS)
        finally:
            await asyncio.to_thread(pg_ctlcluster, "start")
        await answering("postgres", faulty.platform.env["POSTGRES_URL"])

    await across_a_restart(client, admin, restart)


@pytest.mark.redis_restart
@pytest.mark.skipif(
    os.environ.get("E2E_RESTART_SHARED_REDIS") != "1",
    reason="restarts the Redis every test run on this machine shares, and empties it: "
    "E2E_RESTART_SHARED_REDIS=1",
)
async def test_once_the_real_redis_is_back_no_request_fails(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin, service_accounts: RunAccounts
) -> None:
    """Redis here keeps nothing across a restart: carts come back empty (the round fills them
    again first, with requests that must not fail either), the cart script is unknown to the
    new server (NOSCRIPT: loaded again by the first call that needs it), and so are the
    services' own ACL users: the restart is over once the bootstrap has made them again, as an
    operator's would for a Redis without an ACL file."""

    async def restart() -> None:
        await asyncio.to_thread(stop_redis)
        try:
            await asyncio.sleep(DOWN_FOR_SECONDS)
        finally:
            await asyncio.to_thread(start_redis)
            await answering("redis", faulty.platform.env["REDIS_URL"])
            await service_accounts.restore_redis_users()

    await across_a_restart(client, admin, restart)


@pytest.mark.broker_restart
@pytest.mark.skipif(
    os.environ.get("E2E_RESTART_SHARED_BROKER") != "1",
    reason="restarts the RabbitMQ every test run on this machine shares: "
    "E2E_RESTART_SHARED_BROKER=1",
)
async def test_once_the_real_broker_is_back_no_request_fails_and_every_saga_completes(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin
) -> None:
    async def restart() -> None:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            await asyncio.sleep(DOWN_FOR_SECONDS)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(rabbitmqctl, "await_startup")
        await answering("amqp", faulty.platform.env["AMQP_URL"])

    await across_a_restart(client, admin, restart)
    await faulty.queues.wait_drained()
