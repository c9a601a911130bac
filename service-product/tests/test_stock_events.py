"""service-product in the checkout saga: `order.created` reserves every line or none,
`order.cancelled` gives a reservation back once (or is remembered when it comes first). Events go
through the real broker to the real service; what it publishes is read from the exchange."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chassis.messaging import Broker
from chassis.settings import AmqpSettings
from chassis.testing.events import EventTap
from chassis.testing.plugin import AmqpIsolation
from chassis.testing.waiting import eventually
from ecommerce.events.v1 import events_pb2
from ecommerce.product.v1 import product_pb2, product_pb2_grpc

from .conftest import MakeProduct, RunningProduct

SAGA_EVENTS = [
    events_pb2.StockReserved,
    events_pb2.StockReservationFailed,
    events_pb2.StockReleased,
]
STOCK_EVENTS = {event.DESCRIPTOR.full_name for event in SAGA_EVENTS}


@pytest.fixture(scope="session")
def amqp_settings(amqp_url: str, amqp_isolation: AmqpIsolation) -> AmqpSettings:
    return AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=f"{amqp_isolation.queue_prefix}product-tests.events",
        queue_prefix=f"{amqp_isolation.queue_prefix}product-tests.",
    )


@pytest.fixture
async def broker(amqp_settings: AmqpSettings, service: RunningProduct) -> AsyncIterator[Broker]:
    broker = Broker(amqp_settings, "stock-tests", connection_name=f"stock-tests-{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture
async def tap(amqp_settings: AmqpSettings) -> AsyncIterator[EventTap]:
    async with EventTap(amqp_settings, SAGA_EVENTS) as tap:
        yield tap


# As service-order builds them: business fields only (publishing stamps the id and time).
def order_created(order_id: str, *lines: tuple[str, int]) -> events_pb2.OrderCreated:
    return events_pb2.OrderCreated(
        order_id=order_id,
        user_id=str(uuid.uuid4()),
        lines=[events_pb2.OrderLine(product_id=p, quantity=q) for p, q in lines],
        currency="USD",
    )


def order_cancelled(order_id: str) -> events_pb2.OrderCancelled:
    return events_pb2.OrderCancelled(
        order_id=order_id,
        user_id=str(uuid.uuid4()),
        reason=events_pb2.ORDER_CANCEL_REASON_USER_CANCELLED,
    )


Publish = Callable[[Any], Awaitable[None]]


@pytest.fixture
def publish(broker: Broker) -> Publish:
    async def send(event: Any) -> None:
        await broker.publish(event)

    return send


async def stock_of(stub: product_pb2_grpc.ProductServiceStub, product_id: str) -> int:
    reply = await stub.GetProduct(product_pb2.GetProductRequest(id=product_id))
    return reply.product.stock


async def test_an_order_within_stock_is_reserved_and_the_catalogue_shows_the_new_stock(
    make_product: MakeProduct,
    stub: product_pb2_grpc.ProductServiceStub,
    publish: Publish,
    tap: EventTap,
) -> None:
    lamp, desk = await make_product(stock=5), await make_product(stock=3)
    assert await stock_of(stub, lamp.id) == 5  # cached now: the reservation must invalidate it
    order_id = str(uuid.uuid4())
    await publish(order_created(order_id, (lamp.id, 2), (desk.id, 3)))

    [reserved] = await tap.wait_for(events_pb2.StockReserved, correlation_id=order_id)
    assert isinstance(reserved.event, events_pb2.StockReserved)
    assert sorted((line.product_id, line.quantity) for line in reserved.event.lines) == sorted(
        [(lamp.id, 2), (desk.id, 3)]
    )
    assert (await stock_of(stub, lamp.id), await stock_of(stub, desk.id)) == (3, 0)


async def test_an_order_with_one_short_line_reserves_nothing_at_all(
    make_product: MakeProduct,
    stub: product_pb2_grpc.ProductServiceStub,
    publish: Publish,
    tap: EventTap,
) -> None:
    plenty, scarce = await make_product(stock=10), await make_product(stock=1)
    order_id = str(uuid.uuid4())
    await publish(order_created(order_id, (plenty.id, 4), (scarce.id, 2)))

    [failed] = await tap.wait_for(events_pb2.StockReservationFailed, correlation_id=order_id)
    assert isinstance(failed.event, events_pb2.StockReservationFailed)
    assert (failed.event.product_id, failed.event.requested, failed.event.available) == (
        scarce.id,
        2,
        1,
    )
    assert (await stock_of(stub, plenty.id), await stock_of(stub, scarce.id)) == (10, 1)
    assert tap.matching(events_pb2.StockReserved, correlation_id=order_id) == []


async def test_an_unknown_product_fails_the_reservation(
    make_product: MakeProduct, publish: Publish, tap: EventTap
) -> None:
    real = await make_product(stock=10)
    order_id, ghost = str(uuid.uuid4()), str(uuid.uuid4())
    await publish(order_created(order_id, (real.id, 1), (ghost, 1)))
    [failed] = await tap.wait_for(events_pb2.StockReservationFailed, correlation_id=order_id)
    assert isinstance(failed.event, events_pb2.StockReservationFailed)
    assert (failed.event.product_id, failed.event.available) == (ghost, 0)


async def test_a_duplicated_order_created_reserves_once(
    make_product: MakeProduct,
    stub: product_pb2_grpc.ProductServiceStub,
    publish: Publish,
    tap: EventTap,
) -> None:
    product = await make_product(stock=10)
    order_id = str(uuid.uuid4())
    event = order_created(order_id, (product.id, 4))
    await publish(event)
    await publish(event)  # the same event delivered twice
    await publish(order_created(order_id, (product.id, 4)))  # the same order, another event id
    await tap.wait_for(events_pb2.StockReserved, correlation_id=order_id)
    await asyncio.sleep(1.0)
    assert len(tap.matching(events_pb2.StockReserved, correlation_id=order_id)) == 1
    assert await stock_of(stub, product.id) == 6


async def test_a_cancellation_gives_the_stock_back_exactly_once(
    make_product: MakeProduct,
    stub: product_pb2_grpc.ProductServiceStub,
    publish: Publish,
    tap: EventTap,
) -> None:
    product = await make_product(stock=7)
    order_id = str(uuid.uuid4())
    await publish(order_created(order_id, (product.id, 5)))
    await tap.wait_for(events_pb2.StockReserved, correlation_id=order_id)
    cancel = order_cancelled(order_id)
    await publish(cancel)
    await publish(cancel)
    await publish(order_cancelled(order_id))

    [released] = await tap.wait_for(events_pb2.StockReleased, correlation_id=order_id)
    assert isinstance(released.event, events_pb2.StockReleased)
    assert [(line.product_id, line.quantity) for line in released.event.lines] == [(product.id, 5)]
    await asyncio.sleep(1.0)
    assert len(tap.matching(events_pb2.StockReleased, correlation_id=order_id)) == 1
    assert await stock_of(stub, product.id) == 7


async def test_a_cancellation_before_its_order_makes_the_late_order_reserve_nothing(
    make_product: MakeProduct,
    stub: product_pb2_grpc.ProductServiceStub,
    publish: Publish,
    tap: EventTap,
) -> None:
    product = await make_product(stock=3)
    order_id = str(uuid.uuid4())
    await publish(order_cancelled(order_id))
    await publish(order_created(order_id, (product.id, 2)))
    witness = str(uuid.uuid4())  # an order published after both, to know they were handled
    await publish(order_created(witness, (product.id, 1)))
    await tap.wait_for(events_pb2.StockReserved, correlation_id=witness)
    await asyncio.sleep(0.5)
    published = [e for e in tap.matching(correlation_id=order_id) if e.event_type in STOCK_EVENTS]
    assert published == []
    assert await stock_of(stub, product.id) == 2


async def test_concurrent_orders_for_the_last_units_never_oversell(
    make_product: MakeProduct,
    stub: product_pb2_grpc.ProductServiceStub,
    publish: Publish,
    tap: EventTap,
) -> None:
    product = await make_product(stock=20)
    orders = [str(uuid.uuid4()) for _ in range(60)]
    await asyncio.gather(*(publish(order_created(o, (product.id, 1))) for o in orders))

    async def all_answered() -> bool:
        answered = {
            e.correlation_id
            for e in tap.events
            if e.event_type in STOCK_EVENTS and e.correlation_id in set(orders)
        }
        return len(answered) == len(orders)

    await eventually(all_answered, within=60)
    reserved = {e.correlation_id for e in tap.matching(events_pb2.StockReserved)} & set(orders)
    failed = {e.correlation_id for e in tap.matching(events_pb2.StockReservationFailed)} & set(
        orders
    )
    assert (len(reserved), len(failed)) == (20, 40)
    assert await stock_of(stub, product.id) == 0


async def test_a_malformed_order_event_goes_to_the_dead_letter_queue(
    broker: Broker, publish: Publish, amqp_settings: AmqpSettings
) -> None:
    dlq = f"{amqp_settings.queue_prefix}service-product.dlq"
    before = await broker.queue_depth(dlq)
    await publish(order_created(str(uuid.uuid4()), ("not-a-uuid", 1)))

    async def dead_lettered() -> bool:
        return await broker.queue_depth(dlq) == before + 1

    await eventually(dead_lettered)
