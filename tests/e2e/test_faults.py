"""The saga under failure: a stream of a few hundred checkouts runs while one thing breaks (a
process SIGKILLed and restarted, PostgreSQL, Redis or RabbitMQ taken away and given back), then the
platform goes quiet and the invariants must hold: every order CONFIRMED or CANCELLED, one order per
checkout key, `initial stock = stock + confirmed quantities`, no negative stock, carts without
their confirmed lines exactly once, every queue drained and nothing dead-lettered.

The servers are shared with other test runs: a test takes one away from this platform only, by
cutting the proxies its services reach it through (`faults.Servers`), and gives it back in a
`finally`. Only `test_a_real_broker_restart...` and `test_a_real_postgresql_stop...` stop the real
servers, when asked to."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, SAGA_TIMEOUT_SECONDS, FaultPlatform, Platform
from .faults import Stream, pg_ctlcluster, rabbitmqctl
from .payments import Provider
from .shop import Admin, Shopper, login, new_shopper, stock_of

# A stream through a fault takes one to two minutes, more on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
async def faulty(fault_platform: FaultPlatform) -> FaultPlatform:
    await asyncio.to_thread(fault_platform.ensure_running)
    return fault_platform


@pytest.fixture
async def client(faulty: FaultPlatform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=faulty.platform.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> Admin:
    return Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))


@pytest.fixture
async def stream(faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin) -> Stream:
    prepared = await Stream.prepare(client, admin)
    prepared.provider = Provider(faulty.platform.env["PAYMENT_PROVIDER_URL"])
    await faulty.queues.remember()
    return prepared


# Every process of the platform that holds saga state or serves it, SIGKILLed in each round.
KILLED = ("service-product", "service-order", "service-cart", "service-payment", "api-gateway")
KILL_ROUNDS = 3
# Five restarts 2 s apart beside another group's storm starved the replicas' rolling restart
# (504s in CI); 4 s apart they come about as often as the separate streams' kills did.
KILL_STAGGER_SECONDS = 4.0


async def _restart(platform: Platform, name: str) -> None:
    platform.start(name)
    await asyncio.to_thread(platform.wait_serving, name)


async def kill_and_restart(platform: Platform, name: str, *, after: float) -> None:
    """SIGKILL `name` after `after` seconds (nothing drained: a crash), start it again 0.5 s later
    and wait until it serves."""
    await asyncio.sleep(after)
    platform.kill(name)
    try:
        await asyncio.sleep(0.5)
    finally:
        await _restart(platform, name)


async def test_every_process_sigkilled_three_times_mid_stream_leaves_every_effect_exactly_once(
    faulty: FaultPlatform, stream: Stream
) -> None:
    """Three rounds; in each, every process is SIGKILLed in turn, 4 s apart, and restarted
    without waiting for the others, so later kills land while earlier victims are still
    starting (service-order down while service-product replays its deliveries, the gateway gone
    while service-payment's worker holds a lease...). One stream for all of them: each process
    was once a stream of its own, five times the suite's cost for the same crashes."""
    platform = faulty.platform

    async def rounds_of_kills() -> None:
        for _ in range(KILL_ROUNDS):
            await asyncio.sleep(2.0)
            await asyncio.gather(
                *(
                    kill_and_restart(platform, name, after=i * KILL_STAGGER_SECONDS)
                    for i, name in enumerate(KILLED)
                )
            )

    await stream.run_through(rounds_of_kills)
    await stream.check_invariants(faulty.queues)


async def test_with_rabbitmq_gone_for_seconds_every_service_reconnects_by_itself(
    faulty: FaultPlatform, stream: Stream
) -> None:
    async def broker_outage() -> None:
        await asyncio.sleep(2.0)
        with faulty.servers.down("amqp"):
            await asyncio.sleep(6.0)

    await stream.run_through(broker_outage)
    await stream.check_invariants(faulty.queues)


async def test_with_the_broker_gone_a_shopper_checking_out_again_and_again_orders_each_unit_once(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin
) -> None:
    """A cart is ordered once. With the broker gone, every order stays PENDING (its
    `order.created` waits in the outbox) and the cart keeps its lines; shoppers who add one unit
    and check out, again and again, must get one order of one unit each time, not the whole cart
    again (orders of 1, 2, 3... units), and each unit is bought once when the broker is back."""
    rounds, initial = 3, 1000
    product = await admin.create_product(stock=initial)
    shoppers = [await new_shopper(client) for _ in range(4)]

    async def again_and_again(shopper: Shopper) -> list[str]:
        placed = []
        for _ in range(rounds):
            await shopper.add(product["id"], 1)
            answer = await shopper.checkout_until_answered()
            assert answer.status_code == 202, answer.text
            order = answer.json()
            assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [
                (product["id"], 1)
            ], order
            placed.append(order["id"])
        return placed

    with faulty.servers.down("amqp"):
        placed = await asyncio.gather(*(again_and_again(shopper) for shopper in shoppers))

    for shopper, order_ids in zip(shoppers, placed, strict=True):
        assert len(set(order_ids)) == rounds, order_ids
        finals = [await shopper.final_order(order_id) for order_id in order_ids]
        assert [order["status"] for order in finals] == ["CONFIRMED"] * rounds
        deadline = time.monotonic() + 30
        while (cart := await shopper.cart()) != {}:
            assert time.monotonic() < deadline, f"cart still holds {cart}"
            await asyncio.sleep(0.2)
    assert await stock_of(client, product["id"]) == initial - rounds * len(shoppers)
    await faulty.queues.wait_drained()


@pytest.mark.broker_restart
@pytest.mark.skipif(
    os.environ.get("E2E_RESTART_SHARED_BROKER") != "1",
    reason="stops the RabbitMQ every test run on this machine shares: E2E_RESTART_SHARED_BROKER=1",
)
async def test_a_real_broker_restart_mid_stream_is_survived_with_no_service_restarted(
    faulty: FaultPlatform, stream: Stream
) -> None:
    async def broker_restart() -> None:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            await asyncio.sleep(5.0)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(rabbitmqctl, "await_startup")

    await stream.run_through(broker_restart)
    await stream.check_invariants(faulty.queues)


@pytest.mark.postgres_restart
@pytest.mark.skipif(
    os.environ.get("E2E_RESTART_SHARED_POSTGRES") != "1",
    reason="stops the PostgreSQL every test run on this machine shares: "
    "E2E_RESTART_SHARED_POSTGRES=1",
)
async def test_a_real_postgresql_stop_mid_stream_is_survived_with_no_service_restarted(
    faulty: FaultPlatform, stream: Stream, client: httpx.AsyncClient, admin: Admin
) -> None:
    """The server itself stopped (`pg_ctlcluster ... stop -m fast`: connections terminated by the
    administrator, new ones refused while it is down), not a proxy cut: the same promises."""
    prober = await Prober.ready(client, admin)
    answers: list[Probe] = []

    async def database_stop() -> None:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(pg_ctlcluster, "stop", "-m", "fast")
        try:
            answers.extend(await prober.probe_for(5.0))
        finally:
            await asyncio.to_thread(pg_ctlcluster, "start")

    await stream.run_through(database_stop)
    await stream.check_invariants(faulty.queues)

    assert answers, "nothing was asked while the database was stopped"
    for probe in answers:
        assert probe.seconds < 10, probe
        assert probe.status in (200, 503, 504), probe
        if probe.status != 200:
            assert probe.problem, probe


async def test_with_postgresql_gone_the_gateway_answers_503_problems_in_time_and_recovers(
    faulty: FaultPlatform, stream: Stream, client: httpx.AsyncClient, admin: Admin
) -> None:
    prober = await Prober.ready(client, admin)
    answers: list[Probe] = []

    async def database_outage() -> None:
        await asyncio.sleep(2.0)
        with faulty.servers.down("postgres"):
            answers.extend(await prober.probe_for(6.0))

    await stream.run_through(database_outage)
    await stream.check_invariants(faulty.queues)

    assert answers, "nothing was asked while the database was away"
    for probe in answers:
        # The gateway's deadline is 3 s per upstream call: 10 s is room, a hang is not.
        assert probe.seconds < 10, probe
        assert probe.status in (200, 503, 504), probe
        if probe.status != 200:
            assert probe.problem, probe
    unavailable = {p.route for p in answers if p.status == 503}
    assert {"POST /api/v1/login", "GET /api/v1/orders", "POST /api/v1/checkout"} <= unavailable


async def test_with_redis_gone_products_come_from_postgresql_login_fails_closed_saga_goes_on(
    faulty: FaultPlatform, stream: Stream, client: httpx.AsyncClient, admin: Admin
) -> None:
    prober = await Prober.ready(client, admin)
    answers: list[Probe] = []

    async def cache_outage() -> None:
        await asyncio.sleep(2.0)
        # service-cart's Redis is its store (Couchbase in production): it stays.
        with faulty.servers.down("redis", ("service-user", "service-product")):
            answers.extend(await prober.probe_for(6.0))

    await stream.run_through(cache_outage)
    await stream.check_invariants(faulty.queues)

    by_route: dict[str, set[int]] = {}
    for probe in answers:
        assert probe.seconds < 10, probe
        by_route.setdefault(probe.route, set()).add(probe.status)
    assert by_route["GET /api/v1/products/{id}"] == {200}
    assert by_route["GET /api/v1/products"] == {200}
    assert by_route["POST /api/v1/login"] == {503}
    assert all(p.problem for p in answers if p.status == 503)
    # The saga does not need this Redis: no checkout, order or cart call had to be retried.
    assert stream.api.retries == {}, stream.api.retries


async def test_with_service_product_stopped_an_order_times_out_and_nothing_stays_reserved(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin
) -> None:
    platform = faulty.platform
    product = await admin.create_product(stock=4)
    shopper = await new_shopper(client)
    await shopper.add(product["id"], 3)
    platform.stop("service-product")
    try:
        # Without service-product a checkout cannot be priced: 503 within the gateway's deadline.
        response = await shopper.checkout()
        assert response.status_code == 503, response.text
    finally:
        await _restart(platform, "service-product")
    # service-product prices the checkout but hears no order.created before it dies.
    with faulty.servers.down("amqp", ("service-product",)):
        pending = await shopper.checkout_order()
        platform.kill("service-product")
    try:
        order = await shopper.final_order(pending["id"], within=SAGA_TIMEOUT_SECONDS + 30)
        assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "TIMEOUT")
    finally:
        await _restart(platform, "service-product")

    # Back, service-product handles the stale order.created and the order.cancelled, in any
    # order: nothing stays reserved.
    async def stock() -> object:
        answer = await client.get(f"/api/v1/products/{product['id']}")
        if answer.status_code != 200:  # a 504 on a saturated machine: asked again
            return f"{answer.status_code} {answer.text[:300]}"
        return answer.json()["stock"]

    deadline = time.monotonic() + 30
    while (seen := await stock()) != 4:
        assert time.monotonic() < deadline, f"the stock never came back: {seen}"
        await asyncio.sleep(0.5)
    await faulty.queues.wait_drained()
    assert await client.get(f"/api/v1/products/{product['id']}") is not None
    assert (await shopper.order(pending["id"]))["status"] == "CANCELLED"


class Probe:
    """One answer of the gateway during an outage."""

    def __init__(self, route: str, status: int, seconds: float, problem: bool) -> None:
        self.route, self.status, self.seconds, self.problem = route, status, seconds, problem

    def __repr__(self) -> str:
        return f"Probe({self.route} -> {self.status} in {self.seconds:.2f}s)"


class Prober:
    """Asks the gateway one of everything, over and over, and notes how each answer came."""

    def __init__(self, client: httpx.AsyncClient, routes: list[tuple[str, str, dict[str, Any]]]):
        self._client = client
        self._routes = routes

    @classmethod
    async def ready(cls, client: httpx.AsyncClient, admin: Admin) -> Prober:
        """A shopper of its own and a product of its own: its checkouts (some succeed) must not
        take stock the stream's invariants account for."""
        shopper = await new_shopper(client)
        product_id = (await admin.create_product(stock=1000))["id"]
        await shopper.add(product_id, 1)
        auth = {"headers": shopper.headers}
        login_body = {"email": shopper.email, "password": "correct horse battery"}
        routes: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/api/v1/login", {"json": login_body}),
            ("GET", "/api/v1/users/me", auth),
            ("GET", "/api/v1/products", {"params": {"limit": 5}}),
            ("GET", f"/api/v1/products/{product_id}", {}),
            ("GET", "/api/v1/cart", auth),
            ("GET", "/api/v1/orders", auth),
            # Key and cart never change: at most one order, whatever answers come back.
            (
                "POST",
                "/api/v1/checkout",
                {
                    "headers": {**shopper.headers, "Idempotency-Key": "p"},
                    "json": {"payment_token": "pm_card_ok"},
                },
            ),
        ]
        return cls(client, routes)

    async def probe_for(self, seconds: float) -> list[Probe]:
        answers = []
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for method, url, kwargs in self._routes:
                started = time.monotonic()
                response = await self._client.request(method, url, **kwargs)
                route = f"{method} {url}".replace(url.rsplit("/", 1)[-1], "{id}")
                route = route if "/products/" in url else f"{method} {url}"
                answers.append(
                    Probe(
                        route,
                        response.status_code,
                        time.monotonic() - started,
                        response.headers.get("content-type", "").startswith(
                            "application/problem+json"
                        ),
                    )
                )
            await asyncio.sleep(0.2)
        return answers
