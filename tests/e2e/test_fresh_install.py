"""A fresh install where service-order starts first: its `order.created` is published before any
of service-product, service-cart or service-payment ever ran on this exchange. No event may be
lost for them: once they start, the order ends CONFIRMED and the cart is cleaned.

As every deployment does (`make dev`, compose, the cluster's job), `platform-bootstrap` runs first:
it makes each service's accounts and declares each consumer's queue with its bindings (the
declared topology, deploy/accounts/accounts.toml), so the events wait in those queues. (The
exchange's alternate exchange keeps only an event no queue at all is bound to, and re-drives it
to whoever binds first: with two consumers of `order.created` that is not enough on its own.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from chassis.procfile import variable as procfile_variable
from chassis.testing.accounts import RunAccounts
from chassis.testing.waiting import eventually

from .conftest import ACCOUNTS_FILE, ADMIN_EMAIL, ADMIN_PASSWORD, Honcho, Platform
from .shop import Admin, login, new_shopper, stock_of

# Every consumer of the saga's events but service-order (which publishes the first one).
CONSUMERS = ("service-product", "service-cart", "service-payment")


@pytest.mark.slow
async def test_an_order_placed_before_its_consumers_ever_started_is_confirmed(
    make_env: Callable[[str], Awaitable[dict[str, str]]], service_accounts: RunAccounts
) -> None:
    env = await make_env("fresh")
    env.update(await service_accounts.make(ACCOUNTS_FILE, env, "fresh"))
    # What is specified is that nothing is lost, not how fast three processes start on a loaded
    # machine: the order waits for them well within its timeout.
    env["SAGA_TIMEOUT_SECONDS"] = "90"
    # The shop must run to fill a cart and price it, so the consumers first run on another
    # exchange and queues (as the broker's administrator: their own users may use only this
    # platform's names): on this platform's, only the bootstrap has declared their queues.
    elsewhere = {
        **env,
        "EVENTS_EXCHANGE": env["EVENTS_EXCHANGE"] + ".elsewhere",
        "QUEUE_PREFIX": env["QUEUE_PREFIX"] + "elsewhere.",
    }
    for name in CONSUMERS:
        elsewhere[procfile_variable(name, "AMQP_URL")] = env["AMQP_URL"]
    platform = Platform(f"http://127.0.0.1:{env['GATEWAY_PORT']}", env)
    for name in ("service-user", "service-order", "payment-provider", "api-gateway"):
        platform.start(name)
    for name in CONSUMERS:
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
            for name in CONSUMERS:
                platform.processes[name].signal_stop()
            for name in CONSUMERS:
                platform.processes[name].wait_stopped()
                platform.start(name)
            for name in CONSUMERS:
                platform.wait_serving(name)
            order = await shopper.final_order(pending["id"], within=90)
            assert order["status"] == "CONFIRMED"
            assert await stock_of(client, product["id"]) == 3

            async def cart_cleaned() -> bool:
                return await shopper.cart() == {}

            await eventually(cart_cleaned, within=30)
    finally:
        platform.stop_all()
        platform.save_logs("fresh")
