"""RabbitMQ messaging for services: broker connection, transactional outbox, inbox, consumer,
retention and the re-drive of unrouted and dead-lettered events."""

from chassis.messaging.broker import Broker, BrokerUnavailable, ConfirmTimeout, OutgoingEvent
from chassis.messaging.codec import (
    InvalidEnvelope,
    InvalidEventId,
    PoisonMessage,
    UndecodableEvent,
)
from chassis.messaging.consumer import Backoff, EventConsumer, Subscription, is_transient
from chassis.messaging.declaration import EventDeclaration, UndeclaredEvent, declaration_of
from chassis.messaging.document_inbox import DocumentInbox
from chassis.messaging.inbox import INBOX_DDL, Handler, Inbox, Outcome
from chassis.messaging.outbox import (
    OUTBOX_DDL,
    OutboxPublisher,
    OutboxRelay,
    PendingEvent,
    add_to_outbox,
)
from chassis.messaging.retention import MessagingRetention

__all__ = [
    "INBOX_DDL",
    "OUTBOX_DDL",
    "Backoff",
    "Broker",
    "BrokerUnavailable",
    "ConfirmTimeout",
    "DocumentInbox",
    "EventConsumer",
    "EventDeclaration",
    "Handler",
    "Inbox",
    "InvalidEnvelope",
    "InvalidEventId",
    "MessagingRetention",
    "OutboxPublisher",
    "OutboxRelay",
    "Outcome",
    "OutgoingEvent",
    "PendingEvent",
    "PoisonMessage",
    "Subscription",
    "UndeclaredEvent",
    "UndecodableEvent",
    "add_to_outbox",
    "declaration_of",
    "is_transient",
]
