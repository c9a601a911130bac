"""Specs of the unit of work: the business change, the events it produced and the claim of the
event that caused it commit together or not at all (real PostgreSQL and RabbitMQ)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chassis.errors import Unavailable
from chassis.messaging import Broker, EventConsumer, MessagingRetention, OutboxRelay
from chassis.messaging.inbox import Outcome
from chassis.postgres import create_pool
from chassis.testing.proxy import TcpProxy
from chassis.unit_of_work import HandledOnce, UnitOfWork
from ecommerce.events.v1 import events_pb2

from .conftest import Tap
from .events import order_created
from .support import consuming, eventually, on_order_created, queue_is, running


class LedgerUnitOfWork(UnitOfWork):
    """A service's unit of work: its repository bound to the transaction's connection."""

    ledger: Ledger

    def bind(self, connection: asyncpg.Connection) -> None:
        self.ledger = Ledger(connection)


class Ledger:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record(self, order_id: str, quantity: int) -> None:
        await self._conn.execute(
            "INSERT INTO ledger (order_id, quantity) VALUES ($1, $2)", uuid.UUID(order_id), quantity
        )


@pytest.fixture
async def ledger_pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    await pool.execute("CREATE TABLE ledger (order_id uuid, quantity int)")
    return pool


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    ledger = await pool.fetchval("SELECT count(*) FROM ledger")
    outbox = await pool.fetchval("SELECT count(*) FROM outbox")
    return int(ledger), int(outbox)


async def test_leaving_the_block_commits_the_change_and_its_event_together(
    ledger_pool: asyncpg.Pool,
) -> None:
    event = order_created()
    async with LedgerUnitOfWork(ledger_pool) as uow:
        await uow.ledger.record(event.order_id, 2)
        uow.publish(event)
    assert uow.committed
    assert await counts(ledger_pool) == (1, 1)
    row = await ledger_pool.fetchrow("SELECT event_id, correlation_id FROM outbox")
    assert (str(row["event_id"]), row["correlation_id"]) == (event.event_id, event.order_id)


async def test_a_failure_after_an_event_was_added_leaves_neither_the_change_nor_the_event(
    ledger_pool: asyncpg.Pool,
) -> None:
    event = order_created()
    after_commit_ran = False

    async def after_commit() -> None:
        nonlocal after_commit_ran
        after_commit_ran = True

    uow = LedgerUnitOfWork(ledger_pool)

    async def fail_after_publishing() -> None:
        async with uow:
            await uow.ledger.record(event.order_id, 2)
            uow.publish(event)
            uow.after_commit(after_commit)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_after_publishing()
    assert await counts(ledger_pool) == (0, 0)
    assert not uow.committed
    assert not after_commit_ran


async def test_an_inbox_duplicate_inside_a_unit_of_work_has_no_effect(
    ledger_pool: asyncpg.Pool,
) -> None:
    event = order_created()

    async def effect(uow: LedgerUnitOfWork, received: events_pb2.OrderCreated) -> None:
        await uow.ledger.record(received.order_id, 1)
        uow.publish(order_created())

    handle = HandledOnce(lambda: LedgerUnitOfWork(ledger_pool, consumer="ledger"))(effect)
    outcomes = [await handle(event) for _ in range(3)]
    assert outcomes == ["processed", "duplicate", "duplicate"]
    assert await counts(ledger_pool) == (1, 1)


async def test_concurrent_duplicates_have_one_effect(ledger_pool: asyncpg.Pool) -> None:
    event = order_created()

    async def effect(uow: LedgerUnitOfWork, received: events_pb2.OrderCreated) -> None:
        await uow.ledger.record(received.order_id, 1)
        await asyncio.sleep(0.05)

    handle = HandledOnce(lambda: LedgerUnitOfWork(ledger_pool, consumer="ledger"))(effect)
    outcomes = await asyncio.gather(*(handle(event) for _ in range(8)))
    assert sorted(outcomes) == ["duplicate"] * 7 + ["processed"]
    assert await counts(ledger_pool) == (1, 0)


async def claim_and_record(
    pool: asyncpg.Pool, event: events_pb2.OrderCreated, *, hold: float = 0.0
) -> list[asyncpg.Record] | None:
    """The claim and the effect's first statement as one statement (`Inbox.claim_with`)."""
    async with LedgerUnitOfWork(pool, consumer="ledger") as uow:
        rows = await uow.inbox.claim_with(
            event,
            "INSERT INTO ledger (order_id, quantity) SELECT $1, $2 FROM claim"
            " RETURNING order_id, quantity",
            uuid.UUID(event.order_id),
            3,
        )
        if rows is not None:
            uow.publish(order_created())
        await asyncio.sleep(hold)
    return rows


async def test_a_claim_made_with_the_effects_first_statement_has_one_effect(
    ledger_pool: asyncpg.Pool,
) -> None:
    event = order_created()
    first = await claim_and_record(ledger_pool, event)
    assert first is not None
    assert [(str(row["order_id"]), row["quantity"]) for row in first] == [(event.order_id, 3)]
    assert await claim_and_record(ledger_pool, event) is None
    assert await counts(ledger_pool) == (1, 1)


async def test_concurrent_duplicates_claimed_with_the_effect_have_one_effect(
    ledger_pool: asyncpg.Pool,
) -> None:
    event = order_created()
    answers = await asyncio.gather(
        *(claim_and_record(ledger_pool, event, hold=0.05) for _ in range(8))
    )
    assert sorted(answer is None for answer in answers) == [False] + [True] * 7
    assert await counts(ledger_pool) == (1, 1)


async def test_a_claimed_effect_that_returns_no_row_is_still_a_claim(
    ledger_pool: asyncpg.Pool,
) -> None:
    event = order_created()
    async with LedgerUnitOfWork(ledger_pool, consumer="ledger") as uow:
        rows = await uow.inbox.claim_with(
            event,
            "UPDATE ledger SET quantity = quantity + 1"
            " WHERE order_id = $1 AND EXISTS (SELECT FROM claim) RETURNING quantity",
            uuid.UUID(event.order_id),
        )
    assert rows == []
    assert await ledger_pool.fetchval("SELECT count(*) FROM inbox") == 1


async def test_an_effect_claiming_in_its_own_statement_is_handled_once(
    ledger_pool: asyncpg.Pool,
) -> None:
    """`HandledOnce.claiming`, with the effect's statement built on common table expressions
    (`ctes`, at the statement's top level beside the claim)."""

    async def effect(uow: LedgerUnitOfWork, received: events_pb2.OrderCreated) -> Outcome:
        rows = await uow.inbox.claim_with(
            received,
            "SELECT order_id, quantity * 10 AS tenfold FROM recorded",
            uuid.UUID(received.order_id),
            ctes="recorded AS (INSERT INTO ledger SELECT $1, 2 FROM claim RETURNING *)",
        )
        if rows is None:
            return Outcome.DUPLICATE
        assert [row["tenfold"] for row in rows] == [20]
        uow.publish(order_created())
        return Outcome.PROCESSED

    handle = HandledOnce(lambda: LedgerUnitOfWork(ledger_pool, consumer="ledger")).claiming(effect)
    event = order_created()
    outcomes = await asyncio.gather(*(handle(event) for _ in range(4)))
    outcomes += [await handle(event)]
    assert sorted(outcomes) == ["duplicate"] * 4 + ["processed"]
    assert await counts(ledger_pool) == (1, 1)


async def test_an_effect_that_does_not_read_the_claim_is_refused(
    ledger_pool: asyncpg.Pool,
) -> None:
    async with LedgerUnitOfWork(ledger_pool, consumer="ledger") as uow:
        with pytest.raises(ValueError, match="claim"):
            await uow.inbox.claim_with(
                order_created(),
                "INSERT INTO ledger VALUES ($1, 1) RETURNING quantity",
                uuid.uuid4(),
            )


async def test_an_event_amqp_cannot_carry_fails_its_own_unit_of_work(
    ledger_pool: asyncpg.Pool,
) -> None:

    async def publish_oversized() -> None:
        async with LedgerUnitOfWork(ledger_pool) as uow:
            await uow.ledger.record(str(uuid.uuid4()), 1)
            uow.publish(order_created(order_id="é" * 200))

    with pytest.raises(ValueError, match="correlation_id"):
        await publish_oversized()
    assert await counts(ledger_pool) == (0, 0)


async def test_a_database_that_cannot_be_reached_is_unavailable(database_url: str) -> None:
    async with TcpProxy(*_host_port(database_url)) as proxy:
        pool = await asyncpg.create_pool(_via(database_url, proxy.port), min_size=0, timeout=2)
        try:
            await proxy.cut()
            with pytest.raises(Unavailable):
                async with UnitOfWork(pool):
                    pass
        finally:
            pool.terminate()


async def record_twice_losing_the_database_between(pool: asyncpg.Pool, proxy: TcpProxy) -> None:
    async with LedgerUnitOfWork(pool) as uow:
        await uow.ledger.record(str(uuid.uuid4()), 1)
        await proxy.cut()
        await uow.ledger.record(str(uuid.uuid4()), 1)


async def test_a_connection_lost_inside_the_block_is_unavailable_not_an_internal_error(
    ledger_pool: asyncpg.Pool, database_url: str
) -> None:
    """The database goes away between two statements: the rollback has no connection left to
    run on, and the caller hears UNAVAILABLE (retry later), never an internal error."""
    async with TcpProxy(*_host_port(database_url)) as proxy:
        pool = await asyncpg.create_pool(_via(database_url, proxy.port), min_size=0, timeout=2)
        try:
            with pytest.raises(Unavailable):
                await record_twice_losing_the_database_between(pool, proxy)
        finally:
            pool.terminate()
    assert await counts(ledger_pool) == (0, 0)


@pytest.mark.slow
async def test_a_short_database_outage_dead_letters_nothing_and_every_effect_happens_once(
    ledger_pool: asyncpg.Pool, database_url: str, broker: Broker
) -> None:
    """The handler's database goes away for three seconds while events flow: the consumer
    pauses and resumes; no event reaches the dead-letter queue, none has its effect twice."""
    async with TcpProxy(*_host_port(database_url)) as proxy:
        pool = await asyncpg.create_pool(
            _via(database_url, proxy.port), min_size=0, max_size=8, timeout=2, command_timeout=2
        )

        async def effect(uow: LedgerUnitOfWork, event: events_pb2.OrderCreated) -> None:
            await uow.ledger.record(event.order_id, event.lines[0].quantity)

        handler = HandledOnce(lambda: LedgerUnitOfWork(pool, consumer="ledger"))(effect)
        consumer = EventConsumer(broker, "ledger", on_order_created(handler))
        events = [order_created() for _ in range(300)]
        try:
            async with consuming(consumer):
                for index, event in enumerate(events):
                    if index == 50:
                        await proxy.cut()
                    await broker.publish(event)
                await asyncio.sleep(3)
                await proxy.restore()

                async def all_recorded() -> bool:
                    return await ledger_pool.fetchval("SELECT count(*) FROM ledger") == len(events)

                await eventually(all_recorded, within=60)
                assert await queue_is(broker, consumer.dead_letter_queue_name, 0)
        finally:
            pool.terminate()
    rows = await ledger_pool.fetch("SELECT order_id FROM ledger")
    assert sorted(str(r["order_id"]) for r in rows) == sorted(e.order_id for e in events)


async def test_events_of_a_unit_of_work_reach_the_broker_through_the_relay(
    ledger_pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    event = order_created()
    async with LedgerUnitOfWork(ledger_pool) as uow:
        await uow.ledger.record(event.order_id, 1)
        uow.publish(event)
    async with running(OutboxRelay(database_url, broker)):
        [message] = await tap.wait_for(1)
    assert message.message_id == event.event_id


async def test_retention_purges_old_rows_in_chunks_and_keeps_what_is_pending(
    ledger_pool: asyncpg.Pool,
) -> None:
    await ledger_pool.execute(
        "INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, payload,"
        " published_at) SELECT gen_random_uuid(), 't', 'k', 'c', '', now() - interval '2 days'"
        " FROM generate_series(1, 250)"
    )
    await ledger_pool.execute(
        "INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, payload)"
        " SELECT gen_random_uuid(), 't', 'k', 'c', '' FROM generate_series(1, 5)"
    )
    await ledger_pool.execute(
        "INSERT INTO inbox (consumer, event_id, event_type, processed_at) SELECT 'c',"
        " gen_random_uuid(), 't', now() - interval '30 days' FROM generate_series(1, 120)"
    )
    await ledger_pool.execute(
        "INSERT INTO inbox (consumer, event_id, event_type) VALUES ('c', gen_random_uuid(), 't')"
    )
    retention = MessagingRetention(
        ledger_pool,
        outbox_retention=timedelta(days=1),
        inbox_retention=timedelta(days=7),
        chunk=100,
    )
    assert await retention.purge_once() == {"outbox": 250, "inbox": 120}
    assert await ledger_pool.fetchval("SELECT count(*) FROM outbox") == 5
    assert await ledger_pool.fetchval("SELECT count(*) FROM inbox") == 1


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))


async def answering(url: str, within: float = 10.0) -> None:
    """Wait until the server behind `url` takes a new connection."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            connection = await asyncpg.connect(url, timeout=1)
            await connection.close()
            return
        except (OSError, asyncpg.PostgresError, TimeoutError):
            assert asyncio.get_running_loop().time() < deadline, "the database never answered"
            await asyncio.sleep(0.05)


async def record_in_units_of_work(pool: asyncpg.Pool, count: int) -> list[BaseException]:
    async def record() -> None:
        async with LedgerUnitOfWork(pool) as uow:
            await uow.ledger.record(str(uuid.uuid4()), 1)
            await asyncio.sleep(0.01)  # held a moment, so that many connections are in use

    results = await asyncio.gather(*(record() for _ in range(count)), return_exceptions=True)
    return [result for result in results if isinstance(result, BaseException)]


@pytest.mark.slow
@pytest.mark.parametrize("graceful", [False, True], ids=["reset", "closed"])
async def test_after_a_database_restart_no_unit_of_work_fails_once_it_answers(
    ledger_pool: asyncpg.Pool, database_url: str, graceful: bool
) -> None:
    """Every pooled connection dies in the restart; once the server answers, 50 units of work
    at once all commit (the pool replaces the connections it knows are closed)."""
    async with TcpProxy.in_front_of(database_url) as proxy:
        pool = await create_pool(proxy.url(database_url), max_size=8)
        try:
            assert await record_in_units_of_work(pool, 16) == []
            assert proxy.connections == 8

            await proxy.restart(down_for=1.0, graceful=graceful)
            await answering(proxy.url(database_url))

            assert await record_in_units_of_work(pool, 50) == []
        finally:
            pool.terminate()
    assert await counts(ledger_pool) == (66, 0)


async def test_a_connection_that_died_unnoticed_is_replaced_at_begin(
    ledger_pool: asyncpg.Pool, database_url: str
) -> None:
    """The server forgot every pooled connection without a word (a host reboot, an expired NAT
    entry): BEGIN finds each out, nothing of the transaction reached the server, and the unit of
    work starts again on a fresh connection, once."""
    async with TcpProxy.in_front_of(database_url) as proxy:
        pool = await create_pool(proxy.url(database_url), max_size=8)
        try:
            assert await record_in_units_of_work(pool, 16) == []
            await proxy.forget_connections()

            assert await record_in_units_of_work(pool, 50) == []
        finally:
            pool.terminate()
    assert await counts(ledger_pool) == (66, 0)
