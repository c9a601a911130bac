"""The SQL of service-order: orders, their lines and the idempotency keys, on a unit of work's
connection (writes) or the pool (reads); and the unit of work that binds them.

Every status change is one guarded UPDATE (`WHERE status = ANY(<allowed sources>)`): an order
that has already moved is left alone and the caller learns it from the missing row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeAlias

import asyncpg
from google.protobuf.message import Message

from chassis.messaging.inbox import Inbox
from chassis.postgres import package_migrations, unavailable_on_outage
from chassis.unit_of_work import UnitOfWork
from order_service.domain import (
    EXPIRE,
    RECORDED_ONLY_WHEN,
    CancelReason,
    CartLine,
    LiveOrder,
    Order,
    OrderLine,
    OrderStatus,
    PaymentStatus,
    PaymentStep,
    PricedCart,
    SagaVersion,
    Transition,
)
from order_service.page_tokens import PageCursor, PageRequest

# The schema this store reads and writes, shipped inside the package.
MIGRATIONS_DIR = package_migrations("order_service")
EXPIRE_BATCH_SIZE = 100
# The first key of the advisory lock that serialises one user's checkouts (the second is the
# user's); no other lock of this database uses it.
CHECKOUT_LOCK_CLASS = 0x0C4E

_ORDER_COLUMNS = (
    "id, user_id, status, cancel_reason, total_cents, currency, created_at, updated_at,"
    " saga_version, payment_status, payment_token"
)
_outage = unavailable_on_outage("the order database")
# Reads: run once more on a fresh connection when theirs was lost (see unavailable_on_outage).
_read = unavailable_on_outage("the order database", idempotent=True)
Database: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class MovedOrder:
    """An order a guarded UPDATE has just moved: what the event and the metrics need."""

    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    moved_at: datetime
    lines: tuple[OrderLine, ...] = ()  # read with the move when asked for (`with_lines`)


@dataclass(frozen=True, slots=True)
class OrderState:
    """Where an order is: what a saga event that had no effect is explained with."""

    status: OrderStatus
    saga_version: SagaVersion
    payment_status: PaymentStatus | None

    def describe(self) -> str:
        payment = "none" if self.payment_status is None else self.payment_status.value
        return f"{self.status.value}, saga version {self.saga_version.value}, payment {payment}"


def _payment_status(raw: str | None) -> PaymentStatus | None:
    return None if raw is None else PaymentStatus(raw)


def _order(row: asyncpg.Record, lines: Sequence[OrderLine]) -> Order:
    reason = row["cancel_reason"]
    return Order(
        id=row["id"],
        user_id=row["user_id"],
        status=OrderStatus(row["status"]),
        cancel_reason=None if reason is None else CancelReason(reason),
        lines=tuple(lines),
        total_cents=row["total_cents"],
        currency=row["currency"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        saga_version=SagaVersion(row["saga_version"]),
        payment_status=_payment_status(row["payment_status"]),
        payment_token=row["payment_token"],
    )


def _line(row: asyncpg.Record) -> OrderLine:
    return OrderLine(
        product_id=row["product_id"],
        name=row["name"],
        quantity=row["quantity"],
        unit_price_cents=row["unit_price_cents"],
    )


# A status change (see `OrderStore.move`), as a common table expression; `gate`: more of its
# WHERE clause. Its lines come from the statement's query, `_MOVED_WITH_LINES`.
_MOVE = (
    "moved AS ("
    " UPDATE orders SET status = $2, cancel_reason = $3, updated_at = now(),"
    " confirmed_at = CASE WHEN $2 = 'CONFIRMED' THEN now() ELSE confirmed_at END,"
    " payment_status = COALESCE($6, payment_status)"
    " WHERE id = $1 AND status = ANY($4::text[]) AND saga_version = ANY($5::smallint[])"
    " AND ($7::text[] IS NULL OR payment_status = ANY($7::text[])){gate}"
    " RETURNING id, user_id, created_at, updated_at)"
)
_MOVED_WITH_LINES = (
    "SELECT m.id, m.user_id, m.created_at, m.updated_at, l.product_id, l.name,"
    " l.quantity, l.unit_price_cents FROM moved m"
    " LEFT JOIN order_lines l ON $8 AND l.order_id = m.id ORDER BY l.line_no"
)


def _move_args(
    order_id: uuid.UUID, transition: Transition, payment: PaymentStep | None, with_lines: bool
) -> tuple[object, ...]:
    return (
        order_id,
        transition.target.value,
        None if transition.reason is None else transition.reason.value,
        sorted(status.value for status in transition.sources),
        sorted(version.value for version in transition.saga_versions),
        None if payment is None else payment.target.value,
        None if payment is None else sorted(status.value for status in payment.sources),
        with_lines,
    )


def _moved_order(rows: Sequence[asyncpg.Record]) -> MovedOrder | None:
    if not rows:
        return None
    lines = tuple(_line(row) for row in rows if row["product_id"] is not None)
    return replace(_moved(rows[0]), lines=lines)


def _moved(row: asyncpg.Record) -> MovedOrder:
    return MovedOrder(
        id=row["id"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        moved_at=row["updated_at"],
    )


class OrderStore:
    """Orders and their lines."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @_outage
    async def insert(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        priced: PricedCart,
        saga_version: SagaVersion,
        payment_token: str | None,
    ) -> Order:
        """The order PENDING with its lines, in one statement: under saga version 2 with its
        payment token and payment status PENDING; under version 1 with neither."""
        paid = saga_version is SagaVersion.PAYMENT
        if paid and payment_token is None:
            raise ValueError("a saga version 2 order needs a payment token")
        row = await self._db.fetchrow(
            "WITH placed AS ("  # noqa: S608 - constant column list
            " INSERT INTO orders (id, user_id, status, total_cents, currency, saga_version,"
            " payment_token, payment_status)"
            f" VALUES ($1, $2, 'PENDING', $3, $4, $10, $11, $12) RETURNING {_ORDER_COLUMNS}"
            "), lines AS ("
            " INSERT INTO order_lines (order_id, line_no, product_id, name, unit_price_cents,"
            " quantity) SELECT $1, * FROM unnest($5::smallint[], $6::uuid[], $7::text[],"
            " $8::bigint[], $9::int[])"
            ") SELECT * FROM placed",
            order_id,
            user_id,
            priced.total_cents,
            priced.currency,
            list(range(len(priced.lines))),
            [line.product_id for line in priced.lines],
            [line.name for line in priced.lines],
            [line.unit_price_cents for line in priced.lines],
            [line.quantity for line in priced.lines],
            saga_version.value,
            payment_token if paid else None,
            PaymentStatus.PENDING.value if paid else None,
        )
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        return _order(row, priced.lines)

    @_read
    async def get(
        self, order_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = False
    ) -> Order | None:
        """The user's order (None for an unknown one or another user's); `lock` holds the row
        until the transaction ends (FOR UPDATE)."""
        row = await self._db.fetchrow(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"  # noqa: S608
            + (" FOR UPDATE" if lock else ""),
            order_id,
            user_id,
        )
        if row is None:
            return None
        lines = await self.lines([order_id])
        return _order(row, lines.get(order_id, ()))

    @_read
    async def page(
        self, user_id: uuid.UUID, request: PageRequest
    ) -> tuple[list[Order], PageCursor | None]:
        """One page of the user's orders, newest first (keyset on (created_at, id) descending,
        served by `orders_user_newest`), and the cursor of the next page (None on the last)."""
        after = request.after
        if after is None:
            rows = await self._db.fetch(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user_id = $1"  # noqa: S608
                " ORDER BY created_at DESC, id DESC LIMIT $2",
                user_id,
                request.size + 1,
            )
        else:
            rows = await self._db.fetch(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user_id = $1"  # noqa: S608
                " AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4",
                user_id,
                after.created_at,
                after.order_id,
                request.size + 1,
            )
        page_rows = rows[: request.size]
        lines = await self.lines([row["id"] for row in page_rows])
        orders = [_order(row, lines.get(row["id"], ())) for row in page_rows]
        if len(rows) <= request.size:
            return orders, None
        last = orders[-1]
        return orders, PageCursor(created_at=last.created_at, order_id=last.id)

    @_read
    async def lines(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[OrderLine, ...]]:
        if not order_ids:
            return {}
        rows = await self._db.fetch(
            "SELECT order_id, product_id, name, quantity, unit_price_cents FROM order_lines"
            " WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line_no",
            list(order_ids),
        )
        result: dict[uuid.UUID, list[OrderLine]] = {}
        for row in rows:
            result.setdefault(row["order_id"], []).append(_line(row))
        return {order_id: tuple(lines) for order_id, lines in result.items()}

    @_outage
    async def lock_checkouts_of(self, user_id: uuid.UUID) -> None:
        """Hold, until the transaction ends, the lock that serialises one user's checkouts (a
        transaction-scoped advisory lock: two checkouts of one cart must each see the other's
        order). Users whose ids hash alike merely wait for each other."""
        await self._db.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", CHECKOUT_LOCK_CLASS, str(user_id)
        )

    @_outage
    async def live_orders(
        self, user_id: uuid.UUID, *, lookback_seconds: float, limit: int
    ) -> list[LiveOrder]:
        """The user's orders whose lines may still be in the cart, newest first: PENDING ones,
        and at most `limit` confirmed within `lookback_seconds` (cancelled since or not: the cart
        gives a confirmed order's lines up all the same). Served by `orders_user_newest`: an
        order is confirmed within the saga's timeout of its creation, so none older than the
        look-back plus a day can qualify (the sweeper cancels PENDING ones long before)."""
        rows = await self._db.fetch(
            "WITH live AS ("
            " SELECT id, status, created_at FROM orders WHERE user_id = $1"
            " AND created_at > now() - make_interval(secs => $2 + 86400)"
            " AND (status = 'PENDING' OR confirmed_at > now() - make_interval(secs => $2))"
            " ORDER BY created_at DESC, id DESC LIMIT $3"
            ") SELECT o.id, o.status, l.product_id, l.quantity FROM live o"
            " LEFT JOIN order_lines l ON l.order_id = o.id"
            " ORDER BY o.created_at DESC, o.id DESC, l.line_no",
            user_id,
            lookback_seconds,
            limit,
        )
        # One statement: the orders and their lines (an order's rows are adjacent).
        live: dict[uuid.UUID, tuple[OrderStatus, list[CartLine]]] = {}
        for row in rows:
            _, lines = live.setdefault(row["id"], (OrderStatus(row["status"]), []))
            if row["product_id"] is not None:
                lines.append(CartLine(row["product_id"], row["quantity"]))
        return [
            LiveOrder(id=order_id, status=status, lines=tuple(lines))
            for order_id, (status, lines) in live.items()
        ]

    @_outage
    async def move(
        self,
        order_id: uuid.UUID,
        transition: Transition,
        *,
        payment: PaymentStep | None = None,
        with_lines: bool = False,
    ) -> MovedOrder | None:
        """Apply `transition` if the order is in one of its source statuses and runs one of its
        saga versions (and, with `payment`, its payment status is one that step moves from, to
        the step's target in the same statement); None otherwise (unknown, or already moved:
        nothing changes). Confirming also stamps `confirmed_at`. `with_lines`: the order's lines
        come back from the same statement (what `order.confirmed` carries)."""
        rows = await self._db.fetch(
            f"WITH {_MOVE.format(gate='')} {_MOVED_WITH_LINES}",
            *_move_args(order_id, transition, payment, with_lines),
        )
        return _moved_order(rows)

    @_outage
    async def claim_and_move(
        self,
        inbox: Inbox,
        event: Message,
        order_id: uuid.UUID,
        transition: Transition,
        *,
        payment: PaymentStep | None = None,
        with_lines: bool = False,
    ) -> tuple[bool, MovedOrder | None]:
        """`move`, in the same statement as the inbox's claim of `event` (one round trip):
        whether the event was claimed (False: a duplicate, nothing moved), and the moved order."""
        rows = await inbox.claim_with(
            event,
            _MOVED_WITH_LINES,
            *_move_args(order_id, transition, payment, with_lines),
            ctes=_MOVE.format(gate=" AND EXISTS (SELECT FROM claim)"),
        )
        if rows is None:
            return False, None
        return True, _moved_order(rows)

    @_outage
    async def record_payment(self, order_id: uuid.UUID, step: PaymentStep) -> bool:
        """The payment status alone moves to the step's target, on a version-2 order that is
        CANCELLED and whose payment status the step moves from (forward only); False when
        nothing changed. The order's status, reason and `updated_at` stay as they are."""
        changed = await self._db.fetchval(
            "UPDATE orders SET payment_status = $2"
            " WHERE id = $1 AND status = ANY($3::text[]) AND saga_version = $4"
            " AND payment_status = ANY($5::text[]) RETURNING true",
            order_id,
            step.target.value,
            sorted(status.value for status in RECORDED_ONLY_WHEN),
            SagaVersion.PAYMENT.value,
            sorted(status.value for status in step.sources),
        )
        return bool(changed)

    @_read
    async def state(self, order_id: uuid.UUID) -> OrderState | None:
        """Where the order is (None for an unknown one)."""
        row = await self._db.fetchrow(
            "SELECT status, saga_version, payment_status FROM orders WHERE id = $1", order_id
        )
        if row is None:
            return None
        return OrderState(
            status=OrderStatus(row["status"]),
            saga_version=SagaVersion(row["saga_version"]),
            payment_status=_payment_status(row["payment_status"]),
        )

    @_outage
    async def expire_pending(self, older_than_seconds: float) -> list[MovedOrder]:
        """The saga timeout (`EXPIRE`) for at most EXPIRE_BATCH_SIZE of the oldest PENDING orders
        placed more than `older_than_seconds` ago; rows another sweeper (or a saga event) holds
        are skipped. `status = 'PENDING'` is EXPIRE's only source, written out so the planner
        uses the partial index `orders_pending_by_age`."""
        rows = await self._db.fetch(
            "WITH expired AS ("
            " SELECT id FROM orders WHERE status = 'PENDING'"
            " AND created_at < now() - make_interval(secs => $3)"
            " ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED"
            ") UPDATE orders SET status = $1, cancel_reason = $2, updated_at = now()"
            " FROM expired WHERE orders.id = expired.id AND orders.status = 'PENDING'"
            " RETURNING orders.id, orders.user_id, orders.created_at, orders.updated_at",
            EXPIRE.target.value,
            None if EXPIRE.reason is None else EXPIRE.reason.value,
            older_than_seconds,
            EXPIRE_BATCH_SIZE,
        )
        return [_moved(row) for row in rows]

    @_outage
    async def mark_stock_released(self, order_id: uuid.UUID) -> OrderStatus | None:
        """Record when the order's reserved stock came back, once; the order's status when this
        call recorded it, None when it was already recorded or the order is unknown."""
        status: str | None = await self._db.fetchval(
            "UPDATE orders SET stock_released_at = now()"
            " WHERE id = $1 AND stock_released_at IS NULL RETURNING status",
            order_id,
        )
        return None if status is None else OrderStatus(status)


class IdempotencyKeys:
    """Which order a user's idempotency key made."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @_read
    async def order_of(self, user_id: uuid.UUID, key: str) -> uuid.UUID | None:
        order_id: uuid.UUID | None = await self._db.fetchval(
            "SELECT order_id FROM idempotency_keys WHERE user_id = $1 AND key = $2", user_id, key
        )
        return order_id

    @_outage
    async def claim(self, user_id: uuid.UUID, key: str, order_id: uuid.UUID) -> bool:
        """Take the key for `order_id`; False when it was taken already. A concurrent claim of
        the same key waits on the primary key until the first transaction ends, then either
        loses (it committed) or takes the key (it rolled back)."""
        claimed = await self._db.fetchval(
            "INSERT INTO idempotency_keys (user_id, key, order_id) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING true",
            user_id,
            key,
            order_id,
        )
        return bool(claimed)


class OrderUnitOfWork(UnitOfWork):
    """One transaction of service-order: its repositories on the transaction's connection."""

    orders: OrderStore
    idempotency_keys: IdempotencyKeys

    def bind(self, connection: asyncpg.Connection) -> None:
        self.orders = OrderStore(connection)
        self.idempotency_keys = IdempotencyKeys(connection)
