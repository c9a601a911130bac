"""The floor of one checkout: what a checkout costs the infrastructure alone, issued by a minimal
asyncio client (asyncpg, aio-pika, redis-py), with no HTTP, no gRPC and no service code.

The platform's confirmed/s divided by the floor's checkouts/s, measured in the same run at the
same concurrency on the same machine, is the ratio the platform is judged by: the infrastructure
work is what a checkout cannot avoid, everything above it is the platform's own cost.

One floor checkout, in databases, a Redis prefix and an exchange of its own:
1. the cart line: one Redis write;
2. the order placed: order row, line row and `order.created` outbox row (transaction 1);
   published with a confirm, then marked published (transaction 2);
3. `order.created` consumed: inbox claim, conditional stock decrement on one of 20 hot product
   rows, reservation row, `stock.reserved` outbox row (3); published, marked (4); acked;
4. `stock.reserved` consumed: inbox claim, guarded PENDING -> CONFIRMED update, `order.confirmed`
   outbox row (5); published, marked (6); acked;
5. `order.confirmed` consumed: inbox claim (7); acked: the checkout is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aio_pika
import asyncpg
import redis.asyncio as redis
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from google.protobuf.message import Message
from steady_state import Checkout, Window

from chassis.messaging import INBOX_DDL, OUTBOX_DDL, topology
from chassis.postgres import create_pool, database_url, ensure_database
from chassis.settings import AmqpSettings
from ecommerce.events.v1 import events_pb2


@dataclass(frozen=True, slots=True)
class FloorShape:
    redis_writes: int
    postgres_transactions: int
    events: int


# Fixed at the platform's checkout when the floor was defined (issue 20): one Redis write for the
# cart line, 7 committed PostgreSQL transactions, 3 events each published with a confirm and
# consumed with an ack. It does not follow the platform: when payment adds its events, they are
# the platform's added cost and must fit inside the same ratio, so this stays 1 / 7 / 3.
FLOOR = FloorShape(redis_writes=1, postgres_transactions=7, events=3)

PRODUCTS = 20
PREFETCH = 32  # the services' CONSUMER_PREFETCH default
POOL_SIZE = 10  # the services' POSTGRES_POOL_MAX default
CHECKOUT_DEADLINE_SECONDS = 30.0  # the platform's saga timeout

_ORDERS_DDL = """
CREATE TABLE orders (
    id uuid PRIMARY KEY, user_id uuid NOT NULL, status text NOT NULL,
    total_cents bigint NOT NULL, currency text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC);
CREATE TABLE order_lines (
    order_id uuid NOT NULL REFERENCES orders (id), product_id uuid NOT NULL,
    quantity integer NOT NULL, unit_price_cents bigint NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
"""
_PRODUCTS_DDL = """
CREATE TABLE products (id uuid PRIMARY KEY, stock bigint NOT NULL CHECK (stock >= 0));
CREATE TABLE reservations (
    order_id uuid NOT NULL, product_id uuid NOT NULL REFERENCES products (id),
    quantity integer NOT NULL, PRIMARY KEY (order_id, product_id)
);
"""
_OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, payload)"
    " VALUES ($1, $2, $3, $4, $5) RETURNING id"
)
_INBOX_CLAIM = (
    "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
)


class Floor:
    """The floor's stores and consumers; `checkout()` runs one floor checkout to its end."""

    def __init__(self, run_id: str, postgres_url: str, redis_url: str, amqp_url: str) -> None:
        self.databases = {
            name: f"bench_{run_id}_floor_{name}" for name in ("orders", "products", "carts")
        }
        self._postgres_url = postgres_url
        self._redis = redis.from_url(redis_url)
        self._redis_prefix = f"bench:{run_id}:floor:"
        self._amqp = AmqpSettings(
            amqp_url=amqp_url,
            events_exchange=f"bench.{run_id}.floor",
            queue_prefix=f"bench.{run_id}.floor.",
        )
        self._pools: dict[str, asyncpg.Pool] = {}
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._products: list[uuid.UUID] = [uuid.uuid4() for _ in range(PRODUCTS)]
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.consumed = 0  # events consumed and acked, all three kinds

    async def __aenter__(self) -> Self:
        for name, database in self.databases.items():
            await ensure_database(self._postgres_url, database)
            url = database_url(self._postgres_url, database)
            self._pools[name] = await create_pool(url, max_size=POOL_SIZE)
        # The outbox as the services' migrations leave it: no NOTIFY trigger (events leave from
        # the committing process; see chassis.messaging.outbox).
        outbox = OUTBOX_DDL + "DROP TRIGGER outbox_notify ON outbox;\n"
        schemas = {
            "orders": _ORDERS_DDL + outbox + INBOX_DDL,
            "products": _PRODUCTS_DDL + outbox + INBOX_DDL,
            "carts": INBOX_DDL,
        }
        for name, ddl in schemas.items():
            await self._pools[name].execute(ddl)
        await self._pools["products"].executemany(
            "INSERT INTO products (id, stock) VALUES ($1, 2000000000)",
            [(p,) for p in self._products],
        )
        self._connection = await aio_pika.connect_robust(self._amqp.amqp_url, timeout=10)
        consumers = {
            "products": ("order.created", self._on_order_created),
            "orders": ("stock.reserved", self._on_stock_reserved),
            "carts": ("order.confirmed", self._on_order_confirmed),
        }
        for queue, (key, _) in consumers.items():
            await topology.declare_service_queue(self._connection, self._amqp, queue, [key])
        publishing = await self._connection.channel(publisher_confirms=True)
        self._exchange = await topology.get_events_exchange(publishing, self._amqp)
        for queue, (_, handler) in consumers.items():
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            name = topology.queue_name(self._amqp, queue)
            await (await topology.passive_queue(channel, name)).consume(self._acked(handler))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()
        for pool in self._pools.values():
            await pool.close()
        await self._remove()

    async def _remove(self) -> None:
        conn = await asyncpg.connect(database_url(self._postgres_url, "postgres"), timeout=10)
        try:
            for database in self.databases.values():
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()
        keys = [k async for k in self._redis.scan_iter(match=f"{self._redis_prefix}*")]
        if keys:
            await self._redis.delete(*keys)
        await self._redis.aclose()
        connection = await aio_pika.connect(self._amqp.amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            for queue in ("products", "orders", "carts"):
                name = topology.queue_name(self._amqp, queue)
                await channel.queue_delete(name)
                await channel.queue_delete(f"{name}.dlq")
            exchange = self._amqp.events_exchange
            await channel.queue_delete(f"{exchange}.unrouted")
            for name in (exchange, f"{exchange}.dlx", f"{exchange}.unrouted"):
                await channel.exchange_delete(name)

    def _acked(
        self, handler: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        """Ack after the handler's transaction committed; a failure is redelivered, as a
        service's consumer would have it. The last event's ack ends its checkout."""

        async def consume(message: AbstractIncomingMessage) -> None:
            async with message.process(requeue=True):
                await handler(message)
            self.consumed += 1
            if message.routing_key == "order.confirmed":
                done = self._waiting.get(message.correlation_id or "")
                if done is not None and not done.done():
                    done.set_result(None)

        return consume

    async def checkout(self) -> None:
        """One floor checkout, returning when its last event's inbox claim has committed."""
        user_id, product_id = uuid.uuid4(), random.choice(self._products)
        await self._redis.hset(f"{self._redis_prefix}cart:{user_id}", str(product_id), 1)
        order_id = uuid.uuid4()
        event = events_pb2.OrderCreated(
            event_id=str(uuid.uuid4()),
            order_id=str(order_id),
            user_id=str(user_id),
            lines=[
                events_pb2.OrderLine(product_id=str(product_id), quantity=1, unit_price_cents=1000)
            ],
            total_cents=1000,
            currency="USD",
        )
        done = asyncio.get_running_loop().create_future()
        self._waiting[str(order_id)] = done
        try:
            async with self._transaction("orders") as conn:
                await conn.execute(
                    "INSERT INTO orders (id, user_id, status, total_cents, currency)"
                    " VALUES ($1, $2, 'PENDING', 1000, 'USD')",
                    order_id,
                    user_id,
                )
                await conn.execute(
                    "INSERT INTO order_lines VALUES ($1, $2, 1, 1000)", order_id, product_id
                )
                outbox_id = await self._outbox(conn, event, "order.created", str(order_id))
            await self._publish_and_mark("orders", outbox_id, event, "order.created")
            async with asyncio.timeout(CHECKOUT_DEADLINE_SECONDS):
                await done
        finally:
            self._waiting.pop(str(order_id), None)

    async def _on_order_created(self, message: AbstractIncomingMessage) -> None:
        event = events_pb2.OrderCreated.FromString(message.body)
        reserved = events_pb2.StockReserved(event_id=str(uuid.uuid4()), order_id=event.order_id)
        async with self._transaction("products") as conn:
            claimed = await self._claim(conn, "products", message)
            if claimed:
                for line in event.lines:
                    await conn.execute(
                        "UPDATE products SET stock = stock - $2 WHERE id = $1 AND stock >= $2",
                        uuid.UUID(line.product_id),
                        line.quantity,
                    )
                    await conn.execute(
                        "INSERT INTO reservations VALUES ($1, $2, $3)",
                        uuid.UUID(event.order_id),
                        uuid.UUID(line.product_id),
                        line.quantity,
                    )
                outbox_id = await self._outbox(conn, reserved, "stock.reserved", event.order_id)
        if claimed:
            await self._publish_and_mark("products", outbox_id, reserved, "stock.reserved")

    async def _on_stock_reserved(self, message: AbstractIncomingMessage) -> None:
        event = events_pb2.StockReserved.FromString(message.body)
        confirmed = events_pb2.OrderConfirmed(event_id=str(uuid.uuid4()), order_id=event.order_id)
        async with self._transaction("orders") as conn:
            claimed = await self._claim(conn, "orders", message)
            if claimed:
                await conn.execute(
                    "UPDATE orders SET status = 'CONFIRMED', updated_at = now()"
                    " WHERE id = $1 AND status = 'PENDING'",
                    uuid.UUID(event.order_id),
                )
                outbox_id = await self._outbox(conn, confirmed, "order.confirmed", event.order_id)
        if claimed:
            await self._publish_and_mark("orders", outbox_id, confirmed, "order.confirmed")

    async def _on_order_confirmed(self, message: AbstractIncomingMessage) -> None:
        async with self._transaction("carts") as conn:
            await self._claim(conn, "carts", message)

    @contextlib.asynccontextmanager
    async def _transaction(self, database: str) -> AsyncIterator[asyncpg.Connection]:
        async with self._pools[database].acquire() as conn, conn.transaction():
            yield conn

    @staticmethod
    async def _claim(
        conn: asyncpg.Connection, consumer: str, message: AbstractIncomingMessage
    ) -> bool:
        status = await conn.execute(
            _INBOX_CLAIM, consumer, uuid.UUID(message.message_id), message.type
        )
        return bool(status == "INSERT 0 1")

    @staticmethod
    async def _outbox(conn: asyncpg.Connection, event: Message, key: str, order_id: str) -> int:
        outbox_id: int = await conn.fetchval(
            _OUTBOX_INSERT,
            uuid.UUID(event.event_id),  # type: ignore[attr-defined]
            event.DESCRIPTOR.full_name,
            key,
            order_id,
            event.SerializeToString(),
        )
        return outbox_id

    async def _publish_and_mark(
        self, database: str, outbox_id: int, event: Message, routing_key: str
    ) -> None:
        """Publish with a confirm, then mark the outbox row published (its own transaction)."""
        assert self._exchange is not None
        message = aio_pika.Message(
            event.SerializeToString(),
            message_id=event.event_id,  # type: ignore[attr-defined]
            type=event.DESCRIPTOR.full_name,
            content_type="application/x-protobuf",
            correlation_id=event.order_id,  # type: ignore[attr-defined]
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._exchange.publish(message, routing_key)
        await self._pools[database].execute(
            "UPDATE outbox SET published_at = now() WHERE id = $1", outbox_id
        )


async def closed_loop(
    floor: Floor, concurrency: int, window: Window, checkouts: list[Checkout]
) -> None:
    """`concurrency` clients each running floor checkouts, one after another, until the window
    ends."""

    async def loop() -> None:
        while (now := time.perf_counter()) < window.end:
            checkout = Checkout(started=now)
            checkouts.append(checkout)
            try:
                await floor.checkout()
            except TimeoutError:  # before OSError, its base class
                checkout.failure = f"not done in {CHECKOUT_DEADLINE_SECONDS:.0f} s"
            except (asyncpg.PostgresError, aio_pika.exceptions.AMQPError, OSError) as error:
                checkout.failure = type(error).__name__
            else:
                checkout.done_at = time.perf_counter()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
