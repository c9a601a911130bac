"""The SQL of service-payment: the `payments` table on a unit of work's connection (writes) or
the pool (reads), and the unit of work that binds it.

Handlers change a payment under its row lock (`claim_and_lock`: the event's inbox claim and the
lock in one statement, then one `write`). The worker changes
one without holding a lock across the provider call: it leases due rows (pushing
`next_attempt_at` on), calls the provider, then records the answer with a guard on the state it
started from (`write(..., source=...)`), so an answer that arrives after the payment moved on
changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg
from google.protobuf.message import Message

from chassis.messaging.inbox import Inbox
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
    """A payment as a statement left it, with the database's clock then: for the worker, a
    payment it has taken (leased)."""

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
    async def claim_and_lock(
        self, inbox: Inbox, event: Message, order_id: uuid.UUID
    ) -> Payment | None:
        """`lock`, in the same statement as the inbox's claim of `event` (one round trip): None
        for a duplicate, which locks and changes nothing."""
        rows = await inbox.claim_with(
            event,
            "INSERT INTO payments (order_id) SELECT $1::uuid FROM claim"  # noqa: S608 - constant
            " ON CONFLICT (order_id) DO UPDATE SET order_id = EXCLUDED.order_id"
            f" RETURNING {_COLUMNS}",
            order_id,
        )
        if rows is None:
            return None
        if len(rows) != 1:
            raise RuntimeError("INSERT ... ON CONFLICT DO UPDATE ... RETURNING returned no row")
        return _payment(rows[0])

    @_outage
    async def write(
        self,
        payment: Payment,
        *,
        source: PaymentState,
        facts: bool = False,
        target: PaymentState | None = None,
        decline_reason: str | None = None,
        attempted: bool = False,
        start_wanting: bool = False,
        due: bool = False,
    ) -> Lease | None:
        """Everything a step changes in one statement, if the payment is still in `source`
        (None otherwise: it moved on meanwhile and nothing changes):

        - `facts`: what the saga told the payment (intent and flags, from `payment`);
        - `target`: the move (the payment is left not due unless `due`); `attempted` counts a
          provider call and clears the failures; `start_wanting` stamps when the authorisation
          became wanted; `decline_reason` is kept when given;
        - `due`: the provider is needed next, now, by any worker, with the current trace context
          (the worker's call continues the trace of this event). This replaces a lease held by
          a worker in the middle of a call: its answer is recorded with a guard on the state,
          and every provider operation is idempotent.

        Returns the payment as written, with the database's clock."""
        row = await self._db.fetchrow(
            "UPDATE payments SET"  # noqa: S608 - constant columns
            " user_id = CASE WHEN $2 THEN $3 ELSE user_id END,"
            " amount_cents = CASE WHEN $2 THEN $4 ELSE amount_cents END,"
            " currency = CASE WHEN $2 THEN $5 ELSE currency END,"
            " payment_token = CASE WHEN $2 THEN $6 ELSE payment_token END,"
            " intent_known = CASE WHEN $2 THEN $7 ELSE intent_known END,"
            " stock_reserved = CASE WHEN $2 THEN $8 ELSE stock_reserved END,"
            " confirmed = CASE WHEN $2 THEN $9 ELSE confirmed END,"
            " cancel_requested = CASE WHEN $2 THEN $10 ELSE cancel_requested END,"
            " cancelled_after_confirmation = CASE WHEN $2 THEN $11"
            "   ELSE cancelled_after_confirmation END,"
            " state = COALESCE($13, state),"
            " decline_reason = COALESCE($14, decline_reason),"
            " provider_attempts = provider_attempts + $15::int,"
            " consecutive_failures = CASE WHEN $15::int > 0 THEN 0 ELSE consecutive_failures END,"
            " wanted_since = CASE WHEN $16 THEN now() ELSE wanted_since END,"
            " next_attempt_at = CASE WHEN $17 THEN now()"
            "   WHEN $13 IS NOT NULL THEN NULL ELSE next_attempt_at END,"
            " trace_context = CASE WHEN $17 THEN $18::jsonb ELSE trace_context END,"
            " updated_at = CASE WHEN $13 IS NOT NULL THEN now() ELSE updated_at END"
            f" WHERE order_id = $1 AND state = $12 RETURNING {_COLUMNS}, now() AS db_now",
            payment.order_id,
            facts,
            payment.user_id,
            payment.amount_cents,
            payment.currency,
            payment.payment_token,
            payment.intent_known,
            payment.stock_reserved,
            payment.confirmed,
            payment.cancel_requested,
            payment.cancelled_after_confirmation,
            source.value,
            None if target is None else target.value,
            decline_reason,
            1 if attempted else 0,
            start_wanting,
            due,
            current_context() if due else None,
        )
        return None if row is None else Lease(payment=_payment(row), now=row["db_now"])

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
