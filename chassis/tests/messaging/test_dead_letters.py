"""Specs of the dead-letter tooling: `chassis-dead-letters show` and `redrive`, run as the real
command against the real broker, and the inbox that keeps a re-driven event's effect single."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg
import pytest

from chassis.messaging import Broker, EventConsumer
from chassis.settings import AmqpSettings
from chassis.unit_of_work import HandledOnce, UnitOfWork
from ecommerce.events.v1 import events_pb2

from .events import order_created
from .support import consuming, eventually, on_order_created, queue_is


async def command(settings: AmqpSettings, *args: str) -> str:
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url,
        "EVENTS_EXCHANGE": settings.events_exchange,
        "QUEUE_PREFIX": settings.queue_prefix,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chassis.messaging.dead_letters",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.slow
async def test_a_dead_lettered_event_is_shown_then_re_driven_and_takes_effect_once(
    amqp_settings: AmqpSettings, broker: Broker, pool: asyncpg.Pool
) -> None:
    await pool.execute("CREATE TABLE effects (order_id uuid)")
    fixed = False

    async def effect(uow: UnitOfWork, event: events_pb2.OrderCreated) -> None:
        if not fixed:
            raise RuntimeError("bug 1234: cannot handle this order")
        await uow.connection.execute("INSERT INTO effects VALUES ($1)", uuid.UUID(event.order_id))

    handler = HandledOnce(lambda: UnitOfWork(pool, consumer="effects"))(effect)
    consumer = EventConsumer(broker, "effects", on_order_created(handler))
    broken, healthy = order_created(), order_created()
    async with consuming(consumer):
        await broker.publish(broken)
        await eventually(lambda: queue_is(broker, consumer.dead_letter_queue_name, 1))

    shown = await command(amqp_settings, "show", "effects")
    assert broken.event_id in shown
    assert "routing_key=order.created" in shown
    assert "bug 1234" in shown
    assert await broker.queue_depth(consumer.dead_letter_queue_name) == 1  # show moves nothing

    fixed = True
    moved = await command(amqp_settings, "redrive", "effects")
    assert "moved 1" in moved
    async with consuming(consumer):
        await broker.publish(healthy)

        async def both_effects() -> bool:
            return await pool.fetchval("SELECT count(*) FROM effects") == 2

        await eventually(both_effects)
        # A second re-drive of the same event (an operator's double click) has no effect.
        await broker.publish(broken)
        await asyncio.sleep(0.5)
    rows = await pool.fetch("SELECT order_id FROM effects")
    assert sorted(str(r["order_id"]) for r in rows) == sorted([broken.order_id, healthy.order_id])
    assert await broker.queue_depth(consumer.dead_letter_queue_name) == 0
