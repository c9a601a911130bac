"""Confirmed publishing keeps its deadline even when a confirm never comes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from chassis.messaging import Broker, ConfirmTimeout, OutgoingEvent
from chassis.settings import AmqpSettings

from .conftest import Tap
from .events import order_created
from .support import rabbitmqctl


async def test_a_publish_whose_confirm_never_comes_fails_at_its_deadline_on_a_fresh_channel(
    amqp_settings: AmqpSettings, tap: Tap
) -> None:
    broker = Broker(amqp_settings, "messaging-tests", publish_timeout=0.5)
    await broker.connect()
    try:
        stuck_exchange = broker._exchange
        assert stuck_exchange is not None

        async def confirm_never_comes(*_: Any, **__: Any) -> None:
            # A lost confirm, or a robust channel waiting for its connection: no end in sight.
            await asyncio.Event().wait()

        stuck_exchange.publish = confirm_never_comes  # type: ignore[method-assign]
        started = time.monotonic()
        with pytest.raises(ConfirmTimeout):
            await broker.publish_outgoing(OutgoingEvent.of(order_created()))
        assert time.monotonic() - started < 5

        event = order_created()
        await broker.publish(event)
        [message] = await tap.wait_for(1)
        assert message.message_id == event.event_id
        assert broker._exchange is not stuck_exchange
    finally:
        await broker.close()


async def test_publish_retries_once_when_the_first_confirm_is_lost(
    amqp_settings: AmqpSettings, tap: Tap
) -> None:
    broker = Broker(amqp_settings, "messaging-tests", publish_timeout=0.5)
    await broker.connect()
    try:
        exchange = broker._exchange
        assert exchange is not None

        async def confirm_never_comes(*_: Any, **__: Any) -> None:
            await asyncio.Event().wait()

        exchange.publish = confirm_never_comes  # type: ignore[method-assign]
        event = order_created()
        await broker.publish(event)
        [message] = await tap.wait_for(1)
        assert message.message_id == event.event_id
    finally:
        await broker.close()


@pytest.mark.slow
async def test_a_batch_of_publishes_timing_out_together_replaces_the_channel_once(
    amqp_settings: AmqpSettings, tap: Tap
) -> None:
    """On a stalled channel a whole relay batch times out at once; the next batch must find one
    fresh channel, not open one per publish (the broker closes a connection at 2,047)."""
    connection_name = f"leak-{uuid.uuid4()}"
    broker = Broker(
        amqp_settings, "messaging-tests", publish_timeout=0.5, connection_name=connection_name
    )
    await broker.connect()
    try:
        for _ in range(3):
            # A good publish first: it opens the (fresh) channel this round will stall.
            await broker.publish(order_created())
            exchange = broker._exchange
            assert exchange is not None

            async def confirm_never_comes(*_: Any, **__: Any) -> None:
                await asyncio.Event().wait()

            exchange.publish = confirm_never_comes  # type: ignore[method-assign]
            outcomes = await asyncio.gather(
                *(broker.publish_outgoing(OutgoingEvent.of(order_created())) for _ in range(100)),
                return_exceptions=True,
            )
            assert all(isinstance(outcome, ConfirmTimeout) for outcome in outcomes)
        events = [order_created() for _ in range(100)]
        await asyncio.gather(*(broker.publish(e) for e in events))
        await tap.wait_for(103)
        assert await open_channels(connection_name) <= 2
    finally:
        await broker.close()


async def open_channels(connection_name: str) -> int:
    listing = await rabbitmqctl("list_connections", "channels", "client_properties")
    [count] = [
        int(line.split("\t", 1)[0])
        for line in listing.splitlines()
        if f'{{"connection_name","{connection_name}"}}' in line
    ]
    return count
