"""Accounts of least privilege: each service reaches its stores with credentials of its own (a
PostgreSQL role owning only its database, a Redis ACL user confined to its key prefix, a RabbitMQ
user limited to its queues and the events exchange), made by `platform-bootstrap` from the
platform's accounts file. The chassis knows no service: the file says which exist, and the event
catalogue (each event's `consumers`) which queue is bound to which events."""

from chassis.accounts.bootstrap import BootstrapSettings, bootstrap, resolve_accounts
from chassis.accounts.plan import (
    Accounts,
    PlanError,
    ServiceAccess,
    catalogue_bindings,
    load_plan,
    resolve,
)
from chassis.accounts.rabbitmq_users import RabbitmqAdmin

__all__ = [
    "Accounts",
    "BootstrapSettings",
    "PlanError",
    "RabbitmqAdmin",
    "ServiceAccess",
    "bootstrap",
    "catalogue_bindings",
    "load_plan",
    "resolve",
    "resolve_accounts",
]
