"""Specs of an event declared once, in its proto: publishing and subscribing take only the message
type, and the chassis derives the routing key, the correlation id, the event id and the time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aio_pika
import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from chassis.messaging import (
    Broker,
    EventConsumer,
    InvalidEnvelope,
    OutboxRelay,
    Subscription,
    UndeclaredEvent,
    declaration_of,
)
from chassis.messaging.declaration import bindings_of, catalogue
from chassis.unit_of_work import UnitOfWork
from ecommerce.events.v1 import events_pb2, options_pb2

from .conftest import Tap
from .events import order_created
from .support import consumed, consuming, eventually, running


async def ignore(_: Message) -> None:
    return None


def test_the_routing_key_and_correlation_field_are_read_from_the_events_proto_option() -> None:
    declared = declaration_of(events_pb2.StockReservationFailed)

    assert declared.type_name == "ecommerce.events.v1.StockReservationFailed"
    assert declared.routing_key == "stock.reservation_failed"
    assert declared.correlation_field == "order_id"
    assert Subscription.of(events_pb2.OrderCreated, ignore).routing_key == "order.created"


async def test_publish_takes_the_event_alone_and_the_broker_gets_key_and_ids_from_it(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    order_id = str(uuid.uuid4())
    event = events_pb2.StockReserved(order_id=order_id)
    async with UnitOfWork(pool) as uow:
        uow.publish(event)
        transaction_time = await uow.connection.fetchval("SELECT now()")

    async with running(OutboxRelay(database_url, broker)):
        [message] = await tap.wait_for(1)

    sent = events_pb2.StockReserved.FromString(message.body)
    assert message.routing_key == "stock.reserved"
    assert message.correlation_id == order_id
    assert message.message_id == sent.event_id == event.event_id
    assert uuid.UUID(sent.event_id).version == 4
    assert sent.occurred_at.ToDatetime(tzinfo=UTC) == transaction_time
    assert message.timestamp == transaction_time.replace(microsecond=0)


async def test_an_event_id_and_time_the_producer_set_are_kept(pool: asyncpg.Pool) -> None:
    event = order_created()
    chosen_id, chosen_time = event.event_id, event.occurred_at.ToDatetime(tzinfo=UTC)
    async with UnitOfWork(pool) as uow:
        uow.publish(event)

    payload = await pool.fetchval("SELECT payload FROM outbox")
    stored = events_pb2.OrderCreated.FromString(payload)
    assert (stored.event_id, stored.occurred_at.ToDatetime(tzinfo=UTC)) == (chosen_id, chosen_time)


async def test_events_of_one_transaction_share_its_time(pool: asyncpg.Pool) -> None:
    async with UnitOfWork(pool) as uow:
        for _ in range(3):
            uow.publish(events_pb2.StockReleased(order_id=str(uuid.uuid4())))

    payloads = await pool.fetch("SELECT payload FROM outbox")
    times = {
        events_pb2.StockReleased.FromString(row["payload"]).occurred_at.ToDatetime()
        for row in payloads
    }
    assert len(payloads) == 3
    assert len(times) == 1


async def test_an_event_after_an_inbox_claim_takes_the_claims_time_without_asking_again(
    pool: asyncpg.Pool,
) -> None:
    """The claim returns the transaction's time; the outbox stamps the event with it instead of
    asking the server once more (a round trip saved)."""
    statements: list[str] = []
    cause = events_pb2.OrderCreated(order_id=str(uuid.uuid4()), event_id=str(uuid.uuid4()))

    def log(record: LoggedQuery) -> None:
        statements.append(record.query)

    async with UnitOfWork(pool, consumer="spec") as uow:
        uow.connection.add_query_logger(log)  # this test's pool: gone with it
        assert await uow.inbox.claim(cause)
        uow.publish(events_pb2.StockReserved(order_id=cause.order_id))
    sent_by_the_transaction = statements[: statements.index("COMMIT;")]

    claimed_at = await pool.fetchval("SELECT processed_at FROM inbox WHERE consumer = 'spec'")
    payload = await pool.fetchval("SELECT payload FROM outbox")
    sent = events_pb2.StockReserved.FromString(payload)
    assert sent.occurred_at.ToDatetime(tzinfo=UTC) == claimed_at
    assert "SELECT now()" not in sent_by_the_transaction
    assert any(s.startswith("INSERT INTO outbox") for s in sent_by_the_transaction)


async def test_publishing_without_an_outbox_stamps_the_wall_clock(broker: Broker, tap: Tap) -> None:
    before = datetime.now(UTC)
    await broker.publish(events_pb2.OrderConfirmed(order_id=str(uuid.uuid4())))
    [message] = await tap.wait_for(1)

    sent = events_pb2.OrderConfirmed.FromString(message.body)
    occurred_at = sent.occurred_at.ToDatetime(tzinfo=UTC)
    assert before <= occurred_at <= datetime.now(UTC)
    assert message.timestamp == occurred_at.replace(microsecond=0)
    assert message.routing_key == "order.confirmed"


async def test_a_message_that_is_no_event_is_refused_at_publish_and_subscribe(
    pool: asyncpg.Pool, broker: Broker
) -> None:
    line = events_pb2.OrderLine(product_id=str(uuid.uuid4()), quantity=1)

    with pytest.raises(UndeclaredEvent, match="OrderLine has no `event` option"):
        Subscription.of(events_pb2.OrderLine, ignore)
    with pytest.raises(UndeclaredEvent):
        await broker.publish(line)
    with pytest.raises(UndeclaredEvent):
        async with UnitOfWork(pool) as uow:
            uow.publish(line)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_event_without_its_correlation_id_is_refused_in_its_own_transaction(
    pool: asyncpg.Pool,
) -> None:
    with pytest.raises(InvalidEnvelope, match="order_id"):
        async with UnitOfWork(pool) as uow:
            uow.publish(events_pb2.OrderCreated(user_id=str(uuid.uuid4())))
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


def test_subscribing_one_event_twice_is_refused(broker: Broker) -> None:
    twice = [Subscription.of(events_pb2.OrderCreated, ignore)] * 2

    with pytest.raises(ValueError, match="OrderCreated is subscribed twice"):
        EventConsumer(broker, "orders", twice)


def declared_message(name: str, option: str, fields: dict[str, str]) -> type[Message]:
    """A message type built at run time with the `event` option and the fields given
    (name -> "string" or "timestamp"), for declarations the platform's protos never hold."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"spec/{name}.proto",
        package="spec.declarations",
        syntax="proto3",
        dependency=["ecommerce/events/v1/options.proto", "google/protobuf/timestamp.proto"],
    )
    message = file.message_type.add(name=name)
    routing_key, _, rest = option.partition("|")
    correlation_field, _, consumers = rest.partition("|")
    declared = message.options.Extensions[options_pb2.event]
    declared.routing_key, declared.correlation_field = routing_key, correlation_field
    declared.consumers.extend(consumers.split(",") if consumers else [])
    for number, (field, kind) in enumerate(fields.items(), start=1):
        added = message.field.add(name=field, number=number, label=1)
        if kind == "string":
            added.type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
        else:
            added.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            added.type_name = ".google.protobuf.Timestamp"
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"spec.declarations.{name}"))


WELL_FORMED = {"event_id": "string", "order_id": "string", "occurred_at": "timestamp"}


@pytest.mark.parametrize(
    ("option", "fields", "why"),
    [
        ("order.*|order_id", WELL_FORMED, "not dot-separated words"),
        ("Order.Created|order_id", WELL_FORMED, "not dot-separated words"),
        ("order.created|cart_id", WELL_FORMED, "needs a singular string field 'cart_id'"),
        (
            "order.created|order_id",
            {"event_id": "string", "order_id": "timestamp", "occurred_at": "timestamp"},
            "needs a singular string field 'order_id'",
        ),
        (
            "order.created|order_id",
            {"order_id": "string", "occurred_at": "timestamp"},
            "needs a singular string field 'event_id'",
        ),
        (
            "order.created|order_id",
            {"event_id": "string", "order_id": "string"},
            "needs a singular message field 'occurred_at'",
        ),
        ("order.created|order_id|svc-a,svc-a", WELL_FORMED, "name a service twice or none"),
    ],
    ids=[
        "wildcard key",
        "capitals",
        "no such field",
        "not a string",
        "no id",
        "no time",
        "a consumer twice",
    ],
)
def test_a_malformed_declaration_is_refused_naming_what_is_wrong(
    option: str, fields: dict[str, str], why: str
) -> None:
    name = f"Bad{uuid.uuid4().hex[:8]}"
    event_type = declared_message(name, option, fields)

    with pytest.raises(UndeclaredEvent, match=why):
        Subscription.of(event_type, ignore)


def test_a_well_formed_declaration_of_any_package_is_an_event() -> None:
    option = "spec.done|order_id|svc-a,svc-b"
    event_type = declared_message(f"Good{uuid.uuid4().hex[:8]}", option, WELL_FORMED)

    assert declaration_of(event_type).routing_key == "spec.done"
    assert declaration_of(event_type).consumers == ("svc-a", "svc-b")


def test_each_consumers_bindings_are_the_keys_of_the_events_that_name_it() -> None:
    bindings = bindings_of(events_pb2)

    assert bindings["service-cart"] == ("order.confirmed",)
    assert bindings["service-product"] == ("order.created", "order.cancelled")
    assert "payment.authorized" in bindings["service-order"]
    assert "payment.authorized" not in bindings["service-payment"]
    # Every event of the catalogue has a consumer.
    assert {key for keys in bindings.values() for key in keys} == {
        declared.routing_key for declared in catalogue(events_pb2)
    }


def with_unknown_field(event: Message) -> bytes:
    """`event` as a newer producer would send it: with field 99 (a string) its consumer's
    generated code does not know."""
    value = b"gift-wrapped"
    return event.SerializeToString() + b"\x9a\x06" + bytes([len(value)]) + value


async def test_a_consumer_handles_an_event_carrying_a_field_it_does_not_know(
    broker: Broker,
) -> None:
    """A rolling restart: a new replica publishes a field an old one does not know yet. The old
    one decodes the fields it knows, keeps the rest, and handles the event (never poison)."""
    received: list[events_pb2.OrderCreated] = []

    async def record(event: events_pb2.OrderCreated) -> None:
        received.append(event)

    consumer = EventConsumer(broker, "orders", [Subscription.of(events_pb2.OrderCreated, record)])
    event = order_created(quantity=4)
    body = with_unknown_field(event)
    processed = consumed("processed")
    async with consuming(consumer):
        channel = await broker.connection.channel()
        exchange = await channel.get_exchange(broker.settings.events_exchange)
        await exchange.publish(
            aio_pika.Message(
                body,
                type="ecommerce.events.v1.OrderCreated",
                message_id=event.event_id,
                correlation_id=event.order_id,
            ),
            routing_key=declaration_of(events_pb2.OrderCreated).routing_key,
        )

        async def handled() -> bool:
            return consumed("processed") - processed == 1

        await eventually(handled)
        await channel.close()

    [decoded] = received
    assert (decoded.order_id, decoded.lines[0].quantity) == (event.order_id, 4)
    assert decoded.SerializeToString() == body  # what it did not know, it kept
    assert await broker.queue_depth(consumer.dead_letter_queue_name) == 0
