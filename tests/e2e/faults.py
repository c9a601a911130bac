"""What the fault tests share: the servers behind proxies a test can cut, a stream of checkouts
that goes on through a fault, and the invariants checked once the platform is quiet again.

The stream is many shoppers buying a handful of products whose stock runs out, each shopper one
round at a time: set some cart lines, check out with an `Idempotency-Key`, wait for the order's
final status, sometimes cancel a confirmed order, then wait for the cart to lose exactly the
confirmed lines (or empty it after a cancellation). Every call is retried on a transport error,
502, 503 or 504 with the same key or the same absolute change, as a client of this API should;
whatever else goes wrong (a 500, an answer that contradicts what the shopper did) is recorded as an
anomaly, and each test ends by asserting there was none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import httpx
from redis.exceptions import RedisError

from chassis.postgres import database_url
from chassis.procfile import variable as procfile_variable
from chassis.redis_client import create_redis
from chassis.testing.proxy import TcpProxy

from .conftest import SAGA_TIMEOUT_SECONDS
from .payments import Provider, check_money
from .shop import FINAL, Admin, Shopper, new_shopper

# Whose settings name which server (service-cart's Redis is its cart store: Couchbase stands
# there in production, so "Redis is down" is the cache's and the login throttle's Redis).
SERVERS = {
    "postgres": (
        "POSTGRES_URL",
        ("service-user", "service-product", "service-order", "service-payment", "payment-provider"),
    ),
    "redis": ("REDIS_URL", ("service-user", "service-product", "service-cart")),
    "amqp": ("AMQP_URL", ("service-product", "service-cart", "service-order", "service-payment")),
}
RETRIED_STATUSES = frozenset({502, 503, 504})
SERVICE_QUEUES = ("service-product", "service-cart", "service-order", "service-payment")
# How many shoppers a stream registers at once (Stream.prepare).
REGISTRATIONS_AT_ONCE = 6


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "amqp": 5672}
    return parts.hostname or "127.0.0.1", parts.port or default[parts.scheme]


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Servers:
    """A `TcpProxy` per (process, server) in front of PostgreSQL, Redis and RabbitMQ, run by an
    event loop in a thread of its own (it forwards while the test's loop is busy or idle).
    Cutting a proxy is, from the service's side, exactly its server going away; the real
    servers, which other test runs share, are never touched."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._proxies: dict[tuple[str, str], TcpProxy] = {}

    def __enter__(self) -> Servers:
        self._thread.start()
        for server, (variable, processes) in SERVERS.items():
            host, port = _host_port(self._env[variable])
            for process in processes:
                self._proxies[process, server] = self._run(TcpProxy(host, port).start())
        return self

    def __exit__(self, *exc: object) -> None:
        for proxy in self._proxies.values():
            self._run(proxy.cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self, coroutine: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(30)

    def overrides(self) -> dict[str, dict[str, str]]:
        """Each process's URLs pointing at its own proxies."""
        settings: dict[str, dict[str, str]] = {}
        for (process, server), proxy in self._proxies.items():
            variable = SERVERS[server][0]
            # The process's own account (PRODUCT_POSTGRES_URL, ...), which its Procfile line
            # prefers, where the platform runs on accounts of least privilege.
            own = procfile_variable(process, variable)
            variable = own if own in self._env else variable
            settings.setdefault(process, {})[variable] = _through(self._env[variable], proxy.port)
        return settings

    def cut(
        self, server: str, processes: tuple[str, ...] | None = None, *, graceful: bool = False
    ) -> None:
        """`server`'s connections reset (or, `graceful`, closed as an exiting server's are) and
        new ones refused, for `processes` (default all)."""
        for (process, name), proxy in self._proxies.items():
            if name == server and (processes is None or process in processes):
                self._run(proxy.cut(graceful=graceful))

    def restore(self, server: str) -> None:
        for (_, name), proxy in self._proxies.items():
            if name == server:
                self._run(proxy.restore())

    @contextlib.contextmanager
    def down(
        self, server: str, processes: tuple[str, ...] | None = None, *, graceful: bool = False
    ) -> Iterator[None]:
        """`server` unreachable (for `processes`, default all) inside the block, back after it
        whatever happens. `graceful`: its connections closed the way a stopping server's are."""
        self.cut(server, processes, graceful=graceful)
        try:
            yield
        finally:
            self.restore(server)

    async def answering(self, server: str, within: float = 60.0) -> None:
        """Until `server` answers through the proxies again (a new connection, one request)."""
        variable, processes = SERVERS[server]
        url = _through(self._env[variable], self._proxies[processes[0], server].port)
        await answering(server, url, within)


async def answering(server: str, url: str, within: float = 60.0) -> None:
    """Until the `server` ("postgres", "redis" or "amqp") at `url` takes a new connection and
    answers on it."""

    async def answers() -> bool:
        try:
            if server == "postgres":
                connection = await asyncpg.connect(database_url(url, "postgres"), timeout=2)
                await connection.close()
            elif server == "redis":
                client = create_redis(url, timeout_seconds=2)
                try:
                    await client.ping()
                finally:
                    await client.aclose()
            else:
                amqp = await aio_pika.connect(url, timeout=2)
                await amqp.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, RedisError, aio_pika.AMQPException):
            return False
        return True

    await _eventually(answers, within, every=0.2)


# The real servers of this machine, stopped and started by the gated real-restart tests only.
REDIS_SERVER = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no"
    " --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", command], check=True, capture_output=True, timeout=120)


def pg_ctlcluster(*command: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", *command],
        check=True,
        capture_output=True,
        timeout=120,
    )


def stop_redis() -> None:
    """`redis-cli shutdown nosave`: every key of every run on the machine is gone after it."""
    subprocess.run(["redis-cli", "shutdown", "nosave"], check=True, capture_output=True, timeout=60)


def start_redis() -> None:
    subprocess.run(REDIS_SERVER, shell=True, check=True, capture_output=True, timeout=60)


class ApiClient:
    """REST calls retried as a careful client would, with a record of what should not happen."""

    def __init__(self, client: httpx.AsyncClient, *, patience: float = 90.0) -> None:
        self.client = client
        self.patience = patience
        self.anomalies: list[str] = []
        self.retries: Counter[str] = Counter()

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The first answer that is not a transport error, 502, 503 or 504 (retried with the same
        request until `patience` runs out). A 500 or a non-problem error is an anomaly."""
        response, _ = await self.call_noting_retries(method, url, **kwargs)
        return response

    async def call_noting_retries(
        self, method: str, url: str, **kwargs: Any
    ) -> tuple[httpx.Response, bool]:
        """`call`, and whether the request had to be sent more than once (an earlier attempt
        may then have had its effect without its answer arriving)."""
        deadline = time.monotonic() + self.patience
        delay = 0.1
        retried = False
        while True:
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TransportError as error:
                self.retries[type(error).__name__] += 1
            else:
                self._inspect(method, url, response)
                if response.status_code not in RETRIED_STATUSES:
                    return response, retried
                self.retries[str(response.status_code)] += 1
            retried = True
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {url} never answered within {self.patience}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _inspect(self, method: str, url: str, response: httpx.Response) -> None:
        where = f"{method} {url} -> {response.status_code}"
        if response.status_code >= 500 and response.status_code not in RETRIED_STATUSES:
            self.anomalies.append(f"{where}: {response.text[:300]}")
        if response.status_code >= 400 and not response.headers.get("content-type", "").startswith(
            "application/problem+json"
        ):
            self.anomalies.append(f"{where} is not a problem+json: {response.text[:200]}")
        if "x-request-id" not in response.headers:
            self.anomalies.append(f"{where} has no X-Request-ID")


@dataclass
class StreamShopper:
    shopper: Shopper
    # What the cart holds by this shopper's own account (product id -> quantity).
    cart: dict[str, int] = field(default_factory=dict)
    # Every order this shopper placed, by id, with the lines it was placed with.
    orders: dict[str, dict[str, int]] = field(default_factory=dict)
    rounds: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return self.shopper.headers


@dataclass
class Stream:
    """A few hundred checkouts by several dozen shoppers over a handful of products."""

    api: ApiClient
    products: dict[str, int]  # product id -> initial stock
    shoppers: list[StreamShopper]
    seed: int = 10
    cancel_share: float = 0.15
    # The payment provider whose ledger must agree with the orders (payments.py), when set.
    provider: Provider | None = None
    _fault_over: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def prepare(
        cls,
        client: httpx.AsyncClient,
        admin: Admin,
        *,
        shoppers: int = 36,
        scarce: tuple[int, ...] = (12, 20, 25, 30),
        ample: tuple[int, ...] = (400, 400),
    ) -> Stream:
        products = {}
        for stock in (*scarce, *ample):
            products[(await admin.create_product(stock=stock, price_cents=500))["id"]] = stock
        # A few registrations at a time: each is an argon2 hash, and a burst of three dozen on
        # two cores, beside another worker's storm, took some past the gateway's 3 s deadline
        # (504) before the stream had even begun. The stream, not its setup, is under test.
        registering = asyncio.Semaphore(REGISTRATIONS_AT_ONCE)

        async def register() -> Shopper:
            async with registering:
                return await new_shopper(client)

        people = await asyncio.gather(*(register() for _ in range(shoppers)))
        return cls(ApiClient(client), products, [StreamShopper(p) for p in people])

    @property
    def checkouts(self) -> int:
        return sum(len(s.orders) for s in self.shoppers)

    async def run_through(self, fault: Callable[[], Awaitable[None]], *, rounds: int = 6) -> None:
        """Run the stream while `fault` runs; every shopper does at least `rounds` rounds and
        at least one round that starts after the fault is over."""

        async def fault_then_flag() -> None:
            try:
                await fault()
            finally:
                self._fault_over.set()

        rng = random.Random(self.seed)
        seeds = [rng.random() for _ in self.shoppers]
        await asyncio.gather(
            fault_then_flag(),
            *(
                self._shop(s, random.Random(seed), rounds)
                for s, seed in zip(self.shoppers, seeds, strict=True)
            ),
        )

    async def _shop(self, buyer: StreamShopper, rng: random.Random, rounds: int) -> None:
        after_fault = 0
        while buyer.rounds < rounds or after_fault == 0:
            began_after_fault = self._fault_over.is_set()
            await self._round(buyer, rng)
            buyer.rounds += 1
            after_fault += began_after_fault

    async def _round(self, buyer: StreamShopper, rng: random.Random) -> None:
        for product_id in rng.sample(sorted(self.products), k=rng.choice((1, 2))):
            quantity = buyer.cart.get(product_id, 0) + rng.choice((1, 1, 2))
            # An absolute quantity: a retry after a lost answer sets the same line again.
            answer, retried = await self.api.call_noting_retries(
                "PUT",
                f"/api/v1/cart/items/{product_id}",
                headers=buyer.headers,
                json={"quantity": quantity},
            )
            if answer.status_code == 200:
                buyer.cart[product_id] = quantity
            elif answer.status_code != 409:  # 409: not enough stock left for it
                self.api.anomalies.append(f"set cart line -> {answer.status_code} {answer.text}")
            elif retried:
                # Refused now, but the attempt whose answer was lost may have set it: ask.
                line = (await self.cart_of(buyer)).get(product_id)
                if line is not None:
                    buyer.cart[product_id] = line
        if not buyer.cart:
            return
        key = f"stream-{uuid.uuid4()}"
        placed = await self.api.call(
            "POST",
            "/api/v1/checkout",
            headers={**buyer.headers, "Idempotency-Key": key},
            json={"payment_token": "pm_card_ok"},
        )
        if placed.status_code != 202:
            self.api.anomalies.append(f"checkout -> {placed.status_code} {placed.text}")
            return
        order = placed.json()
        lines = _lines(order)
        buyer.orders[order["id"]] = lines
        if lines != buyer.cart:
            self.api.anomalies.append(f"order {order['id']} has {lines}, cart was {buyer.cart}")
        final = await self._final(buyer, order["id"])
        if final["status"] == "CONFIRMED":
            for product_id, quantity in lines.items():
                buyer.cart[product_id] = buyer.cart.get(product_id, 0) - quantity
                if buyer.cart[product_id] <= 0:
                    del buyer.cart[product_id]
            if rng.random() < self.cancel_share:
                await self._cancel(buyer, order["id"])
            await self._cart_becomes(buyer, buyer.cart)
        else:
            cleared = await self.api.call("DELETE", "/api/v1/cart", headers=buyer.headers)
            if cleared.status_code != 204:
                self.api.anomalies.append(f"clear cart -> {cleared.status_code}")
            buyer.cart.clear()

    async def _final(self, buyer: StreamShopper, order_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + SAGA_TIMEOUT_SECONDS + 60
        while True:
            answer = await self.api.call("GET", f"/api/v1/orders/{order_id}", headers=buyer.headers)
            order = dict(answer.json())
            if order["status"] in FINAL:
                return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} still {order['status']}")
            await asyncio.sleep(0.25)

    async def _cancel(self, buyer: StreamShopper, order_id: str) -> None:
        retried_before = sum(self.api.retries.values())
        answer = await self.api.call(
            "POST", f"/api/v1/orders/{order_id}/cancel", headers=buyer.headers
        )
        # 409 after a retried call: the first attempt cancelled it and its answer was lost.
        lost_answer = answer.status_code == 409 and sum(self.api.retries.values()) > retried_before
        if answer.status_code != 200 and not lost_answer:
            self.api.anomalies.append(f"cancel {order_id} -> {answer.status_code} {answer.text}")

    async def _cart_becomes(self, buyer: StreamShopper, expected: dict[str, int]) -> None:
        deadline = time.monotonic() + 60
        while (cart := await self.cart_of(buyer)) != expected:
            if time.monotonic() > deadline:
                self.api.anomalies.append(f"cart of {buyer.shopper.email} {cart} != {expected}")
                return
            await asyncio.sleep(0.2)

    async def cart_of(self, buyer: StreamShopper) -> dict[str, int]:
        answer = await self.api.call("GET", "/api/v1/cart", headers=buyer.headers)
        return {item["product_id"]: item["quantity"] for item in answer.json()["items"]}

    async def listed_orders(self, buyer: StreamShopper) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            answer = await self.api.call(
                "GET", "/api/v1/orders", headers=buyer.headers, params=params
            )
            page = answer.json()
            found += page["items"]
            if not page["next_page_token"]:
                return found
            params["page_token"] = page["next_page_token"]

    async def stock(self, product_id: str) -> int:
        answer = await self.api.call("GET", f"/api/v1/products/{product_id}")
        return int(answer.json()["stock"])

    async def check_invariants(self, queues: QueueDepths) -> None:
        """Once quiet: every order final, each checkout one order, stock accounted for, carts as
        their shoppers left them, no event left behind or dead-lettered; no anomaly meanwhile."""
        assert self.api.anomalies == [], "\n".join(self.api.anomalies[:20])
        assert self.checkouts >= 100, f"only {self.checkouts} checkouts: the stream tested little"
        listed = await self._quiet()
        for buyer in self.shoppers:
            ids = [o["id"] for o in listed[buyer.shopper.email]]
            assert sorted(ids) == sorted(buyer.orders), f"{buyer.shopper.email}: one order a key"
        orders = [o for batch in listed.values() for o in batch]
        confirmed: Counter[str] = Counter()
        for order in orders:
            if order["status"] == "CONFIRMED":
                confirmed.update(_lines(order))
        statuses = Counter((o["status"], o["cancel_reason"]) for o in orders)
        assert statuses[("CONFIRMED", None)] > 0
        assert statuses[("CANCELLED", "OUT_OF_STOCK")] > 0, f"no stock ran out: {statuses}"

        seen: dict[str, tuple[int, int, int]] = {}

        async def stock_accounted_for() -> bool:
            # Releases of the last cancellations may still be on their way.
            stocks = {p: await self.stock(p) for p in self.products}
            assert all(s >= 0 for s in stocks.values()), f"negative stock: {stocks}"
            seen.clear()
            seen.update({p: (self.products[p], stocks[p], confirmed[p]) for p in self.products})
            return all(self.products[p] == stocks[p] + confirmed[p] for p in self.products)

        try:
            await _eventually(stock_accounted_for, within=30)
        except AssertionError as error:
            off = {p: f"initial {i} != stock {s} + confirmed {c}" for p, (i, s, c) in seen.items()
                   if i != s + c}  # fmt: skip
            raise AssertionError(f"{error}: {off}") from None
        for buyer in self.shoppers:
            assert await self.cart_of(buyer) == buyer.cart, buyer.shopper.email
        await queues.wait_drained()
        assert await queues.dead_lettered() == {}, "events were dead-lettered"
        if self.provider is not None:
            await check_money(self.provider, self.all_orders)
        assert self.api.anomalies == [], "\n".join(self.api.anomalies[:20])

    async def all_orders(self) -> list[dict[str, Any]]:
        listed = [await self.listed_orders(buyer) for buyer in self.shoppers]
        return [order for batch in listed for order in batch]

    async def _quiet(self) -> dict[str, list[dict[str, Any]]]:
        """Every shopper's orders once none is PENDING (at most the saga timeout after the last
        checkout, with room for the sweeper and a loaded machine)."""
        deadline = time.monotonic() + SAGA_TIMEOUT_SECONDS + 30
        while True:
            listed = {b.shopper.email: await self.listed_orders(b) for b in self.shoppers}
            pending = [o["id"] for batch in listed.values() for o in batch if o["status"]
                       not in FINAL]  # fmt: skip
            if not pending:
                return listed
            if time.monotonic() > deadline:
                raise AssertionError(f"orders still PENDING past the saga timeout: {pending}")
            await asyncio.sleep(0.5)


def _lines(order: dict[str, Any]) -> dict[str, int]:
    lines: Counter[str] = Counter()
    for item in order["items"]:
        lines[item["product_id"]] += item["quantity"]
    return dict(lines)


async def _eventually(
    condition: Callable[[], Awaitable[bool]], within: float, every: float = 0.5
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s: {condition.__qualname__}")
        await asyncio.sleep(every)


@dataclass
class QueueDepths:
    """The platform's queues, read on the real broker (never through a proxy), and its
    services' outboxes (events committed but not published, or parked)."""

    amqp_url: str
    queue_prefix: str
    exchange: str
    outbox_databases: tuple[str, ...] = ()
    baseline: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, env: dict[str, str]) -> QueueDepths:
        """The queues and outboxes of the platform whose settings are `env`."""
        return cls(
            env["AMQP_URL"],
            env["QUEUE_PREFIX"],
            env["EVENTS_EXCHANGE"],
            outbox_databases=tuple(
                database_url(env["POSTGRES_URL"], env[name])
                for name in ("PRODUCT_DB_NAME", "ORDER_DB_NAME", "PAYMENT_DB_NAME")
            ),
        )

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        connection = await aio_pika.connect(self.amqp_url, timeout=10)
        try:
            yield await connection.channel()
        finally:
            await connection.close()

    async def depths(self) -> dict[str, int]:
        names = [
            f"{self.queue_prefix}{q}{suffix}" for q in SERVICE_QUEUES for suffix in ("", ".dlq")
        ]
        names.append(f"{self.exchange}.unrouted")
        depths = {}
        async with self._channel() as channel:
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = int(queue.declaration_result.message_count or 0)
        return depths

    async def remember(self) -> None:
        """Take the dead-letter queues' depths now as the ones to compare with."""
        self.baseline = await self.depths()

    async def dead_lettered(self) -> dict[str, int]:
        """Messages dead-lettered since `remember`, by dead-letter queue."""
        now = await self.depths()
        grown = {q: n - self.baseline.get(q, 0) for q, n in now.items() if q.endswith(".dlq")}
        return {q: n for q, n in grown.items() if n}

    async def wait_drained(self, within: float = 30.0) -> None:
        """Every outbox published and every service queue and the unrouted queue empty; an
        outbox row set aside (parked) is an event lost to the saga."""

        async def drained_now() -> bool:
            depths = await self.depths()
            queues_empty = all(n == 0 for q, n in depths.items() if not q.endswith(".dlq"))
            return queues_empty and await self.unpublished() == 0

        async def drained() -> bool:
            # A queue's depth counts only messages not yet delivered: one delivered and still
            # being handled is in no depth, and its handler may yet write an outbox row. So the
            # platform is drained only when it stays so across a few polls (1.5 s).
            for _ in range(4):
                if not await drained_now():
                    return False
                await asyncio.sleep(0.5)
            return True

        await _eventually(drained, within)

    async def unpublished(self) -> int:
        waiting = 0
        for url in self.outbox_databases:
            connection = await asyncpg.connect(url, timeout=10)
            try:
                waiting += int(
                    await connection.fetchval(
                        "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                    )
                )
            finally:
                await connection.close()
        return waiting
