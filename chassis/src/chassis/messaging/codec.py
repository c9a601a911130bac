"""Event (de)serialisation: protobuf bytes on the wire, typed by the message class a service
subscribed with.

The chassis knows no event of the platform: a service hands the consumer the message class each
routing key carries, and the AMQP `type` property (the full protobuf name) must match it.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import DecodeError, Message

CONTENT_TYPE = "application/x-protobuf"
# AMQP 0-9-1 short strings (routing key, type, correlation_id, message_id) hold at most 255 bytes.
SHORT_STRING_MAX_BYTES = 255


class PoisonMessage(Exception):
    """A message no retry can handle: it goes straight to the dead-letter queue."""


class UndecodableEvent(PoisonMessage):
    """The message's type is missing or not the one subscribed, or its body does not parse."""


class InvalidEventId(UndecodableEvent, ValueError):
    """The event's `event_id` is missing or not a UUID (refused on publish, poison on receipt)."""


class InvalidEnvelope(ValueError):
    """A property of the event does not fit its AMQP field (refused when it is queued)."""


def type_name(event: Message | type[Message]) -> str:
    """Full protobuf name, e.g. `ecommerce.events.v1.OrderCreated` (the AMQP `type`)."""
    return str(event.DESCRIPTOR.full_name)


def event_id_of(event: Message) -> uuid.UUID:
    """The event's `event_id` field as a UUID; every integration event carries one."""
    raw = getattr(event, "event_id", None)
    if not raw:
        raise InvalidEventId(f"{type_name(event)} has no event_id")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidEventId(f"{type_name(event)}.event_id is not a UUID: {raw!r}") from None


def check_short_string(value: str, what: str) -> str:
    """`value` when it fits an AMQP short string; otherwise `InvalidEnvelope` naming `what`.
    Checked when an event is queued, so that one bad row can never block a relay."""
    size = len(value.encode("utf-8"))
    if size > SHORT_STRING_MAX_BYTES:
        raise InvalidEnvelope(
            f"{what} is {size} bytes; AMQP allows at most {SHORT_STRING_MAX_BYTES}"
        )
    return value


def decode(message_class: type[Message], event_type: str | None, body: bytes) -> Message:
    """Parse `body` as `message_class`, which the AMQP `type` property must name."""
    expected = type_name(message_class)
    if not event_type:
        raise UndecodableEvent("message has no type property")
    if event_type != expected:
        raise UndecodableEvent(f"type {event_type!r} is not the subscribed {expected!r}")
    event = message_class()
    try:
        event.ParseFromString(body)
    except DecodeError as exc:
        raise UndecodableEvent(f"body is not a valid {event_type}: {exc}") from None
    return event
