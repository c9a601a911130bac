"""What an integration event declares about itself in its `.proto`: its routing key, the field
whose value is its correlation id, and the services that consume it.

An event message carries the message option `event`: a `google.protobuf.MessageOptions`
extension (whatever package declares it; the platform's is `ecommerce.events.v1.event` in
proto-definitions) whose value has the string fields `routing_key` and `correlation_field`, and
the repeated string `consumers` (the services subscribed to it, by their names in the accounts
file: `platform-bootstrap` binds their queues from it, `bindings_of`). It also has a string
`event_id` and a `google.protobuf.Timestamp occurred_at`. The chassis reads all of it from the
message descriptor, so it imports no module of the platform and no service writes
a routing key: `uow.publish(event)` and `Subscription.of(EventType, handler)` derive it.

```proto
message OrderCreated {
  option (ecommerce.events.v1.event) = {
    routing_key: "order.created"
    correlation_field: "order_id"
    consumers: ["service-product", "service-payment"]
  };
  string event_id = 1;
  string order_id = 2;
  google.protobuf.Timestamp occurred_at = 7;
}
```
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from chassis.messaging.codec import SHORT_STRING_MAX_BYTES

# The short name of the MessageOptions extension that declares a message an event.
EVENT_OPTION = "event"
# Words of lower-case letters, digits and underscores joined by dots: never a topic wildcard.
_ROUTING_KEY = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
_TIMESTAMP = "google.protobuf.Timestamp"


class UndeclaredEvent(TypeError):
    """The message is not a well-declared integration event (a programming error, found when a
    service publishes or subscribes it, or by the test that iterates every event)."""


@dataclass(frozen=True, slots=True)
class EventDeclaration:
    """An event type as its proto declares it."""

    type_name: str  # the full protobuf name, the AMQP `type`
    routing_key: str
    correlation_field: str  # the string field whose value is the AMQP correlation_id
    consumers: tuple[str, ...] = ()  # the services subscribed to it (accounts-file names)


def declaration_of(event: Message | type[Message]) -> EventDeclaration:
    """The declaration of `event`'s type (read once per type); `UndeclaredEvent` when the message
    has no `event` option or lacks a field the chassis relies on."""
    return _declared(event.DESCRIPTOR)


def is_event(message_class: type[Message]) -> bool:
    """Whether the message type carries the `event` option (well-formed or not)."""
    return _event_option(message_class.DESCRIPTOR) is not None


@functools.cache
def _declared(descriptor: Descriptor) -> EventDeclaration:
    name = descriptor.full_name
    option = _event_option(descriptor)
    if option is None:
        raise UndeclaredEvent(f"{name} has no `{EVENT_OPTION}` option: it is not an event")
    routing_key = str(getattr(option, "routing_key", ""))
    correlation_field = str(getattr(option, "correlation_field", ""))
    if not _ROUTING_KEY.fullmatch(routing_key):
        raise UndeclaredEvent(
            f"{name}: routing_key {routing_key!r} is not dot-separated words of [a-z0-9_]"
        )
    if len(routing_key.encode()) > SHORT_STRING_MAX_BYTES:
        raise UndeclaredEvent(f"{name}: routing_key is over {SHORT_STRING_MAX_BYTES} bytes")
    _require_field(descriptor, "event_id", FieldDescriptor.TYPE_STRING)
    _require_field(descriptor, correlation_field, FieldDescriptor.TYPE_STRING)
    occurred_at = _require_field(descriptor, "occurred_at", FieldDescriptor.TYPE_MESSAGE)
    if occurred_at.message_type is None or occurred_at.message_type.full_name != _TIMESTAMP:
        raise UndeclaredEvent(f"{name}.occurred_at is not a {_TIMESTAMP}")
    consumers = tuple(str(c) for c in getattr(option, "consumers", ()))
    if len(set(consumers)) != len(consumers) or not all(consumers):
        raise UndeclaredEvent(f"{name}: consumers {list(consumers)} name a service twice or none")
    return EventDeclaration(name, routing_key, correlation_field, consumers)


def catalogue(module: ModuleType) -> tuple[EventDeclaration, ...]:
    """Every event declared in a generated `_pb2` module (its messages with the `event`
    option), in the order of the `.proto`; `UndeclaredEvent` for one that is malformed."""
    descriptors = module.DESCRIPTOR.message_types_by_name.values()
    return tuple(_declared(d) for d in descriptors if _event_option(d) is not None)


def bindings_of(module: ModuleType) -> dict[str, tuple[str, ...]]:
    """Service name -> the routing keys its queue is bound to: the events whose `consumers`
    name it, from the catalogue of `module` (what `platform-bootstrap` declares)."""
    bindings: dict[str, list[str]] = {}
    for declaration in catalogue(module):
        for service in declaration.consumers:
            bindings.setdefault(service, []).append(declaration.routing_key)
    return {service: tuple(keys) for service, keys in bindings.items()}


def _event_option(descriptor: Any) -> Message | None:
    for field, value in descriptor.GetOptions().ListFields():
        if field.is_extension and field.name == EVENT_OPTION:
            return value  # type: ignore[no-any-return]
    return None


def _require_field(descriptor: Descriptor, name: str, kind: int) -> FieldDescriptor:
    field = descriptor.fields_by_name.get(name)
    if field is None or field.type != kind or _is_repeated(field):
        kinds = {FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_MESSAGE: "message"}
        raise UndeclaredEvent(
            f"{descriptor.full_name} needs a singular {kinds[kind]} field {name!r}"
        )
    return field


def _is_repeated(field: FieldDescriptor) -> bool:
    # `is_repeated` arrived in protobuf 6; `label` is deprecated there.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(getattr(field, "label") == FieldDescriptor.LABEL_REPEATED)  # noqa: B009
