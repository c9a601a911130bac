"""Event (de)serialisation: protobuf bytes on the wire, message class looked up by its full name.

The AMQP `type` property carries the full protobuf name; the default descriptor pool maps it back.
"""

from __future__ import annotations

import uuid

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

# Imported for its side effect: registers the saga events in the default descriptor pool.
from ecommerce.events.v1 import events_pb2  # noqa: F401

CONTENT_TYPE = "application/x-protobuf"


class PoisonMessage(Exception):
    """A message no retry can handle: it goes straight to the dead-letter queue."""


class UndecodableEvent(PoisonMessage):
    """The message's type is missing or unknown, or its body does not parse as that type."""


class InvalidEventId(UndecodableEvent, ValueError):
    """The event's `event_id` is missing or not a UUID (refused on publish, poison on receipt)."""


def type_name(event: Message) -> str:
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


def decode(event_type: str | None, body: bytes) -> Message:
    """Parse `body` as the protobuf message named `event_type`."""
    if not event_type:
        raise UndecodableEvent("message has no type property")
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(event_type)
    except KeyError:
        raise UndecodableEvent(f"unknown event type {event_type!r}") from None
    event: Message = message_factory.GetMessageClass(descriptor)()
    try:
        event.ParseFromString(body)
    except DecodeError as exc:
        raise UndecodableEvent(f"body is not a valid {event_type}: {exc}") from None
    return event
