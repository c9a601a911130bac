"""What service-order tells operators about the saga, once a change has committed: the business
metrics (bounded labels, never an id), one `order_status_changed` log line per status change and
one `payment_status_changed` line per payment status a payment event recorded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from chassis.logging import get_logger
from order_service.domain import (
    TRANSITIONS,
    CancelReason,
    Order,
    OrderStatus,
    PaymentStep,
    Transition,
    saga_outcome,
)
from order_service.store import MovedOrder

ORDERS_CREATED = Counter("orders_created", "Orders placed by Checkout (each starts a saga)")
# A Counter named `orders` would also expose `orders_created{status,reason}` (its creation
# timestamps), a name the registry refuses beside `orders_created_total`. So it stays off the
# registry and is exposed by a collector that leaves those timestamps out: `orders_total` only.
ORDERS = Counter(
    "orders",
    "Orders reaching CONFIRMED (reason none) or CANCELLED (reason says why)",
    ["status", "reason"],
    registry=None,
)
SAGA_DURATION = Histogram(
    "saga_duration_seconds",
    "From checkout to the end of the saga: CONFIRMED, or CANCELLED while still PENDING",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
NO_REASON = "none"


class _WithoutCreatedSeries(Collector):
    def __init__(self, counter: Counter) -> None:
        self._counter = counter

    def describe(self) -> list[Metric]:
        return []  # registered without names: nothing of it clashes with `orders_created`

    def collect(self) -> Iterator[Metric]:
        for family in self._counter.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


REGISTRY.register(_WithoutCreatedSeries(ORDERS))

_log = get_logger("order_service.saga")

# Every label value exists from the start, so a dashboard shows 0 rather than no data.
for _transition in TRANSITIONS:
    ORDERS.labels(
        status=_transition.target.value,
        reason=NO_REASON if _transition.reason is None else _transition.reason.value,
    )
    _outcome = saga_outcome(OrderStatus.PENDING, _transition)
    if _outcome is not None:
        SAGA_DURATION.labels(outcome=_outcome)


async def order_placed(order: Order) -> None:
    ORDERS_CREATED.inc()
    _log.info(
        "order_status_changed",
        order_id=str(order.id),
        status=order.status.value,
        reason=None,
        previous_status=None,
        lines=len(order.lines),
        total_cents=order.total_cents,
        currency=order.currency,
        saga_version=order.saga_version.value,
        payment_status=None if order.payment_status is None else order.payment_status.value,
    )


async def order_moved(moved: MovedOrder, previous: OrderStatus, transition: Transition) -> None:
    reason: CancelReason | None = transition.reason
    ORDERS.labels(
        status=transition.target.value, reason=NO_REASON if reason is None else reason.value
    ).inc()
    outcome = saga_outcome(previous, transition)
    if outcome is not None:
        seconds = (moved.moved_at - moved.created_at).total_seconds()
        SAGA_DURATION.labels(outcome=outcome).observe(max(seconds, 0.0))
    _log.info(
        "order_status_changed",
        order_id=str(moved.id),
        status=transition.target.value,
        reason=None if reason is None else reason.value,
        previous_status=previous.value,
    )


async def payment_recorded(order_id: uuid.UUID, step: PaymentStep) -> None:
    _log.info(
        "payment_status_changed",
        order_id=str(order_id),
        payment_status=step.target.value,
        step=step.name,
    )
