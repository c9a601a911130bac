"""RabbitMQ messaging for services: broker connection, transactional outbox, inbox and consumer."""

from chassis.messaging.broker import Broker, BrokerUnavailable, ConfirmTimeout, OutgoingEvent
from chassis.messaging.codec import InvalidEventId, PoisonMessage, UndecodableEvent
from chassis.messaging.consumer import EventConsumer
from chassis.messaging.inbox import INBOX_DDL, Handler, Outcome, postgres_inbox
from chassis.messaging.outbox import OUTBOX_DDL, OutboxRelay, add_to_outbox

__all__ = [
    "INBOX_DDL",
    "OUTBOX_DDL",
    "Broker",
    "BrokerUnavailable",
    "ConfirmTimeout",
    "EventConsumer",
    "Handler",
    "InvalidEventId",
    "OutboxRelay",
    "Outcome",
    "OutgoingEvent",
    "PoisonMessage",
    "UndecodableEvent",
    "add_to_outbox",
    "postgres_inbox",
]
