"""The saga timeout: a background task that cancels (TIMEOUT) every order still PENDING past
SAGA_TIMEOUT_SECONDS, every SAGA_SWEEP_INTERVAL_SECONDS. Safe with any number of replicas: each
batch claims its rows with FOR UPDATE SKIP LOCKED and moves them with a guarded UPDATE."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chassis.errors import Unavailable
from chassis.logging import get_logger
from order_service.handlers import expire_pending_orders
from order_service.store import EXPIRE_BATCH_SIZE, OrderUnitOfWork

_log = get_logger(__name__)


class SagaTimeoutSweeper:
    def __init__(
        self,
        new_unit_of_work: Callable[[], OrderUnitOfWork],
        *,
        timeout_seconds: float,
        interval_seconds: float,
    ) -> None:
        self._new_unit_of_work = new_unit_of_work
        self._timeout = timeout_seconds
        self._interval = interval_seconds

    async def run(self) -> None:
        """Sweep forever; a database outage is logged and the next sweep tries again."""
        while True:
            try:
                await self.sweep()
            except Unavailable as error:
                _log.warning("saga_sweep_failed", error=str(error))
            await asyncio.sleep(self._interval)

    async def sweep(self) -> int:
        """Expire every overdue order, one unit of work per batch; returns how many."""
        total = 0
        while True:
            async with self._new_unit_of_work() as uow:
                expired = await expire_pending_orders(uow, timeout_seconds=self._timeout)
            total += expired
            if expired < EXPIRE_BATCH_SIZE:
                return total
