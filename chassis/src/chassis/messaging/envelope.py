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

from google.protobuf.message import Message

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
    if not getattr(event, "event_id", ""):
        setattr(event, "event_id", str(uuid.uuid4()))  # noqa: B010 - a field of a generic message
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
        getattr(event, "occurred_at").FromDatetime(moment)  # noqa: B009 - generic message


def occurred_at(event: Message) -> datetime:
    """The event's `occurred_at` as an aware UTC datetime (the AMQP timestamp)."""
    return getattr(event, "occurred_at").ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]  # noqa: B009
