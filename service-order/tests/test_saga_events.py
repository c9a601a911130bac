"""service-order's part of the saga over a real broker: the stock and payment events published to
its exchange (each twice, and in odd orders) move an order at most once, with one event out per
move. Orders placed now run saga version 2 (confirmed on `payment.authorized`); a version-1 order
(placed before the payment step, or by a replica of the previous release) is confirmed on
`stock.reserved` as before."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

import aio_pika
from google.protobuf.message import Message

from chassis.messaging import Broker
from chassis.settings import AmqpSettings
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2

from .conftest import Shop
from .support import Tap, eventually, sample

RESERVED = "ecommerce.events.v1.StockReserved"


# As service-product builds them: business fields only (publishing stamps the id and time).
def reserved(order_id: str) -> events_pb2.StockReserved:
    return events_pb2.StockReserved(order_id=order_id)


def reservation_failed(order_id: str) -> events_pb2.StockReservationFailed:
    return events_pb2.StockReservationFailed(
        order_id=order_id, product_id=str(uuid.uuid4()), requested=2, available=1
    )


def released(order_id: str) -> events_pb2.StockReleased:
    return events_pb2.StockReleased(order_id=order_id)


# As service-payment builds them.
def authorized(order_id: str) -> events_pb2.PaymentAuthorized:
    return events_pb2.PaymentAuthorized(order_id=order_id, amount_cents=1250, currency="USD")


def declined(order_id: str) -> events_pb2.PaymentDeclined:
    return events_pb2.PaymentDeclined(order_id=order_id, reason="card_declined")


def refunded(order_id: str) -> events_pb2.PaymentRefunded:
    return events_pb2.PaymentRefunded(order_id=order_id, amount_cents=1250, currency="USD")


def voided(order_id: str) -> events_pb2.PaymentVoided:
    return events_pb2.PaymentVoided(order_id=order_id)


async def handled(broker: Broker, shop: Shop, event: Message) -> None:
    """Publish `event` and wait until service-order committed its effect (its inbox claim), or
    acknowledged it as one with no effect and nothing to claim (a version-2 order's
    `stock.reserved`)."""
    event_type = event.DESCRIPTOR.full_name
    before = sample("events_consumed_total", event_type=event_type, outcome="processed")
    await broker.publish(event)

    async def done() -> bool:
        claimed = await shop.orders_db.fetchval(
            "SELECT 1 FROM inbox WHERE consumer = 'service-order' AND event_id = $1",
            uuid.UUID(event.event_id),  # type: ignore[attr-defined]
        )
        processed = sample("events_consumed_total", event_type=event_type, outcome="processed")
        return bool(claimed) or processed > before

    await eventually(done)


async def redelivered(broker: Broker, event: Message) -> None:
    """Publish `event` again and wait until service-order acknowledged it as a duplicate."""
    event_type = event.DESCRIPTOR.full_name
    before = sample("events_consumed_total", event_type=event_type, outcome="duplicate")
    await broker.publish(event)

    async def acknowledged() -> bool:
        return sample("events_consumed_total", event_type=event_type, outcome="duplicate") > before

    await eventually(acknowledged)


async def row(shop: Shop, order_id: str) -> dict[str, Any]:
    found = await shop.orders_db.fetchrow(
        "SELECT status, cancel_reason, updated_at, stock_released_at, saga_version,"
        " payment_status FROM orders WHERE id = $1",
        uuid.UUID(order_id),
    )
    assert found is not None
    return dict(found)


async def placed_order(shop: Shop, user: str, *quantities: int) -> order_pb2.Order:
    await shop.filled_cart(user, *quantities)
    return await shop.checkout(user)


async def version_1_order(shop: Shop, user: str, *quantities: int) -> order_pb2.Order:
    """A PENDING order of saga version 1, as one placed before the payment step is: no payment
    token, no payment status."""
    order = await placed_order(shop, user, *quantities)
    await shop.orders_db.execute(
        "UPDATE orders SET saga_version = 1, payment_token = NULL, payment_status = NULL"
        " WHERE id = $1",
        uuid.UUID(order.id),
    )
    return order


async def cancel(shop: Shop, user: str, order_id: str) -> order_pb2.Order:
    request = order_pb2.CancelOrderRequest(user_id=user, order_id=order_id)
    return (await shop.orders.CancelOrder(request, timeout=5)).order


async def test_stock_reserved_confirms_a_version_1_order_once_with_order_confirmed(
    broker: Broker, shop: Shop, tap: Tap, user: str
) -> None:
    order = await version_1_order(shop, user, 2, 1)
    confirmed_before = sample("orders_total", status="CONFIRMED", reason="none")
    sagas_before = sample("saga_duration_seconds_count", outcome="confirmed")
    event = reserved(order.id)

    await handled(broker, shop, event)
    after_first = await row(shop, order.id)
    await redelivered(broker, event)
    await handled(broker, shop, reserved(order.id))

    assert after_first["status"] == "CONFIRMED"
    assert after_first["cancel_reason"] is None
    assert await row(shop, order.id) == after_first
    [payload] = await shop.outbox(order.id, events_pb2.OrderConfirmed)
    [message] = await tap.wait_for(order.id, events_pb2.OrderConfirmed)
    confirmed = events_pb2.OrderConfirmed.FromString(message.body)
    assert confirmed == events_pb2.OrderConfirmed.FromString(payload)
    assert message.type == "ecommerce.events.v1.OrderConfirmed"
    assert message.message_id == confirmed.event_id
    assert (confirmed.order_id, confirmed.user_id) == (order.id, user)
    assert [(i.product_id, i.quantity, i.unit_price_cents) for i in confirmed.lines] == [
        (i.product_id, i.quantity, i.unit_price_cents) for i in order.items
    ]
    assert confirmed.occurred_at.ToDatetime(tzinfo=UTC) == after_first["updated_at"]
    assert sample("orders_total", status="CONFIRMED", reason="none") == confirmed_before + 1
    assert sample("saga_duration_seconds_count", outcome="confirmed") == sagas_before + 1
    read = await shop.get_order(user, order.id)
    assert read.status == order_pb2.ORDER_STATUS_CONFIRMED
    assert read.payment_status == order_pb2.PAYMENT_STATUS_UNSPECIFIED
    assert after_first["payment_status"] is None


async def test_stock_reserved_leaves_a_version_2_order_waiting_for_its_payment(
    broker: Broker, shop: Shop, user: str
) -> None:
    """Answered by one read: no transaction, nothing written (not even an inbox claim: the event
    can never move a version-2 order, however often it comes)."""
    order = await placed_order(shop, user, 1)
    before = await row(shop, order.id)
    event = reserved(order.id)
    event.event_id = str(uuid.uuid4())

    await handled(broker, shop, event)
    await handled(broker, shop, event)  # again: the same answer

    assert (before["saga_version"], before["status"], before["payment_status"]) == (
        2,
        "PENDING",
        "PENDING",
    )
    assert await row(shop, order.id) == before
    assert await shop.outbox(order.id, events_pb2.OrderConfirmed) == []
    assert not await shop.orders_db.fetchval(
        "SELECT count(*) FROM inbox WHERE event_id = $1", uuid.UUID(event.event_id)
    )


async def test_payment_authorized_confirms_the_order_once_with_order_confirmed(
    broker: Broker, shop: Shop, tap: Tap, user: str
) -> None:
    order = await placed_order(shop, user, 2, 1)
    confirmed_before = sample("orders_total", status="CONFIRMED", reason="none")
    sagas_before = sample("saga_duration_seconds_count", outcome="confirmed")
    await handled(broker, shop, reserved(order.id))
    event = authorized(order.id)

    await handled(broker, shop, event)
    after_first = await row(shop, order.id)
    await redelivered(broker, event)
    await handled(broker, shop, authorized(order.id))
    await handled(broker, shop, reserved(order.id))

    assert (after_first["status"], after_first["cancel_reason"]) == ("CONFIRMED", None)
    assert after_first["payment_status"] == "AUTHORIZED"
    assert await row(shop, order.id) == after_first
    [payload] = await shop.outbox(order.id, events_pb2.OrderConfirmed)
    [message] = await tap.wait_for(order.id, events_pb2.OrderConfirmed)
    confirmed = events_pb2.OrderConfirmed.FromString(message.body)
    assert confirmed == events_pb2.OrderConfirmed.FromString(payload)
    assert (confirmed.order_id, confirmed.user_id) == (order.id, user)
    assert [(i.product_id, i.quantity, i.unit_price_cents) for i in confirmed.lines] == [
        (i.product_id, i.quantity, i.unit_price_cents) for i in order.items
    ]
    assert confirmed.occurred_at.ToDatetime(tzinfo=UTC) == after_first["updated_at"]
    assert sample("orders_total", status="CONFIRMED", reason="none") == confirmed_before + 1
    assert sample("saga_duration_seconds_count", outcome="confirmed") == sagas_before + 1
    read = await shop.get_order(user, order.id)
    assert read.status == order_pb2.ORDER_STATUS_CONFIRMED
    assert read.payment_status == order_pb2.PAYMENT_STATUS_AUTHORIZED


async def test_a_declined_payment_cancels_the_order_payment_declined_once(
    broker: Broker, shop: Shop, tap: Tap, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    declined_before = sample("orders_total", status="CANCELLED", reason="PAYMENT_DECLINED")
    sagas_before = sample("saga_duration_seconds_count", outcome="payment_declined")
    event = declined(order.id)

    await handled(broker, shop, event)
    after_first = await row(shop, order.id)
    await redelivered(broker, event)
    await handled(broker, shop, authorized(order.id))  # never moves a declined payment

    assert (after_first["status"], after_first["cancel_reason"]) == (
        "CANCELLED",
        "PAYMENT_DECLINED",
    )
    assert after_first["payment_status"] == "DECLINED"
    assert await row(shop, order.id) == after_first
    assert await shop.outbox(order.id, events_pb2.OrderConfirmed) == []
    [payload] = await shop.outbox(order.id, events_pb2.OrderCancelled)
    [message] = await tap.wait_for(order.id, events_pb2.OrderCancelled)
    cancelled = events_pb2.OrderCancelled.FromString(message.body)
    assert cancelled == events_pb2.OrderCancelled.FromString(payload)
    assert cancelled.reason == events_pb2.ORDER_CANCEL_REASON_PAYMENT_DECLINED
    assert not cancelled.was_confirmed
    assert sample("orders_total", status="CANCELLED", reason="PAYMENT_DECLINED") == (
        declined_before + 1
    )
    assert sample("saga_duration_seconds_count", outcome="payment_declined") == sagas_before + 1
    read = await shop.get_order(user, order.id)
    assert read.cancel_reason == order_pb2.CANCEL_REASON_PAYMENT_DECLINED
    assert read.payment_status == order_pb2.PAYMENT_STATUS_DECLINED


async def test_a_confirmed_order_cancelled_asks_for_a_refund_and_records_it_once(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    await handled(broker, shop, authorized(order.id))
    cancelled = await cancel(shop, user, order.id)
    event = refunded(order.id)

    await handled(broker, shop, event)
    after_first = await row(shop, order.id)
    await redelivered(broker, event)
    await handled(broker, shop, voided(order.id))  # REFUNDED is final

    assert cancelled.payment_status == order_pb2.PAYMENT_STATUS_AUTHORIZED
    [payload] = await shop.outbox(order.id, events_pb2.OrderCancelled)
    assert events_pb2.OrderCancelled.FromString(payload).was_confirmed
    assert (after_first["status"], after_first["cancel_reason"]) == ("CANCELLED", "USER_CANCELLED")
    assert after_first["payment_status"] == "REFUNDED"
    assert after_first["updated_at"] == cancelled.updated_at.ToDatetime(tzinfo=UTC)
    assert await row(shop, order.id) == after_first
    read = await shop.get_order(user, order.id)
    assert read.payment_status == order_pb2.PAYMENT_STATUS_REFUNDED


async def test_a_pending_order_cancelled_asks_for_a_void_and_a_late_authorisation_changes_nothing(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    cancelled = await cancel(shop, user, order.id)

    await handled(broker, shop, voided(order.id))
    after_void = await row(shop, order.id)
    await handled(broker, shop, authorized(order.id))

    assert cancelled.payment_status == order_pb2.PAYMENT_STATUS_PENDING
    [payload] = await shop.outbox(order.id, events_pb2.OrderCancelled)
    assert not events_pb2.OrderCancelled.FromString(payload).was_confirmed
    assert (after_void["status"], after_void["payment_status"]) == ("CANCELLED", "VOIDED")
    assert await row(shop, order.id) == after_void
    assert await shop.outbox(order.id, events_pb2.OrderConfirmed) == []


async def test_an_authorisation_for_an_order_cancelled_meanwhile_is_recorded_not_confirmed(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    await cancel(shop, user, order.id)  # before the provider answered
    confirmed_before = sample("orders_total", status="CONFIRMED", reason="none")

    await handled(broker, shop, authorized(order.id))
    recorded = await row(shop, order.id)
    await handled(broker, shop, voided(order.id))  # service-payment releases it

    assert (recorded["status"], recorded["cancel_reason"]) == ("CANCELLED", "USER_CANCELLED")
    assert recorded["payment_status"] == "AUTHORIZED"
    assert await shop.outbox(order.id, events_pb2.OrderConfirmed) == []
    assert len(await shop.outbox(order.id, events_pb2.OrderCancelled)) == 1
    assert sample("orders_total", status="CONFIRMED", reason="none") == confirmed_before
    assert (await row(shop, order.id))["payment_status"] == "VOIDED"


async def test_a_refund_or_void_reported_for_a_confirmed_order_changes_nothing(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    await handled(broker, shop, authorized(order.id))
    confirmed = await row(shop, order.id)

    for event in (refunded(order.id), voided(order.id), declined(order.id)):
        await handled(broker, shop, event)

    assert (confirmed["status"], confirmed["payment_status"]) == ("CONFIRMED", "AUTHORIZED")
    assert await row(shop, order.id) == confirmed
    assert await shop.outbox(order.id, events_pb2.OrderCancelled) == []


async def test_payment_events_for_a_version_1_order_change_nothing(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await version_1_order(shop, user, 1)
    before = await row(shop, order.id)

    for event in (authorized(order.id), declined(order.id), voided(order.id)):
        await handled(broker, shop, event)

    assert await row(shop, order.id) == before
    assert before["status"] == "PENDING"
    assert await shop.outbox(order.id, events_pb2.OrderConfirmed) == []
    assert await shop.outbox(order.id, events_pb2.OrderCancelled) == []


async def test_a_failed_reservation_cancels_the_order_out_of_stock_once(
    broker: Broker, shop: Shop, tap: Tap, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    failed_before = sample("orders_total", status="CANCELLED", reason="OUT_OF_STOCK")
    event = reservation_failed(order.id)

    await handled(broker, shop, event)
    after_first = await row(shop, order.id)
    await redelivered(broker, event)
    await handled(broker, shop, reserved(order.id))  # too late: stays cancelled

    assert (after_first["status"], after_first["cancel_reason"]) == ("CANCELLED", "OUT_OF_STOCK")
    assert await row(shop, order.id) == after_first
    assert await shop.outbox(order.id, events_pb2.OrderConfirmed) == []
    [payload] = await shop.outbox(order.id, events_pb2.OrderCancelled)
    [message] = await tap.wait_for(order.id, events_pb2.OrderCancelled)
    cancelled = events_pb2.OrderCancelled.FromString(message.body)
    assert cancelled == events_pb2.OrderCancelled.FromString(payload)
    assert cancelled.reason == events_pb2.ORDER_CANCEL_REASON_OUT_OF_STOCK
    assert (cancelled.order_id, cancelled.user_id) == (order.id, user)
    assert sample("orders_total", status="CANCELLED", reason="OUT_OF_STOCK") == failed_before + 1
    read = await shop.get_order(user, order.id)
    assert read.cancel_reason == order_pb2.CANCEL_REASON_OUT_OF_STOCK


async def test_a_void_that_comes_before_the_failed_reservation_is_recorded_not_lost(
    broker: Broker, shop: Shop, user: str
) -> None:
    """service-payment voids on the same `stock.reservation_failed` that cancels the order, so
    its `payment.voided` may be handled first (another replica, a slower delivery): recorded on
    the still PENDING order, which the failed reservation then cancels."""
    order = await placed_order(shop, user, 1)

    await handled(broker, shop, voided(order.id))
    after_void = await row(shop, order.id)
    await handled(broker, shop, reservation_failed(order.id))

    assert (after_void["status"], after_void["payment_status"]) == ("PENDING", "VOIDED")
    final = await row(shop, order.id)
    assert (final["status"], final["cancel_reason"], final["payment_status"]) == (
        "CANCELLED",
        "OUT_OF_STOCK",
        "VOIDED",
    )
    read = await shop.get_order(user, order.id)
    assert read.payment_status == order_pb2.PAYMENT_STATUS_VOIDED


async def test_stock_reserved_after_the_user_cancelled_changes_nothing(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await version_1_order(shop, user, 1)
    await cancel(shop, user, order.id)
    cancelled = await row(shop, order.id)

    await handled(broker, shop, reserved(order.id))

    assert await row(shop, order.id) == cancelled
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("CANCELLED", "USER_CANCELLED")
    assert await shop.outbox(order.id, events_pb2.OrderConfirmed) == []
    assert len(await shop.outbox(order.id, events_pb2.OrderCancelled)) == 1


async def test_a_failed_reservation_after_confirmation_changes_nothing(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    await handled(broker, shop, authorized(order.id))
    confirmed = await row(shop, order.id)

    await handled(broker, shop, reservation_failed(order.id))

    assert await row(shop, order.id) == confirmed
    assert confirmed["status"] == "CONFIRMED"
    assert await shop.outbox(order.id, events_pb2.OrderCancelled) == []


async def test_saga_events_for_an_unknown_order_are_consumed_without_effect(
    broker: Broker, shop: Shop
) -> None:
    unknown = str(uuid.uuid4())

    for event in (
        reserved(unknown),
        reservation_failed(unknown),
        released(unknown),
        authorized(unknown),
        declined(unknown),
        refunded(unknown),
        voided(unknown),
    ):
        await handled(broker, shop, event)

    assert (
        await shop.orders_db.fetchval(
            "SELECT count(*) FROM orders WHERE id = $1", uuid.UUID(unknown)
        )
        == 0
    )
    assert (
        await shop.orders_db.fetchval(
            "SELECT count(*) FROM outbox WHERE correlation_id = $1", unknown
        )
        == 0
    )


async def test_released_stock_is_recorded_once_without_changing_the_status(
    broker: Broker, shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user, 1)
    await cancel(shop, user, order.id)
    before = await row(shop, order.id)
    event = released(order.id)

    await handled(broker, shop, event)
    recorded = await row(shop, order.id)
    await redelivered(broker, event)
    await handled(broker, shop, released(order.id))

    assert before["stock_released_at"] is None
    assert recorded["stock_released_at"] is not None
    assert {k: v for k, v in recorded.items() if k != "stock_released_at"} == {
        k: v for k, v in before.items() if k != "stock_released_at"
    }
    assert await row(shop, order.id) == recorded


async def test_an_event_without_a_valid_order_id_goes_to_the_dead_letter_queue(
    broker: Broker, shop: Shop, amqp_settings: AmqpSettings
) -> None:
    poison = events_pb2.StockReserved(event_id=str(uuid.uuid4()), order_id="not-a-uuid")
    dead_letters = f"{amqp_settings.queue_prefix}service-order.dlq"

    await broker.publish(poison)

    connection = await aio_pika.connect(amqp_settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(dead_letters, passive=True)
        found = None

        async def arrived() -> bool:
            nonlocal found
            message = await queue.get(no_ack=True, fail=False)
            if message is not None and message.message_id == poison.event_id:
                found = message
            return found is not None

        await eventually(arrived)
    assert found is not None
    headers = found.headers or {}
    assert headers.get("x-dead-letter-reason") == "poison"
    assert "order_id is not a UUID" in str(headers.get("x-dead-letter-error"))
    assert found.type == RESERVED
    assert (
        await shop.orders_db.fetchval(
            "SELECT count(*) FROM inbox WHERE event_id = $1", uuid.UUID(poison.event_id)
        )
        == 0
    )
