"""Confirmed publishing keeps its deadline even when a confirm never comes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chassis.messaging import Broker, ConfirmTimeout, OutgoingEvent
from chassis.settings import AmqpSettings

from .conftest import Tap
from .events import order_created


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
            await broker.publish_outgoing(
                OutgoingEvent.of(order_created(), routing_key="order.created", correlation_id="c")
            )
        assert time.monotonic() - started < 5

        event = order_created()
        await broker.publish(event, routing_key="order.created", correlation_id="c")
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
        await broker.publish(event, routing_key="order.created", correlation_id="c")
        [message] = await tap.wait_for(1)
        assert message.message_id == event.event_id
    finally:
        await broker.close()
