"""What service-payment tells operators: provider calls by operation and outcome with their
latency, payments by the state a move brought them to (bounded labels, never an id), and one
`payment_state_changed` log line per move. Nothing card-like is ever logged: no token."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from chassis.logging import get_logger
from payment_service.domain import Operation, Payment, PaymentState

PROVIDER_CALLS = Counter(
    "payment_provider_calls",
    "Calls to the payment provider by operation and outcome (an answer such as authorized or "
    "declined, or refused, unavailable)",
    ["operation", "outcome"],
)
PROVIDER_LATENCY = Histogram(
    "payment_provider_call_duration_seconds",
    "Time of each call to the payment provider, by operation and outcome",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PAYMENTS = Counter(
    "payments",
    "Payments reaching a state by a move (AUTHORIZING counts authorisations wanted)",
    ["state"],
)
AUTHORIZATIONS_ABANDONED = Counter(
    "payment_authorizations_abandoned",
    "Authorisations no longer retried: PAYMENT_AUTHORIZE_DEADLINE_SECONDS passed",
)
OUTCOMES = ("authorized", "declined", "captured", "voided", "refunded", "refused", "unavailable")

_log = get_logger("payment_service.payments")

# Every label value exists from the start, so a dashboard shows 0 rather than no data.
for _operation in Operation:
    for _outcome in OUTCOMES:
        PROVIDER_CALLS.labels(operation=_operation.value, outcome=_outcome)
for _state in PaymentState:
    if _state is not PaymentState.PENDING:
        PAYMENTS.labels(state=_state.value)


def provider_called(operation: Operation, outcome: str, seconds: float) -> None:
    PROVIDER_CALLS.labels(operation=operation.value, outcome=outcome).inc()
    PROVIDER_LATENCY.labels(operation=operation.value, outcome=outcome).observe(seconds)


async def payment_moved(payment: Payment, previous: PaymentState) -> None:
    PAYMENTS.labels(state=payment.state.value).inc()
    _log.info(
        "payment_state_changed",
        order_id=str(payment.order_id),
        state=payment.state.value,
        previous_state=previous.value,
        amount_cents=payment.amount_cents,
        currency=payment.currency,
        provider_attempts=payment.provider_attempts,
        decline_reason=payment.decline_reason,
    )


def authorization_abandoned(payment: Payment, deadline_seconds: float) -> None:
    AUTHORIZATIONS_ABANDONED.inc()
    _log.warning(
        "payment_authorization_abandoned",
        order_id=str(payment.order_id),
        provider_attempts=payment.provider_attempts,
        deadline_s=deadline_seconds,
    )
