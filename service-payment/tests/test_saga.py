"""service-payment's part of the saga over a real broker, a real provider process and its own
database: the order and stock events published to its exchange (twice, and in odd orders) make
each payment charge at most once, with one payment event per outcome."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from google.protobuf.message import Message

from chassis.messaging import Broker
from chassis.testing.events import EventTap
from ecommerce.events.v1 import events_pb2

from .conftest import PAYMENT_EVENTS, Provider
from .support import eventually, sample


# As service-order and service-product build them: business fields only.
def created(
    order_id: str, user: str, *, token: str = "pm_card_ok", total: int = 2500
) -> events_pb2.OrderCreated:
    return events_pb2.OrderCreated(
        order_id=order_id,
        user_id=user,
        lines=[
            events_pb2.OrderLine(
                product_id=str(uuid.uuid4()), quantity=2, unit_price_cents=total // 2
            )
        ],
        total_cents=total,
        currency="EUR",
        payment_token=token,
    )


def reserved(order_id: str) -> events_pb2.StockReserved:
    return events_pb2.StockReserved(order_id=order_id)


def reservation_failed(order_id: str) -> events_pb2.StockReservationFailed:
    return events_pb2.StockReservationFailed(
        order_id=order_id, product_id=str(uuid.uuid4()), requested=2, available=1
    )


def confirmed(order_id: str, user: str) -> events_pb2.OrderConfirmed:
    return events_pb2.OrderConfirmed(order_id=order_id, user_id=user)


def cancelled(
    order_id: str, user: str, *, was_confirmed: bool = False
) -> events_pb2.OrderCancelled:
    reason = (
        events_pb2.ORDER_CANCEL_REASON_USER_CANCELLED
        if was_confirmed
        else events_pb2.ORDER_CANCEL_REASON_TIMEOUT
    )
    return events_pb2.OrderCancelled(
        order_id=order_id, user_id=user, reason=reason, was_confirmed=was_confirmed
    )


async def handled(broker: Broker, db: asyncpg.Pool, event: Message) -> None:
    """Publish `event` and wait until service-payment committed its effect (its inbox claim)."""
    await broker.publish(event)

    async def claimed() -> bool:
        return bool(
            await db.fetchval(
                "SELECT 1 FROM inbox WHERE consumer = 'service-payment' AND event_id = $1",
                uuid.UUID(event.event_id),  # type: ignore[attr-defined]
            )
        )

    await eventually(claimed)


async def redelivered(broker: Broker, event: Message) -> None:
    """Publish `event` again and wait until service-payment acknowledged it as a duplicate."""
    event_type = event.DESCRIPTOR.full_name
    before = sample("events_consumed_total", event_type=event_type, outcome="duplicate")
    await broker.publish(event)

    async def acknowledged() -> bool:
        return sample("events_consumed_total", event_type=event_type, outcome="duplicate") > before

    await eventually(acknowledged)


async def payment(db: asyncpg.Pool, order_id: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM payments WHERE order_id = $1", uuid.UUID(order_id))
    assert row is not None
    return dict(row)


async def settled(
    db: asyncpg.Pool, order_id: str, state: str, within: float = 20.0
) -> dict[str, Any]:
    """The payment once it is in `state` with nothing left to do."""

    async def there() -> bool:
        row = await db.fetchrow(
            "SELECT state, next_attempt_at FROM payments WHERE order_id = $1", uuid.UUID(order_id)
        )
        return row is not None and row["state"] == state and row["next_attempt_at"] is None

    await eventually(there, within=within)
    return await payment(db, order_id)


def published(tap: EventTap, order_id: str) -> list[str]:
    """The payment events published for the order, by type name, in the order seen."""
    names = {cls.DESCRIPTOR.full_name for cls in PAYMENT_EVENTS}
    return [
        e.event_type.rsplit(".", 1)[1]
        for e in tap.matching(correlation_id=order_id)
        if e.event_type in names
    ]


async def outbox(db: asyncpg.Pool, order_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT event_type FROM outbox WHERE correlation_id = $1 ORDER BY id", order_id
    )
    return [row["event_type"].rsplit(".", 1)[1] for row in rows]


async def test_authorised_when_stock_is_reserved_then_captured_on_confirmation(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    captured_before = sample("payments_total", state="CAPTURED")
    await handled(broker, payments_db, created(order_id, user))
    intent = await payment(payments_db, order_id)
    await handled(broker, payments_db, reserved(order_id))
    [authorized] = await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    await handled(broker, payments_db, confirmed(order_id, user))
    row = await settled(payments_db, order_id, "CAPTURED")

    assert (intent["state"], intent["amount_cents"], str(intent["currency"])) == (
        "PENDING",
        2500,
        "EUR",
    )
    assert isinstance(authorized.event, events_pb2.PaymentAuthorized)
    assert (authorized.event.order_id, authorized.event.amount_cents) == (order_id, 2500)
    assert authorized.event.currency == "EUR"
    assert authorized.routing_key == "payment.authorized"
    assert row["provider_attempts"] == 2
    assert await provider.ledger(order_id) == [("authorize", 2500), ("capture", 2500)]
    assert await outbox(payments_db, order_id) == ["PaymentAuthorized"]  # a capture: no event
    assert published(tap, order_id) == ["PaymentAuthorized"]
    assert sample("payments_total", state="CAPTURED") == captured_before + 1
    assert sample("payment_provider_calls_total", operation="capture", outcome="captured") >= 1


async def test_stock_reserved_before_order_created_authorises_once_the_intent_comes(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, reserved(order_id))
    early = await payment(payments_db, order_id)
    await handled(broker, payments_db, created(order_id, user))
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)

    assert (early["state"], early["intent_known"], early["stock_reserved"]) == (
        "PENDING",
        False,
        True,
    )
    assert (await settled(payments_db, order_id, "AUTHORIZED"))["provider_attempts"] == 1
    assert await provider.ledger(order_id) == [("authorize", 2500)]


async def test_a_declined_card_publishes_payment_declined_and_charges_nothing(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user, token="pm_card_declined"))
    await handled(broker, payments_db, reserved(order_id))
    [declined] = await tap.wait_for(events_pb2.PaymentDeclined, correlation_id=order_id)
    row = await settled(payments_db, order_id, "DECLINED")
    # The order is then cancelled for the decline: nothing more happens.
    await handled(broker, payments_db, cancelled(order_id, user))

    assert isinstance(declined.event, events_pb2.PaymentDeclined)
    assert declined.event.reason == "card_declined"
    assert row["decline_reason"] == "card_declined"
    assert (await payment(payments_db, order_id))["state"] == "DECLINED"
    assert await provider.ledger(order_id) == []
    assert await outbox(payments_db, order_id) == ["PaymentDeclined"]


async def test_a_flaky_card_is_retried_with_backoff_until_authorised(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    unavailable_before = sample(
        "payment_provider_calls_total", operation="authorize", outcome="unavailable"
    )
    await handled(broker, payments_db, created(order_id, user, token="pm_card_flaky"))
    await handled(broker, payments_db, reserved(order_id))
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    row = await settled(payments_db, order_id, "AUTHORIZED")

    assert row["provider_attempts"] == 3
    assert row["consecutive_failures"] == 0
    assert (
        sample("payment_provider_calls_total", operation="authorize", outcome="unavailable")
        == unavailable_before + 2
    )
    assert await provider.ledger(order_id) == [("authorize", 2500)]
    assert await outbox(payments_db, order_id) == ["PaymentAuthorized"]


async def test_duplicated_events_change_nothing(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    events: list[Message] = [created(order_id, user), reserved(order_id)]
    for event in events:
        await handled(broker, payments_db, event)
        await redelivered(broker, event)
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    authorised = await settled(payments_db, order_id, "AUTHORIZED")
    confirmation = confirmed(order_id, user)
    await handled(broker, payments_db, confirmation)
    await redelivered(broker, confirmation)
    captured = await settled(payments_db, order_id, "CAPTURED")
    # The same facts again under new event ids (a producer that published twice) do nothing.
    for event in (created(order_id, user), reserved(order_id), confirmed(order_id, user)):
        await handled(broker, payments_db, event)

    assert authorised["provider_attempts"] == 1
    assert await payment(payments_db, order_id) == captured
    assert await provider.ledger(order_id) == [("authorize", 2500), ("capture", 2500)]
    assert await outbox(payments_db, order_id) == ["PaymentAuthorized"]


async def test_a_cancellation_before_order_created_is_remembered_and_closes_the_intent(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, cancelled(order_id, user))
    remembered = await payment(payments_db, order_id)
    await handled(broker, payments_db, reserved(order_id))
    await handled(broker, payments_db, created(order_id, user))
    [voided] = await tap.wait_for(events_pb2.PaymentVoided, correlation_id=order_id)
    row = await payment(payments_db, order_id)

    assert (remembered["state"], remembered["cancel_requested"]) == ("PENDING", True)
    assert voided.event == events_pb2.PaymentVoided(
        order_id=order_id,
        event_id=voided.message_id,
        occurred_at=voided.event.occurred_at,  # type: ignore[union-attr]
    )
    assert (row["state"], row["provider_attempts"], row["next_attempt_at"]) == ("VOIDED", 0, None)
    assert (await provider.client.get(f"/v1/authorizations/{order_id}")).status_code == 404
    assert await outbox(payments_db, order_id) == ["PaymentVoided"]


async def test_a_failed_reservation_closes_the_intent_without_the_provider(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user))
    await handled(broker, payments_db, reservation_failed(order_id))
    await tap.wait_for(events_pb2.PaymentVoided, correlation_id=order_id)
    # service-order then cancels the order (OUT_OF_STOCK): already closed.
    await handled(broker, payments_db, cancelled(order_id, user))

    row = await payment(payments_db, order_id)
    assert (row["state"], row["provider_attempts"]) == ("VOIDED", 0)
    assert (await provider.client.get(f"/v1/authorizations/{order_id}")).status_code == 404
    assert await outbox(payments_db, order_id) == ["PaymentVoided"]


async def test_a_cancellation_of_an_authorised_unconfirmed_order_voids_it(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user))
    await handled(broker, payments_db, reserved(order_id))
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    await handled(broker, payments_db, cancelled(order_id, user))
    await tap.wait_for(events_pb2.PaymentVoided, correlation_id=order_id)
    await settled(payments_db, order_id, "VOIDED")
    await handled(broker, payments_db, confirmed(order_id, user))  # too late: nothing

    assert (await payment(payments_db, order_id))["state"] == "VOIDED"
    assert await provider.ledger(order_id) == [("authorize", 2500), ("void", 2500)]
    assert await outbox(payments_db, order_id) == ["PaymentAuthorized", "PaymentVoided"]


async def test_a_cancellation_after_confirmation_refunds_once(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user))
    await handled(broker, payments_db, reserved(order_id))
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    await handled(broker, payments_db, confirmed(order_id, user))
    await settled(payments_db, order_id, "CAPTURED")
    cancellation = cancelled(order_id, user, was_confirmed=True)
    await handled(broker, payments_db, cancellation)
    await redelivered(broker, cancellation)
    await handled(broker, payments_db, cancelled(order_id, user, was_confirmed=True))
    [refunded] = await tap.wait_for(events_pb2.PaymentRefunded, correlation_id=order_id)
    row = await settled(payments_db, order_id, "REFUNDED")

    assert isinstance(refunded.event, events_pb2.PaymentRefunded)
    assert (refunded.event.amount_cents, refunded.event.currency) == (2500, "EUR")
    assert row["provider_attempts"] == 3
    assert await provider.ledger(order_id) == [
        ("authorize", 2500),
        ("capture", 2500),
        ("refund", 2500),
    ]
    assert await outbox(payments_db, order_id) == ["PaymentAuthorized", "PaymentRefunded"]


async def test_a_confirmed_cancellation_arriving_before_order_confirmed_still_refunds(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user))
    await handled(broker, payments_db, reserved(order_id))
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    await handled(broker, payments_db, cancelled(order_id, user, was_confirmed=True))
    await tap.wait_for(events_pb2.PaymentRefunded, correlation_id=order_id)
    await settled(payments_db, order_id, "REFUNDED")
    await handled(broker, payments_db, confirmed(order_id, user))  # late: nothing captured

    assert (await payment(payments_db, order_id))["state"] == "REFUNDED"
    # Nothing had been captured: the hold was released; captured minus refunded is 0.
    assert await provider.ledger(order_id) == [("authorize", 2500), ("void", 2500)]
    assert await outbox(payments_db, order_id) == ["PaymentAuthorized", "PaymentRefunded"]


async def test_a_cancellation_during_an_authorisation_in_flight_ends_voided(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user, token="pm_card_slow"))
    await handled(broker, payments_db, reserved(order_id))

    async def in_flight() -> bool:
        """Leased by the worker: the call is under way (the provider sleeps before answering)."""
        return bool(
            await payments_db.fetchval(
                "SELECT state = 'AUTHORIZING' AND next_attempt_at > now() FROM payments"
                " WHERE order_id = $1",
                uuid.UUID(order_id),
            )
        )

    await eventually(in_flight)
    await handled(broker, payments_db, cancelled(order_id, user))
    await tap.wait_for(events_pb2.PaymentVoided, correlation_id=order_id)
    row = await settled(payments_db, order_id, "VOIDED")

    assert row["state"] == "VOIDED"
    ledger = await provider.ledger(order_id)
    assert ledger in ([], [("authorize", 2500), ("void", 2500)])
    authorization = (await provider.client.get(f"/v1/authorizations/{order_id}")).json()
    assert authorization["status"] == "voided"
    assert published(tap, order_id)[-1] == "PaymentVoided"
    assert (await outbox(payments_db, order_id)).count("PaymentVoided") == 1


async def test_an_order_without_a_payment_token_is_ignored(
    broker: Broker, payments_db: asyncpg.Pool, user: str, order_id: str
) -> None:
    await handled(broker, payments_db, created(order_id, user, token=""))

    assert (
        await payments_db.fetchval(
            "SELECT count(*) FROM payments WHERE order_id = $1", uuid.UUID(order_id)
        )
        == 0
    )


async def test_the_crash_window_a_retry_gets_the_stored_outcome_and_charges_once(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    """service-payment called the provider, the provider authorised, and the process died before
    it committed: the provider already holds the key when the authorisation is made again."""
    before = await provider.client.post(
        "/v1/authorizations",
        json={
            "idempotency_key": order_id,
            "payment_token": "pm_card_ok",
            "amount_cents": 2500,
            "currency": "EUR",
        },
    )
    await handled(broker, payments_db, created(order_id, user))
    await handled(broker, payments_db, reserved(order_id))
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    await handled(broker, payments_db, confirmed(order_id, user))
    await settled(payments_db, order_id, "CAPTURED")

    assert before.json() == {"status": "authorized"}
    assert await provider.ledger(order_id) == [("authorize", 2500), ("capture", 2500)]


@pytest.mark.slow
async def test_a_provider_killed_and_restarted_mid_saga_charges_once(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    provider: Provider,
    user: str,
    order_id: str,
) -> None:
    await provider.kill()
    try:
        await handled(broker, payments_db, created(order_id, user))
        await handled(broker, payments_db, reserved(order_id))

        async def retried() -> bool:
            return (await payment(payments_db, order_id))["provider_attempts"] >= 2

        await eventually(retried)
    finally:
        await provider.start()
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    await handled(broker, payments_db, confirmed(order_id, user))
    row = await settled(payments_db, order_id, "CAPTURED")

    assert row["provider_attempts"] >= 4
    assert await provider.ledger(order_id) == [("authorize", 2500), ("capture", 2500)]
    assert await outbox(payments_db, order_id) == ["PaymentAuthorized"]


async def test_the_provider_ledger_matches_the_confirmed_orders_to_the_cent(
    broker: Broker, payments_db: asyncpg.Pool, tap: EventTap, provider: Provider, user: str
) -> None:
    """Several orders, some confirmed, one confirmed then cancelled, one declined, one cancelled
    before authorisation: captured minus refunded is the confirmed orders' total."""
    plans = {
        str(uuid.uuid4()): ("pm_card_ok", 1999, "confirm"),
        str(uuid.uuid4()): ("pm_card_flaky", 3001, "confirm"),
        str(uuid.uuid4()): ("pm_card_ok", 4500, "confirm_then_cancel"),
        str(uuid.uuid4()): ("pm_card_declined", 700, "declined"),
        str(uuid.uuid4()): ("pm_card_ok", 800, "cancel"),
    }
    for order, (token, total, _) in plans.items():
        await broker.publish(created(order, user, token=token, total=total))
        await broker.publish(reserved(order))
    for order, (_, _, plan) in plans.items():
        if plan == "declined":
            await tap.wait_for(events_pb2.PaymentDeclined, correlation_id=order)
            continue
        await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order)
        if plan.startswith("confirm"):
            await broker.publish(confirmed(order, user))
            await settled(payments_db, order, "CAPTURED")
        if plan.endswith("cancel"):
            await broker.publish(cancelled(order, user, was_confirmed=plan != "cancel"))
    for order, (_, _, plan) in plans.items():
        final = {
            "confirm": "CAPTURED",
            "confirm_then_cancel": "REFUNDED",
            "declined": "DECLINED",
            "cancel": "VOIDED",
        }[plan]
        await settled(payments_db, order, final)

    money = 0
    for order in plans:
        for kind, amount in await provider.ledger(order):
            money += {"capture": amount, "refund": -amount}.get(kind, 0)
    assert money == 1999 + 3001
