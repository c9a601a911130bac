"""The checkout saga end to end: every service a real process from the root Procfile, on real
PostgreSQL, Redis and RabbitMQ, driven over REST only. Each scenario also runs with every event
delivered twice (a copy of each is re-published to the exchange), which must change nothing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage

from chassis.testing.waiting import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Platform
from .shop import Admin, Shopper, login, new_shopper, stock_of


class Duplicator:
    """Re-publishes a copy of every event on the platform's exchange (same message id, so the
    consumers' inboxes must recognise it): at-least-once delivery at its most annoying."""

    COPY_HEADER = "x-e2e-copy"

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self._amqp_url = amqp_url
        self._exchange_name = exchange
        self.copies = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Duplicator]:
        connection = await aio_pika.connect_robust(self._amqp_url, timeout=10)
        try:
            channel = await connection.channel(publisher_confirms=True)
            self._exchange = await channel.get_exchange(self._exchange_name)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(self._exchange, routing_key="#")
            await queue.consume(self._copy)
            yield self
        finally:
            await connection.close()

    async def _copy(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        if self.COPY_HEADER not in headers:
            headers[self.COPY_HEADER] = "1"
            copy = aio_pika.Message(
                message.body,
                headers=headers,
                message_id=message.message_id,
                type=message.type,
                content_type=message.content_type,
                correlation_id=message.correlation_id,
                timestamp=message.timestamp,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await self._exchange.publish(copy, routing_key=message.routing_key or "")
            self.copies += 1
        await message.ack()


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> Admin:
    return Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))


@pytest.fixture(params=["delivered once", "every event delivered twice"])
async def delivery(request: pytest.FixtureRequest, platform: Platform) -> AsyncIterator[str]:
    if request.param == "delivered once":
        yield request.param
        return
    duplicator = Duplicator(platform.env["AMQP_URL"], platform.env["EVENTS_EXCHANGE"])
    async with duplicator.running():
        yield request.param
    assert duplicator.copies > 0, "the duplicator saw no event: it tested nothing"


async def test_a_checkout_is_confirmed_the_stock_taken_and_the_ordered_lines_leave_the_cart(
    client: httpx.AsyncClient, admin: Admin, delivery: str
) -> None:
    lamp = await admin.create_product(stock=10, price_cents=2500)
    mug = await admin.create_product(stock=10, price_cents=800)
    shopper = await new_shopper(client)
    await shopper.add(lamp["id"], 3)
    await shopper.add(mug["id"], 1)

    pending = await shopper.checkout_order()
    assert pending["total_cents"] == 3 * 2500 + 800
    # The shopper goes on shopping while the saga runs: these lines must stay in the cart.
    await shopper.add(mug["id"], 2)

    order = await shopper.final_order(pending["id"])
    assert (order["status"], order["cancel_reason"]) == ("CONFIRMED", None)
    assert await stock_of(client, lamp["id"]) == 7
    assert await stock_of(client, mug["id"]) == 9
    await _eventually_cart(shopper, {mug["id"]: 2})
    assert [o["id"] for o in await shopper.orders()] == [pending["id"]]


async def test_two_shoppers_racing_for_the_last_unit_get_one_order_each_way(
    client: httpx.AsyncClient, admin: Admin, delivery: str
) -> None:
    last = await admin.create_product(stock=1)
    first, second = await new_shopper(client), await new_shopper(client)
    await first.add(last["id"], 1)
    await second.add(last["id"], 1)

    orders = await asyncio.gather(first.checkout_order(), second.checkout_order())
    finals = await asyncio.gather(
        first.final_order(orders[0]["id"]), second.final_order(orders[1]["id"])
    )
    assert sorted((o["status"], o["cancel_reason"]) for o in finals) == [
        ("CANCELLED", "OUT_OF_STOCK"),
        ("CONFIRMED", None),
    ]
    assert await stock_of(client, last["id"]) == 0


async def test_an_order_with_one_short_line_reserves_nothing_at_all(
    client: httpx.AsyncClient, admin: Admin, delivery: str
) -> None:
    plenty = await admin.create_product(stock=10)
    scarce = await admin.create_product(stock=2)
    shopper = await new_shopper(client)
    await shopper.add(plenty["id"], 4)
    await shopper.add(scarce["id"], 2)
    # Someone else takes one of the scarce units after the shopper filled the cart.
    other = await new_shopper(client)
    await other.add(scarce["id"], 1)
    taken = await other.checkout_order()
    assert (await other.final_order(taken["id"]))["status"] == "CONFIRMED"

    order = await shopper.final_order((await shopper.checkout_order())["id"])
    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "OUT_OF_STOCK")
    assert await stock_of(client, plenty["id"]) == 10
    assert await stock_of(client, scarce["id"]) == 1
    assert await shopper.cart() == {plenty["id"]: 4, scarce["id"]: 2}


async def test_many_concurrent_checkouts_never_oversell(
    client: httpx.AsyncClient, admin: Admin, delivery: str
) -> None:
    """180 checkouts (60 shoppers with one unit each, 3 checkouts each, at once) against 50
    units: exactly 50 confirmed, and no shopper's unit bought twice.

    A cart is ordered once: a shopper's sibling checkouts answer with the PENDING order that
    holds the cart, or 409 once that order is confirmed (already ordered, then an empty cart).
    Only a sibling that comes after an OUT_OF_STOCK cancellation orders the unit again (a
    cancelled order's lines stay in the cart), and is refused for stock in turn. 180 checkouts at
    once can outlast the gateway's deadline on a small machine: each is repeated with its
    Idempotency-Key after a 504, as a client should, which must not place a second order."""
    product = await admin.create_product(stock=50)
    shoppers = [await new_shopper(client) for _ in range(60)]
    for shopper in shoppers:
        await shopper.add(product["id"], 1)
    refused: list[Shopper] = []

    async def three_checkouts(shopper: Shopper) -> list[tuple[Shopper, str]]:
        answers = await asyncio.gather(*(shopper.checkout_until_answered() for _ in range(3)))
        for answer in answers:
            if answer.status_code != 202:
                assert answer.status_code == 409, answer.text
                detail = answer.json()["detail"]
                assert detail == "the cart is empty" or "already confirmed" in detail, detail
                refused.append(shopper)
        return [(shopper, a.json()["id"]) for a in answers if a.status_code == 202]

    placed = [o for batch in await asyncio.gather(*map(three_checkouts, shoppers)) for o in batch]
    orders = {order_id: shopper for shopper, order_id in placed}
    finals = {
        order_id: await shopper.final_order(order_id, 90) for order_id, shopper in orders.items()
    }

    confirmed = [o for o in finals.values() if o["status"] == "CONFIRMED"]
    assert len(placed) + len(refused) == 180
    assert len(confirmed) == 50
    buyers = [orders[o["id"]].user_id for o in confirmed]
    assert len(set(buyers)) == 50, "a shopper's one unit was bought twice"
    assert {s.user_id for s in refused} <= set(buyers)
    cancelled = {o["cancel_reason"] for o in finals.values() if o["status"] == "CANCELLED"}
    assert cancelled == {"OUT_OF_STOCK"}
    assert await stock_of(client, product["id"]) == 0
    assert sum(line["quantity"] for order in confirmed for line in order["items"]) == 50


async def test_cancelling_a_confirmed_order_restocks_once_and_a_second_cancel_is_409(
    client: httpx.AsyncClient, admin: Admin, delivery: str
) -> None:
    product = await admin.create_product(stock=5)
    shopper = await new_shopper(client)
    await shopper.add(product["id"], 2)
    order = await shopper.final_order((await shopper.checkout_order())["id"])
    assert order["status"] == "CONFIRMED"
    assert await stock_of(client, product["id"]) == 3

    cancelled = await shopper.cancel(order["id"])
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["cancel_reason"]) == (
        "CANCELLED",
        "USER_CANCELLED",
    )
    again = await shopper.cancel(order["id"])
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    await _eventually_stock(client, product["id"], 5)
    await asyncio.sleep(1.0)
    assert await stock_of(client, product["id"]) == 5


async def test_the_same_idempotency_key_sent_ten_times_at_once_yields_one_order(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    product = await admin.create_product(stock=10)
    shopper = await new_shopper(client)
    await shopper.add(product["id"], 1)
    key = f"checkout-{uuid.uuid4()}"

    answers = await asyncio.gather(*(shopper.checkout(key) for _ in range(10)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    order_id = answers[0].json()["id"]
    await shopper.final_order(order_id)
    assert [o["id"] for o in await shopper.orders()] == [order_id]
    again = await shopper.checkout(key)
    assert (again.status_code, again.json()["id"]) == (202, order_id)


async def test_checking_out_an_empty_cart_is_409(client: httpx.AsyncClient) -> None:
    shopper = await new_shopper(client)
    response = await shopper.checkout()
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_another_users_order_is_404_and_cannot_be_cancelled(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    product = await admin.create_product(stock=5)
    owner, stranger = await new_shopper(client), await new_shopper(client)
    await owner.add(product["id"], 1)
    order = await owner.checkout_order()
    assert (
        await client.get(f"/api/v1/orders/{order['id']}", headers=stranger.headers)
    ).status_code == 404
    assert (await stranger.cancel(order["id"])).status_code == 404
    assert await stranger.orders() == []


async def _eventually_cart(shopper: Shopper, expected: dict[str, int]) -> None:
    async def matches() -> bool:
        return await shopper.cart() == expected

    await eventually(matches, within=30)


async def _eventually_stock(client: httpx.AsyncClient, product_id: str, expected: int) -> None:
    async def matches() -> bool:
        return await stock_of(client, product_id) == expected

    await eventually(matches, within=30)


async def test_a_cart_checked_out_twice_at_once_is_ordered_once(
    client: httpx.AsyncClient, admin: Admin, delivery: str
) -> None:
    """Two checkouts of one cart sent together (a double click, two tabs) make one order; the
    answer that came second is that same order, or, if the first order was already confirmed and
    the cart cleared, an empty cart. Either way every unit is bought once."""
    product = await admin.create_product(stock=50)
    shoppers = [await new_shopper(client) for _ in range(6)]
    for shopper in shoppers:
        await shopper.add(product["id"], 2)

    answers = await asyncio.gather(*(shopper.checkout() for shopper in shoppers for _ in range(2)))

    for shopper, pair in zip(shoppers, zip(answers[::2], answers[1::2], strict=True), strict=True):
        placed = [answer.json() for answer in pair if answer.status_code == 202]
        others = [answer for answer in pair if answer.status_code != 202]
        assert len({order["id"] for order in placed}) == 1, [a.text for a in pair]
        assert all(
            a.status_code == 409 and ("empty" in a.text or "already confirmed" in a.text)
            for a in others
        ), [a.text for a in others]
        (order_id,) = {order["id"] for order in placed}
        assert (await shopper.final_order(order_id))["status"] == "CONFIRMED"
        assert len(await shopper.orders()) == 1
    assert await stock_of(client, product["id"]) == 50 - 2 * len(shoppers)
