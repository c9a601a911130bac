"""The catalogue of saga events, as `ecommerce.events.v1` declares it: every event carries its
routing key and correlation field (the `event` option), well-formed for the chassis, each key
used once and spelling its message's name."""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor

from chassis.messaging import declaration_of
from chassis.messaging.declaration import is_event
from ecommerce.events.v1 import events_pb2


def messages() -> list[Descriptor]:
    return list(events_pb2.DESCRIPTOR.message_types_by_name.values())


def embedded() -> set[str]:
    """Messages used as a field of another message (parts of events, not events)."""
    return {
        field.message_type.full_name
        for message in messages()
        for field in message.fields
        if field.message_type is not None
    }


def event_types() -> list[type]:
    return [getattr(events_pb2, message.name) for message in messages()]


def test_every_message_that_is_not_part_of_another_is_a_declared_event() -> None:
    undeclared = [
        message.full_name
        for message in messages()
        if message.full_name not in embedded() and not is_event(getattr(events_pb2, message.name))
    ]

    assert undeclared == []


def test_every_event_is_well_declared_and_correlated_by_its_order() -> None:
    events = [event for event in event_types() if is_event(event)]

    assert len(events) >= 6
    assert {declaration_of(event).correlation_field for event in events} == {"order_id"}


def test_each_routing_key_is_used_once_and_spells_its_message_name() -> None:
    declared = [declaration_of(event) for event in event_types() if is_event(event)]
    keys = [d.routing_key for d in declared]

    assert len(keys) == len(set(keys))
    for declaration in declared:
        name = declaration.type_name.rsplit(".", 1)[1]
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        assert declaration.routing_key.replace(".", "_") == snake, declaration
