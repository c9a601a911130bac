"""Checkout admission: new checkouts are refused (UNAVAILABLE with retry advice, 503 and
`Retry-After` at the gateway) while the saga is behind, so that accepted orders do not pile up
and end as TIMEOUT cancellations.

"Behind" is read from this service's own database, sampled in the background (one query per
`CHECKOUT_BACKLOG_SAMPLE_SECONDS`, never one per checkout):
- stale orders: orders PENDING for longer than `CHECKOUT_BACKLOG_STALE_SECONDS`. Every step of
  the saga downstream (a queue waiting for its consumer, a participant down, a relay behind) ends
  up here, so the broker's queues need not be asked. A few stuck orders (a poison event on its way
  to a dead-letter queue) stay under `CHECKOUT_BACKLOG_MAX_STALE_ORDERS`; a saga falling behind
  ages hundreds past it;
- the outbox: events committed but not published (`CHECKOUT_BACKLOG_MAX_OUTBOX`), or the oldest
  of them older than `CHECKOUT_BACKLOG_MAX_OUTBOX_AGE_SECONDS` (the broker is down or the relay
  cannot keep up). Parked rows are an operator's matter and do not count.

A reading older than three sample periods (the database is unreachable) refuses nothing: the
checkout itself then fails on its own, with its own status.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter, Gauge

from chassis.errors import Unavailable
from chassis.logging import get_logger

_log = get_logger(__name__)

STALE_ORDERS = Gauge(
    "checkout_backlog_stale_orders",
    "Orders PENDING longer than CHECKOUT_BACKLOG_STALE_SECONDS, at the last sample",
)
CHECKOUTS_REFUSED = Counter(
    "checkouts_refused",
    "Checkouts refused because the saga was behind, by the bound that was passed",
    ["bound"],
)

_SAMPLE = """
SELECT
    (SELECT count(*) FROM orders
      WHERE status = 'PENDING' AND created_at < now() - make_interval(secs => $1)) AS stale,
    count(*) AS outbox,
    coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS outbox_age
FROM outbox WHERE published_at IS NULL AND parked_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class BacklogBounds:
    stale_after_seconds: float
    max_stale_orders: int
    max_outbox: int
    max_outbox_age_seconds: float


@dataclass(frozen=True, slots=True)
class BacklogReading:
    stale_orders: int
    outbox: int
    outbox_age_seconds: float


def bound_passed(reading: BacklogReading, bounds: BacklogBounds) -> str | None:
    """The bound `reading` is past (the refusal's reason), or None."""
    if reading.stale_orders > bounds.max_stale_orders:
        return "stale_orders"
    if reading.outbox > bounds.max_outbox:
        return "outbox"
    if reading.outbox_age_seconds > bounds.max_outbox_age_seconds:
        return "outbox_age"
    return None


class CheckoutAdmission:
    """`run()` samples the backlog forever; `check()` refuses a checkout from the last sample."""

    def __init__(self, pool: asyncpg.Pool, bounds: BacklogBounds, *, sample_seconds: float) -> None:
        self._pool = pool
        self._bounds = bounds
        self._interval = sample_seconds
        self._reading: BacklogReading | None = None
        self._read_at = -math.inf
        self.retry_after_seconds = max(1.0, 2 * sample_seconds)

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                _log.warning("checkout_backlog_sample_failed", error=str(error))
            await asyncio.sleep(self._interval)

    async def sample(self) -> BacklogReading:
        row = await self._pool.fetchrow(_SAMPLE, self._bounds.stale_after_seconds)
        if row is None:  # an aggregate always has a row
            raise asyncpg.InterfaceError("the backlog query returned no row")
        reading = BacklogReading(int(row["stale"]), int(row["outbox"]), float(row["outbox_age"]))
        STALE_ORDERS.set(reading.stale_orders)
        self._reading, self._read_at = reading, time.monotonic()
        return reading

    def check(self) -> None:
        """Raise `Unavailable` with a RetryInfo while the last fresh reading is past a bound."""
        fresh = time.monotonic() - self._read_at <= 3 * self._interval
        if self._reading is None or not fresh:
            return
        bound = bound_passed(self._reading, self._bounds)
        if bound is None:
            return
        CHECKOUTS_REFUSED.labels(bound).inc()
        raise Unavailable(
            "checkouts are paused while earlier orders are processed, retry later",
            retry_after_seconds=self.retry_after_seconds,
        )
