"""Poison and the dead-letter queues on the running platform: what no retry can fix lands in
the service's dead-letter queue with a log line and a metric while checkouts flow past it, and
what failed for a cause an operator then fixed is re-driven with `chassis-dead-letters` and takes
effect once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import httpx
import pytest
import redis.asyncio as redis
from google.protobuf.message import Message
from prometheus_client.parser import text_string_to_metric_families

from chassis.messaging import declaration_of
from chassis.settings import AmqpSettings
from chassis.testing.events import EventTap
from chassis.testing.waiting import eventually
from ecommerce.events.v1 import events_pb2

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, FaultPlatform, Platform
from .shop import Admin, Shopper, login, new_shopper

# A stream through a fault takes one to two minutes, more on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ORDER_CONFIRMED = "ecommerce.events.v1.OrderConfirmed"


@pytest.fixture
async def faulty(fault_platform: FaultPlatform) -> FaultPlatform:
    await asyncio.to_thread(fault_platform.ensure_running)
    await fault_platform.queues.remember()
    return fault_platform


@pytest.fixture
async def client(faulty: FaultPlatform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=faulty.platform.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> Admin:
    return Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))


def dead_letters(platform: Platform, command_name: str, service: str) -> str:
    """`chassis-dead-letters COMMAND SERVICE` as an operator runs it beside the service: with the
    platform's settings and the service's own broker account."""
    command = Path(sys.executable).with_name("chassis-dead-letters")
    env = {**platform.env, "LOG_LEVEL": "WARNING"}
    env["AMQP_URL"] = platform.env[f"{service.removeprefix('service-').upper()}_AMQP_URL"]
    done = subprocess.run(
        [str(command), command_name, service],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def metric(platform: Platform, service: str, name: str, **labels: str) -> float:
    """The sum of the service's samples of `name` with these labels."""
    prefix = service.removeprefix("service-").upper()
    port = platform.env[f"{prefix}_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def logged(platform: Platform, service: str, event: str, **fields: str) -> bool:
    for line in platform.logs(service):
        _, _, payload = line.partition("| ")
        if not payload.startswith("{"):
            continue
        entry = json.loads(payload)
        if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
            return True
    return False


async def publish(
    platform: Platform, routing_key: str, body: bytes, message_type: str, message_id: str = ""
) -> str:
    """Publish a message by hand, as a faulty producer would: its routing key, body and type as
    given (none of the checks `Broker.publish` makes)."""
    message_id = message_id or str(uuid.uuid4())
    connection = await aio_pika.connect(platform.env["AMQP_URL"], timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(platform.env["EVENTS_EXCHANGE"])
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                type=message_type,
                content_type="application/x-protobuf",
                correlation_id=str(uuid.uuid4()),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )
    finally:
        await connection.close()
    return message_id


async def confirmed_checkout(client: httpx.AsyncClient, admin: Admin) -> Shopper:
    product = await admin.create_product(stock=5)
    shopper = await new_shopper(client)
    await shopper.add(product["id"], 1)
    order = await shopper.final_order((await shopper.checkout_order())["id"])
    assert order["status"] == "CONFIRMED"
    return shopper


async def test_poison_goes_to_the_dead_letter_queue_with_a_log_line_and_a_metric_and_the_saga_flows(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin
) -> None:
    platform = faulty.platform
    product_dlq = f"{platform.env['QUEUE_PREFIX']}service-product.dlq"
    order_dlq = f"{platform.env['QUEUE_PREFIX']}service-order.dlq"
    payment_dlq = f"{platform.env['QUEUE_PREFIX']}service-payment.dlq"
    services = ("service-product", "service-order", "service-payment")
    queues = {s: f"{platform.env['QUEUE_PREFIX']}{s}" for s in services}
    before = {
        s: metric(platform, s, "events_dead_lettered_total", queue=q) for s, q in queues.items()
    }

    order_created = declaration_of(events_pb2.OrderCreated)
    unparsable = await publish(
        platform, order_created.routing_key, b"\xff\xff\xff\xff", order_created.type_name
    )
    unknown = await publish(
        platform, order_created.routing_key, b"", "ecommerce.events.v1.NoSuchEvent"
    )
    event_id = str(uuid.uuid4())
    stock_reserved = declaration_of(events_pb2.StockReserved)
    malformed_id = await publish(
        platform,
        stock_reserved.routing_key,
        events_pb2.StockReserved(event_id=event_id, order_id="not-a-uuid").SerializeToString(),
        stock_reserved.type_name,
        event_id,
    )
    # The saga goes on past them, one checkout after another.
    for _ in range(3):
        await confirmed_checkout(client, admin)

    async def all_dead_lettered() -> bool:
        return await faulty.queues.dead_lettered() == {
            product_dlq: 2,
            order_dlq: 1,
            payment_dlq: 3,  # service-payment consumes both order.created and stock.reserved
        }

    await eventually(all_dead_lettered, within=30)
    for service, message_id in (
        ("service-product", unparsable),
        ("service-product", unknown),
        ("service-order", malformed_id),
        ("service-payment", unparsable),
        ("service-payment", unknown),
        ("service-payment", malformed_id),
    ):
        assert logged(platform, service, "event_dead_lettered", message_id=message_id), message_id
    for service, more in (("service-product", 2), ("service-order", 1), ("service-payment", 3)):
        now = metric(platform, service, "events_dead_lettered_total", queue=queues[service])
        assert now == before[service] + more, service

    shown = dead_letters(platform, "show", "service-product")
    for message_id in (unparsable, unknown):
        [row] = [line for line in shown.splitlines() if f"message_id={message_id}" in line]
        assert "reason=poison" in row
    assert "not-a-uuid" in dead_letters(platform, "show", "service-order")


async def test_an_event_whose_handler_kept_failing_is_redriven_after_the_fix_and_takes_effect_once(
    faulty: FaultPlatform, client: httpx.AsyncClient, admin: Admin
) -> None:
    """service-cart cannot remove a confirmed order's lines while the buyer's cart document is
    damaged (a value of the wrong type under its key): every delivery fails, the last one
    dead-letters the event. An operator puts the document back and re-drives the queue: the lines
    leave the cart once, and the same event delivered again changes nothing."""
    platform = faulty.platform
    cart_dlq = f"{platform.env['QUEUE_PREFIX']}service-cart.dlq"
    lamp = await admin.create_product(stock=10)
    mug = await admin.create_product(stock=10)
    shopper = await new_shopper(client)
    await shopper.add(lamp["id"], 2)
    settings = AmqpSettings(
        amqp_url=platform.env["AMQP_URL"], events_exchange=platform.env["EVENTS_EXCHANGE"]
    )
    store = redis.from_url(platform.env["REDIS_URL"])
    key = f"{platform.env['REDIS_KEY_PREFIX']}cart:{shopper.user_id}"
    try:
        async with EventTap(settings, [events_pb2.OrderConfirmed]) as tap:
            # service-cart hears nothing while the order is confirmed and its cart damaged.
            with faulty.servers.down("amqp", ("service-cart",)):
                order = await shopper.final_order((await shopper.checkout_order())["id"])
                assert order["status"] == "CONFIRMED"
                await shopper.add(lamp["id"], 1)
                await shopper.add(mug["id"], 1)
                document, ttl_ms = await store.get(key), await store.pttl(key)
                await store.delete(key)
                await store.hset(key, "damaged", "by hand")
            [confirmed] = await tap.wait_for(events_pb2.OrderConfirmed, correlation_id=order["id"])

        async def dead_lettered() -> bool:
            return await faulty.queues.dead_lettered() == {cart_dlq: 1}

        await eventually(dead_lettered, within=60)
        assert logged(platform, "service-cart", "handler_failed_on_last_attempt")
        [row] = dead_letters(platform, "show", "service-cart").splitlines()[1:]
        assert f"correlation_id={order['id']}" in row
        assert "reason=handler_failed" in row

        # The fix: the cart document as it was.
        assert document is not None
        await store.delete(key)
        await store.set(key, document, px=ttl_ms)
        assert "moved 1 message(s)" in dead_letters(platform, "redrive", "service-cart")
        expected = {lamp["id"]: 1, mug["id"]: 1}

        async def lines_left_once() -> bool:
            return await shopper.cart() == expected

        await eventually(lines_left_once, within=30)
        assert await faulty.queues.dead_lettered() == {}
        assert "moved 0 message(s)" in dead_letters(platform, "redrive", "service-cart")

        duplicates = metric(
            platform,
            "service-cart",
            "events_consumed_total",
            event_type=ORDER_CONFIRMED,
            outcome="duplicate",
        )
        assert confirmed.event is not None
        await publish_again(platform, confirmed.message_id, order["id"], confirmed.event)

        async def seen_as_duplicate() -> bool:
            now = metric(
                platform,
                "service-cart",
                "events_consumed_total",
                event_type=ORDER_CONFIRMED,
                outcome="duplicate",
            )
            return now > duplicates

        await eventually(seen_as_duplicate, within=30)
        assert await shopper.cart() == expected
    finally:
        await store.aclose()


async def publish_again(platform: Platform, message_id: str, order_id: str, event: Message) -> None:
    connection = await aio_pika.connect(platform.env["AMQP_URL"], timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(platform.env["EVENTS_EXCHANGE"])
        await exchange.publish(
            aio_pika.Message(
                event.SerializeToString(),
                message_id=message_id,
                type=ORDER_CONFIRMED,
                content_type="application/x-protobuf",
                correlation_id=order_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=declaration_of(events_pb2.OrderConfirmed).routing_key,
        )
    finally:
        await connection.close()
