"""What an outgoing event carries beside its body, derived from the message and its declaration:
the event id, the AMQP type, the routing key and the correlation id, checked against what AMQP
can carry.

The producer builds the event's business fields only. Publishing stamps the rest: an empty
`event_id` becomes a new UUID, and an unset `occurred_at` the time of the transaction that
produced the event (the unit of work's database clock; see `chassis.unit_of_work`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from chassis.messaging import codec
from chassis.messaging.declaration import declaration_of


@dataclass(frozen=True, slots=True)
class Envelope:
    """The AMQP properties of one event (besides content type, timestamp and trace headers)."""

    event_id: uuid.UUID
    event_type: str
    routing_key: str
    correlation_id: str


def stamp(event: Message) -> Envelope:
    """Give `event` a new event id when it has none, and derive its envelope. Raises
    `UndeclaredEvent` for a message that is no declared event, `InvalidEventId` for an event id
    that is not a UUID, `InvalidEnvelope` for a correlation id AMQP cannot carry (empty, or over
    255 bytes): a bad event fails its producer's transaction, never a relay later."""
    declaration = declaration_of(event)
    fields: Any = event  # a declared event: these fields exist (checked by its declaration)
    if not fields.event_id:
        fields.event_id = str(uuid.uuid4())
    correlation_id = str(getattr(event, declaration.correlation_field))
    if not correlation_id:
        raise codec.InvalidEnvelope(
            f"{declaration.type_name}.{declaration.correlation_field} (the correlation id) is empty"
        )
    return Envelope(
        event_id=codec.event_id_of(event),
        event_type=codec.check_short_string(declaration.type_name, "event type"),
        routing_key=declaration.routing_key,
        correlation_id=codec.check_short_string(correlation_id, "correlation_id"),
    )


def has_time(event: Message) -> bool:
    """Whether the producer set the event's `occurred_at`."""
    return event.HasField("occurred_at")


def stamp_time(event: Message, moment: datetime) -> None:
    """Set `occurred_at` to `moment` unless the producer set it (a timezone-aware datetime)."""
    if not has_time(event):
        _time_of(event).FromDatetime(moment)


def occurred_at(event: Message) -> datetime:
    """The event's `occurred_at` as an aware UTC datetime (the AMQP timestamp)."""
    return _time_of(event).ToDatetime(tzinfo=UTC)


def _time_of(event: Message) -> Timestamp:
    fields: Any = event  # a declared event has a Timestamp `occurred_at`
    return cast(Timestamp, fields.occurred_at)
