"""A fresh install where service-order starts first: its `order.created` is published before any
queue of service-product or service-cart is bound to the exchange. No event may be lost for it:
once they start, the order ends CONFIRMED and the cart is cleaned."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from chassis.testing.waiting import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Honcho, Platform
from .shop import Admin, login, new_shopper, stock_of


@pytest.mark.slow
async def test_an_order_placed_before_its_consumers_ever_bound_their_queues_is_confirmed(
    make_env: Callable[[str], Awaitable[dict[str, str]]],
) -> None:
    env = await make_env("fresh")
    # The shop must run to fill a cart and price it, so service-product and service-cart first
    # run on another exchange: on this platform's exchange, no queue of theirs exists yet.
    elsewhere = {**env, "EVENTS_EXCHANGE": env["EVENTS_EXCHANGE"] + ".elsewhere"}
    platform = Platform(f"http://127.0.0.1:{env['GATEWAY_PORT']}", env)
    for name in ("service-user", "service-order", "api-gateway"):
        platform.start(name)
    for name in ("service-product", "service-cart"):
        platform.processes[name] = Honcho(elsewhere, (name,)).start()
    try:
        platform.wait_ready()
        async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as client:
            admin = Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
            product = await admin.create_product(stock=5)
            shopper = await new_shopper(client)
            await shopper.add(product["id"], 2)
            pending = await shopper.checkout_order()

            # Now they start as a fresh install would have them: on the platform's exchange.
            for name in ("service-product", "service-cart"):
                platform.restart(name)
            order = await shopper.final_order(pending["id"], within=60)
            assert order["status"] == "CONFIRMED"
            assert await stock_of(client, product["id"]) == 3

            async def cart_cleaned() -> bool:
                return await shopper.cart() == {}

            await eventually(cart_cleaned, within=30)
    finally:
        platform.stop_all()
