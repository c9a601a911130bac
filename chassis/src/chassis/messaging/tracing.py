"""The messaging spans, named and attributed per OpenTelemetry's messaging and RabbitMQ semantic
conventions: the relay's publish (PRODUCER, continuing the context stored with the outbox row, so
it sits in the trace of the transaction that wrote the event) and the consumer's process
(CONSUMER, a child of the publish whose context the message carries, and linked to it)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from chassis.settings import AmqpSettings

_tracer = trace.get_tracer("chassis.messaging")
AMQP_PORT = 5672


def current_context() -> str:
    """The current trace context as JSON (W3C `traceparent`/`tracestate`), kept with an outbox
    row so that the relay's publish continues the trace of the transaction that wrote it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier)


def _carrier(stored: Any) -> dict[str, str]:
    loaded = json.loads(stored) if isinstance(stored, str) else stored
    return {str(key): str(value) for key, value in (loaded or {}).items()}


def _server(settings: AmqpSettings) -> dict[str, AttributeValue]:
    url = urlsplit(settings.amqp_url)
    return {"server.address": url.hostname or "", "server.port": url.port or AMQP_PORT}


def _destination(*parts: str) -> str:
    """`{exchange}:{routing key}[:{queue}]` with the empty parts left out (the conventions'
    destination name for RabbitMQ)."""
    return ":".join(part for part in parts if part)


@contextmanager
def publishing(
    settings: AmqpSettings,
    *,
    routing_key: str,
    event_id: str,
    correlation_id: str,
    body_size: int,
    stored_context: Any,
    headers: dict[str, str],
) -> Iterator[trace.Span]:
    """The PRODUCER span of one publish; fills `headers` with its context for the consumers."""
    destination = _destination(settings.events_exchange, routing_key)
    parent = propagate.extract(_carrier(stored_context))
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": destination,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": event_id,
        "messaging.message.conversation_id": correlation_id,
        "messaging.message.body.size": body_size,
        **_server(settings),
    }
    with _tracer.start_as_current_span(
        f"publish {destination}",
        context=parent,
        kind=trace.SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:
        propagate.inject(headers)
        yield span


@contextmanager
def processing(
    settings: AmqpSettings, message: AbstractIncomingMessage, *, queue: str, routing_key: str
) -> Iterator[trace.Span]:
    """The CONSUMER span around the handling of `message`, in the trace its headers carry."""
    headers: Mapping[str, Any] = message.headers or {}
    parent = propagate.extract({k: v for k, v in headers.items() if isinstance(v, str)})
    creation = trace.get_current_span(parent).get_span_context()
    destination = _destination(message.exchange or "", routing_key, queue)
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": destination,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": message.message_id or "",
        "messaging.message.conversation_id": message.correlation_id or "",
        "messaging.message.body.size": len(message.body),
        **_server(settings),
    }
    if message.delivery_tag is not None:
        attributes["messaging.rabbitmq.message.delivery_tag"] = message.delivery_tag
    with _tracer.start_as_current_span(
        f"process {destination}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=[trace.Link(creation)] if creation.is_valid else None,
    ) as span:
        yield span
