"""The provider worker against its own database and a scripted provider (no broker): the
authorisation deadline, a transient failure's backoff, and an answer that comes after the payment
moved on (recorded nowhere: the guard on the state it started from)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from chassis import postgres
from chassis.errors import Unavailable
from chassis.testing.plugin import CreateDatabase
from ecommerce.events.v1 import events_pb2
from payment_service import handlers
from payment_service.domain import Answer
from payment_service.handlers import Wake
from payment_service.provider import ProviderUnavailable
from payment_service.store import MIGRATIONS_DIR, PaymentStore, PaymentUnitOfWork
from payment_service.worker import PaymentWorker, WorkerSettings

from .support import sample


@dataclass
class ScriptedProvider:
    """Answers as told; `authorize` can be held until a test lets it go."""

    authorize_answer: Answer | None = Answer.AUTHORIZED  # None: unavailable
    hold: asyncio.Event | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def authorize(
        self, key: str, *, payment_token: str, amount_cents: int, currency: str
    ) -> tuple[Answer, str | None]:
        self.calls.append(("authorize", key))
        self.called.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.authorize_answer is None:
            raise ProviderUnavailable("scripted outage")
        return self.authorize_answer, None

    async def capture(self, key: str) -> Answer:
        self.calls.append(("capture", key))
        return Answer.CAPTURED

    async def void(self, key: str) -> Answer:
        self.calls.append(("void", key))
        return Answer.VOIDED

    async def refund(self, key: str) -> Answer:
        self.calls.append(("refund", key))
        return Answer.REFUNDED

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
async def pool(create_database: CreateDatabase) -> AsyncIterator[asyncpg.Pool]:
    url = await create_database("payments_worker")
    await postgres.migrate(url, MIGRATIONS_DIR)
    pool = await postgres.create_pool(url, max_size=3)
    yield pool
    await pool.close()


async def wake_nobody() -> None:
    """Handlers' payments are made due for any worker's next round; here no worker is woken."""


def new_worker(
    pool: asyncpg.Pool, provider: ScriptedProvider, *, deadline: float = 60.0
) -> tuple[PaymentWorker, Callable[[], PaymentUnitOfWork]]:
    def new_unit_of_work() -> PaymentUnitOfWork:
        return PaymentUnitOfWork(pool, consumer="service-payment")

    settings = WorkerSettings(
        provider_timeout_seconds=1.0,
        retry_base_seconds=0.02,
        retry_max_seconds=0.05,
        authorize_deadline_seconds=deadline,
        interval_seconds=0.05,
    )
    return PaymentWorker(new_unit_of_work, PaymentStore(pool), provider, settings), new_unit_of_work


async def deliver(
    new_unit_of_work: Callable[[], PaymentUnitOfWork],
    effect: Callable[..., Awaitable[object]],
    event: Any,
) -> None:
    """`event` handled as the consumer would: with an id of its own, in its own unit of work."""
    event.event_id = event.event_id or str(uuid.uuid4())
    async with new_unit_of_work() as uow:
        await effect(uow, event, wake=wake_nobody)


async def wanted(
    new_unit_of_work: Callable[[], PaymentUnitOfWork],
    order_id: str,
    wake: Wake = wake_nobody,
) -> None:
    """An intent with its stock reserved: AUTHORIZING and due (`wake` woken after the commit)."""
    await deliver(
        new_unit_of_work,
        handlers.on_order_created,
        events_pb2.OrderCreated(
            order_id=order_id,
            user_id=str(uuid.uuid4()),
            total_cents=1000,
            currency="EUR",
            payment_token="pm_card_ok",
        ),
    )
    async with new_unit_of_work() as uow:
        await handlers.on_stock_reserved(
            uow, events_pb2.StockReserved(event_id=str(uuid.uuid4()), order_id=order_id), wake=wake
        )


async def row(pool: asyncpg.Pool, order_id: str) -> asyncpg.Record:
    found = await pool.fetchrow("SELECT * FROM payments WHERE order_id = $1", uuid.UUID(order_id))
    assert found is not None
    return found


async def outbox(pool: asyncpg.Pool, order_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event_type FROM outbox WHERE correlation_id = $1 ORDER BY id", order_id
    )
    return [r["event_type"].rsplit(".", 1)[1] for r in rows]


async def test_authorising_stops_at_the_deadline_and_a_later_cancel_still_voids(
    pool: asyncpg.Pool,
) -> None:
    order_id = str(uuid.uuid4())
    provider = ScriptedProvider(authorize_answer=None)
    worker, new_unit_of_work = new_worker(pool, provider, deadline=0.4)
    abandoned_before = sample("payment_authorizations_abandoned_total")
    await wanted(new_unit_of_work, order_id)

    async with asyncio.timeout(10):
        while True:
            await worker.run_once()
            current = await row(pool, order_id)
            if current["next_attempt_at"] is None:
                break
            await asyncio.sleep(0.02)
    attempts = current["provider_attempts"]
    await asyncio.sleep(0.2)
    await worker.run_once()  # nothing is due any more
    await deliver(
        new_unit_of_work,
        handlers.on_order_cancelled,
        events_pb2.OrderCancelled(order_id=order_id, user_id=str(uuid.uuid4())),
    )
    await worker.run_once()

    assert current["state"] == "AUTHORIZING"
    assert attempts >= 2
    assert provider.calls.count(("authorize", order_id)) == attempts
    assert sample("payment_authorizations_abandoned_total") == abandoned_before + 1
    assert provider.calls[-1] == ("void", order_id)
    assert (await row(pool, order_id))["state"] == "VOIDED"
    assert await outbox(pool, order_id) == ["PaymentVoided"]


async def test_an_authorisation_answered_after_the_payment_was_voided_is_recorded_nowhere(
    pool: asyncpg.Pool,
) -> None:
    order_id = str(uuid.uuid4())
    provider = ScriptedProvider(hold=asyncio.Event())
    worker, new_unit_of_work = new_worker(pool, provider)
    await wanted(new_unit_of_work, order_id)

    in_flight = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(provider.called.wait(), 5)
    await deliver(
        new_unit_of_work,
        handlers.on_order_cancelled,
        events_pb2.OrderCancelled(order_id=order_id, user_id=str(uuid.uuid4())),
    )
    await worker.run_once()  # the cancel made it due again: void
    voided = await row(pool, order_id)
    assert provider.hold is not None
    provider.hold.set()
    await in_flight

    assert voided["state"] == "VOIDED"
    assert (await row(pool, order_id))["state"] == "VOIDED"
    assert await outbox(pool, order_id) == ["PaymentVoided"]
    assert provider.calls == [("authorize", order_id), ("void", order_id)]


async def test_a_payment_a_handler_made_due_is_due_at_once_for_any_worker(
    pool: asyncpg.Pool,
) -> None:
    """The handler's one statement makes the payment due now, not leased to its own worker: a
    hand-over lost between the commit and the call (a consumer's task cancelled) must not leave
    it to nobody until a lease runs out. Any worker's next round takes it."""
    provider = ScriptedProvider()
    worker, new_unit_of_work = new_worker(pool, provider)
    replica_provider = ScriptedProvider()
    replica, _ = new_worker(pool, replica_provider)
    order_id = str(uuid.uuid4())

    await wanted(new_unit_of_work, order_id, worker.wake)  # the worker itself never runs
    due = await row(pool, order_id)
    await replica.run_once()

    assert due["state"] == "AUTHORIZING"
    assert due["next_attempt_at"] <= await pool.fetchval("SELECT now()")
    assert [call for call in replica_provider.calls if call[1] == order_id] == [
        ("authorize", order_id)
    ]
    assert (await row(pool, order_id))["state"] == "AUTHORIZED"
    assert await outbox(pool, order_id) == ["PaymentAuthorized"]


async def test_a_payment_leased_by_a_worker_that_died_is_taken_again_with_the_same_key(
    pool: asyncpg.Pool,
) -> None:
    order_id = str(uuid.uuid4())
    provider = ScriptedProvider()
    worker, new_unit_of_work = new_worker(pool, provider)
    await wanted(new_unit_of_work, order_id)
    store = PaymentStore(pool)
    [lease] = [
        lease
        for lease in await store.lease_due(limit=100, lease_seconds=0.2)
        if str(lease.payment.order_id) == order_id
    ]  # taken, then the worker holding it died

    await worker.run_once()  # leased: left alone
    calls_while_leased = list(provider.calls)
    await asyncio.sleep(0.3)
    await worker.run_once()  # the lease ran out

    assert lease.payment.state.value == "AUTHORIZING"
    assert calls_while_leased == []
    assert provider.calls == [("authorize", order_id)]
    assert (await row(pool, order_id))["state"] == "AUTHORIZED"
    assert await outbox(pool, order_id) == ["PaymentAuthorized"]


async def test_an_answer_the_database_could_not_record_is_recorded_next_round_not_after_the_lease(
    pool: asyncpg.Pool,
) -> None:
    """The provider authorised, then the database went away before the answer was recorded:
    the worker still holds the lease (several seconds, longer than is left of a saga's
    timeout), so it asks again itself in its next round (the provider answers what it stored)
    instead of leaving the payment until the lease runs out."""
    provider = ScriptedProvider()
    worker, new_unit_of_work = new_worker(pool, provider)
    order_id = str(uuid.uuid4())
    await wanted(new_unit_of_work, order_id)
    outage = {"on": True}

    def flaky_unit_of_work() -> PaymentUnitOfWork:
        if outage["on"]:
            raise Unavailable("the payment database is unavailable")
        return new_unit_of_work()

    flaky = PaymentWorker(flaky_unit_of_work, PaymentStore(pool), provider, worker._settings)
    assert await flaky.run_once() >= 1
    assert (await row(pool, order_id))["state"] == "AUTHORIZING"
    outage["on"] = False
    await flaky.run_once()  # the row is still leased: only the stalled lease is processed
    assert (await row(pool, order_id))["state"] == "AUTHORIZED"
    assert provider.calls.count(("authorize", order_id)) == 2
