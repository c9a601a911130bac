"""StockRepository: the reservations of the checkout saga and the stock they take and give back,
on the connection of a unit of work (everything here commits with it).

One row per order in `stock_reservations` records what happened to it, whichever event came
first: RESERVED (stock taken, lines recorded), REJECTED (a line was short, nothing taken),
RELEASED (the reservation was given back), CANCELLED (the cancellation arrived before the order:
a late `order.created` reserves nothing). Both handlers start by writing that row, so the
primary key serialises them for one order even across replicas.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from google.protobuf.message import Message

from chassis.messaging.inbox import Inbox
from product_service.domain import Product, StockLine
from product_service.store import PRODUCT_COLUMNS, product_of

QUERY_TIMEOUT_SECONDS = 5.0


class ReservationStatus(enum.StrEnum):
    RESERVED = "RESERVED"
    REJECTED = "REJECTED"
    RELEASED = "RELEASED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Released:
    lines: list[StockLine]
    products: list[Product]  # as the release left them


class StockRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim_and_open(
        self, inbox: Inbox, event: Message, order_id: uuid.UUID
    ) -> bool | None:
        """Record that this order is being reserved now, in the same statement as the inbox's
        claim of `event` (one round trip): None for a duplicate (nothing written); False when
        the order already has a record (reserved before, or cancelled first), so nothing more
        is to be done; True when the reservation opened."""
        rows = await inbox.claim_with(
            event,
            "INSERT INTO stock_reservations (order_id, status) SELECT $1::uuid, 'RESERVED'"
            " FROM claim ON CONFLICT (order_id) DO NOTHING RETURNING true AS opened",
            order_id,
        )
        return None if rows is None else bool(rows)

    async def lock_stock(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The stock of these products, their rows locked in id order until commit."""
        rows = await self._conn.fetch(
            "SELECT id, stock FROM products WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
            list(product_ids),
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        return {row["id"]: row["stock"] for row in rows}

    async def take(self, order_id: uuid.UUID, lines: Sequence[StockLine]) -> list[Product]:
        """Decrement stock by every line (the caller checked it suffices, rows locked), record
        the lines on the order's reservation, and return the products as they now are."""
        ids, quantities = [line.product_id for line in lines], [line.quantity for line in lines]
        rows = await self._conn.fetch(
            "UPDATE products p SET stock = p.stock - l.quantity, updated_at = now()"  # noqa: S608
            " FROM unnest($1::uuid[], $2::int[]) AS l(product_id, quantity)"
            f" WHERE p.id = l.product_id AND p.stock >= l.quantity RETURNING {PRODUCT_COLUMNS}",
            ids,
            quantities,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        if len(rows) != len(lines):
            # Cannot happen with the rows locked and checked; refuse rather than half-reserve.
            raise RuntimeError(f"stock changed under a lock: {len(rows)} of {len(lines)} lines")
        await self._conn.execute(
            "INSERT INTO stock_reservation_lines (order_id, product_id, quantity)"
            " SELECT $1, * FROM unnest($2::uuid[], $3::int[])",
            order_id,
            ids,
            quantities,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        return [product_of(row) for row in rows]

    async def reject(self, order_id: uuid.UUID) -> None:
        await self._set_status(order_id, ReservationStatus.REJECTED)

    async def release(self, order_id: uuid.UUID) -> Released | None:
        """Give a RESERVED order's stock back (once: the reservation becomes RELEASED) and
        return its lines and the products as they now are. With no record yet, remember the
        cancellation (None); with any other record (rejected, released, cancelled), do nothing
        (None)."""
        remembered = await self._conn.fetchval(
            "INSERT INTO stock_reservations (order_id, status) VALUES ($1, 'CANCELLED')"
            " ON CONFLICT (order_id) DO NOTHING RETURNING true",
            order_id,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        if remembered:
            return None
        released = await self._conn.fetchval(
            "UPDATE stock_reservations SET status = 'RELEASED', updated_at = now()"
            " WHERE order_id = $1 AND status = 'RESERVED' RETURNING true",
            order_id,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        if not released:
            return None
        rows = await self._conn.fetch(
            "SELECT product_id, quantity FROM stock_reservation_lines WHERE order_id = $1"
            " ORDER BY product_id",
            order_id,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        lines = [StockLine(row["product_id"], row["quantity"]) for row in rows]
        await self.lock_stock([line.product_id for line in lines])
        products = await self._conn.fetch(
            "UPDATE products p SET stock = p.stock + l.quantity, updated_at = now()"  # noqa: S608
            " FROM unnest($1::uuid[], $2::int[]) AS l(product_id, quantity)"
            f" WHERE p.id = l.product_id RETURNING {PRODUCT_COLUMNS}",
            [line.product_id for line in lines],
            [line.quantity for line in lines],
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        return Released(lines, [product_of(row) for row in products])

    async def _set_status(self, order_id: uuid.UUID, status: ReservationStatus) -> None:
        await self._conn.execute(
            "UPDATE stock_reservations SET status = $2, updated_at = now() WHERE order_id = $1",
            order_id,
            status.value,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
