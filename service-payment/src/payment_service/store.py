"""The SQL of service-payment: the `payments` table on a unit of work's connection (writes) or
the pool (reads), and the unit of work that binds it.

Handlers change a payment under its row lock (`lock` then `save` / `move`). The worker changes
one without holding a lock across the provider call: it leases due rows (pushing
`next_attempt_at` on), calls the provider, then records the answer with a guard on the state it
started from (`move(..., source=...)`), so an answer that arrives after the payment moved on
changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

from chassis.messaging.tracing import current_context
from chassis.postgres import package_migrations, unavailable_on_outage
from chassis.unit_of_work import UnitOfWork
from payment_service.domain import Payment, PaymentState

# The schema this store reads and writes, shipped inside the package.
MIGRATIONS_DIR = package_migrations("payment_service")

_COLUMNS = (
    "order_id, user_id, amount_cents, currency, payment_token, state, intent_known,"
    " stock_reserved, confirmed, cancel_requested, cancelled_after_confirmation,"
    " provider_attempts, consecutive_failures, decline_reason, next_attempt_at, wanted_since,"
    " created_at, updated_at, trace_context"
)
_P_COLUMNS = ", ".join(f"p.{column.strip()}" for column in _COLUMNS.split(","))
_outage = unavailable_on_outage("the payment database")
_read = unavailable_on_outage("the payment database", idempotent=True)
Database: TypeAlias = asyncpg.Connection | asyncpg.Pool


def _payment(row: asyncpg.Record) -> Payment:
    currency = row["currency"]
    return Payment(
        order_id=row["order_id"],
        user_id=row["user_id"],
        amount_cents=row["amount_cents"],
        currency=None if currency is None else str(currency),
        payment_token=row["payment_token"],
        state=PaymentState(row["state"]),
        intent_known=row["intent_known"],
        stock_reserved=row["stock_reserved"],
        confirmed=row["confirmed"],
        cancel_requested=row["cancel_requested"],
        cancelled_after_confirmation=row["cancelled_after_confirmation"],
        provider_attempts=row["provider_attempts"],
        consecutive_failures=row["consecutive_failures"],
        decline_reason=row["decline_reason"],
        next_attempt_at=row["next_attempt_at"],
        wanted_since=row["wanted_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        trace_context=row["trace_context"],
    )


@dataclass(frozen=True, slots=True)
class Lease:
    """A payment the worker has taken: the row as leased, and the database's clock then."""

    payment: Payment
    now: datetime


class PaymentStore:
    """Payments, one row per order id."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @_read
    async def get(self, order_id: uuid.UUID) -> Payment | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM payments WHERE order_id = $1",  # noqa: S608 - constant
            order_id,
        )
        return None if row is None else _payment(row)

    @_outage
    async def lock(self, order_id: uuid.UUID) -> Payment:
        """The order's payment, made empty (PENDING, nothing known) if it did not exist, held
        locked until the transaction ends: events of one order are applied one at a time."""
        row = await self._db.fetchrow(
            "INSERT INTO payments (order_id) VALUES ($1)"  # noqa: S608 - constant columns
            " ON CONFLICT (order_id) DO UPDATE SET order_id = EXCLUDED.order_id"
            f" RETURNING {_COLUMNS}",
            order_id,
        )
        if row is None:
            raise RuntimeError("INSERT ... ON CONFLICT DO UPDATE ... RETURNING returned no row")
        return _payment(row)

    @_outage
    async def save_facts(self, payment: Payment) -> Payment:
        """Write what the saga told the payment (intent and flags; the state is not touched)."""
        row = await self._db.fetchrow(
            "UPDATE payments SET user_id = $2, amount_cents = $3, currency = $4,"  # noqa: S608
            " payment_token = $5, intent_known = $6, stock_reserved = $7, confirmed = $8,"
            " cancel_requested = $9, cancelled_after_confirmation = $10"
            f" WHERE order_id = $1 RETURNING {_COLUMNS}",
            payment.order_id,
            payment.user_id,
            payment.amount_cents,
            payment.currency,
            payment.payment_token,
            payment.intent_known,
            payment.stock_reserved,
            payment.confirmed,
            payment.cancel_requested,
            payment.cancelled_after_confirmation,
        )
        if row is None:
            raise RuntimeError(f"payment {payment.order_id} vanished under its lock")
        return _payment(row)

    @_outage
    async def move(
        self,
        order_id: uuid.UUID,
        *,
        source: PaymentState,
        target: PaymentState,
        decline_reason: str | None = None,
        attempted: bool = False,
        start_wanting: bool = False,
    ) -> Payment | None:
        """`source` -> `target` if the payment is still in `source`; None otherwise (it moved
        on meanwhile: nothing changes). `attempted` counts a provider call and clears the
        failures; `start_wanting` stamps when the authorisation became wanted. The move leaves
        the payment not due (`make_due` after it when it needs another call)."""
        row = await self._db.fetchrow(
            "UPDATE payments SET state = $3, decline_reason = COALESCE($4, decline_reason),"  # noqa: S608
            " provider_attempts = provider_attempts + $5::int,"
            " consecutive_failures = CASE WHEN $5::int > 0 THEN 0 ELSE consecutive_failures END,"
            " wanted_since = CASE WHEN $6 THEN now() ELSE wanted_since END,"
            " next_attempt_at = NULL, updated_at = now()"
            f" WHERE order_id = $1 AND state = $2 RETURNING {_COLUMNS}",
            order_id,
            source.value,
            target.value,
            decline_reason,
            1 if attempted else 0,
            start_wanting,
        )
        return None if row is None else _payment(row)

    @_outage
    async def make_due(self, order_id: uuid.UUID) -> None:
        """The worker should call the provider for this payment now (this replaces a lease held
        by a worker in the middle of a call: its answer is recorded with a guard on the state,
        and every provider operation is idempotent, so a second call is harmless). The current
        trace context goes with it: the worker's call continues the trace of this event."""
        await self._db.execute(
            "UPDATE payments SET next_attempt_at = now(), trace_context = $2::jsonb"
            " WHERE order_id = $1",
            order_id,
            current_context(),
        )

    @_outage
    async def lease_due(self, *, limit: int, lease_seconds: float) -> list[Lease]:
        """Take at most `limit` payments due now, soonest first, pushing their `next_attempt_at`
        `lease_seconds` on: another worker (another replica) skips the rows being leased, and
        leaves those leased alone until the lease ends, when a worker that died mid-call is
        stood in for."""
        rows = await self._db.fetch(
            "WITH due AS ("  # noqa: S608 - constant columns
            " SELECT order_id FROM payments WHERE next_attempt_at <= now()"
            " ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED"
            ") UPDATE payments p SET next_attempt_at = now() + make_interval(secs => $2)"
            f" FROM due WHERE p.order_id = due.order_id RETURNING {_P_COLUMNS}, now() AS db_now",
            limit,
            lease_seconds,
        )
        return [Lease(payment=_payment(row), now=row["db_now"]) for row in rows]

    @_outage
    async def release(self, order_id: uuid.UUID, leased_until: datetime) -> bool:
        """Nothing to do for this payment: end the lease, unless an event made it due again
        meanwhile (its `next_attempt_at` is then another value). True when released."""
        done = await self._db.fetchval(
            "UPDATE payments SET next_attempt_at = NULL"
            " WHERE order_id = $1 AND next_attempt_at = $2 RETURNING true",
            order_id,
            leased_until,
        )
        return bool(done)

    @_outage
    async def retry_later(
        self,
        order_id: uuid.UUID,
        *,
        source: PaymentState,
        leased_until: datetime,
        delay_seconds: float,
        deadline_seconds: float | None = None,
    ) -> Payment | None:
        """After a failed call: count it, and call again in `delay_seconds`, or never when that
        would be past `deadline_seconds` after the authorisation was first wanted (`None`: no
        deadline). Only while the payment is in `source` and still under this lease (an event
        that made it due meanwhile wins: it is decided again at once); None otherwise."""
        row = await self._db.fetchrow(
            "UPDATE payments SET provider_attempts = provider_attempts + 1,"  # noqa: S608
            " consecutive_failures = consecutive_failures + 1,"
            " next_attempt_at = CASE WHEN $5::float8 IS NOT NULL AND wanted_since"
            "   + make_interval(secs => $5::float8) < now() + make_interval(secs => $4)"
            "   THEN NULL ELSE now() + make_interval(secs => $4) END"
            " WHERE order_id = $1 AND state = $2 AND next_attempt_at = $3"
            f" RETURNING {_COLUMNS}",
            order_id,
            source.value,
            leased_until,
            delay_seconds,
            deadline_seconds,
        )
        return None if row is None else _payment(row)


class PaymentUnitOfWork(UnitOfWork):
    """One transaction of service-payment: `payments` plus the chassis outbox and inbox."""

    payments: PaymentStore

    def bind(self, connection: asyncpg.Connection) -> None:
        self.payments = PaymentStore(connection)
