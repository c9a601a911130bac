"""The payment step of the saga end to end, over REST and the provider's own ledger: stock reserved,
then the order's total authorised by the (simulated) provider, then CONFIRMED and captured; a
declined card cancels the order (PAYMENT_DECLINED) and gives the stock back; a flaky provider is
retried; cancelling a confirmed order refunds it once, a pending one is voided. The scenarios that
move money also run with every event delivered twice, which must change nothing.

The provider's test tokens (`pm_card_ok`, `pm_card_declined`, `pm_card_flaky`, `pm_card_slow`)
are in docs/architecture.md. A SIGKILL of service-payment mid-stream is in test_faults.py (its
stream checks the ledger against the orders, as the replicas' stream does)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chassis.testing.waiting import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Platform
from .payments import Provider, money_problems
from .shop import Admin, Shopper, login, new_shopper, stock_of
from .test_checkout_saga import Duplicator


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> Admin:
    return Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))


@pytest.fixture
def provider(platform: Platform) -> Provider:
    return Provider(platform.env["PAYMENT_PROVIDER_URL"])


@pytest.fixture(params=["delivered once", "every event delivered twice"])
async def delivery(request: pytest.FixtureRequest, platform: Platform) -> AsyncIterator[str]:
    if request.param == "delivered once":
        yield request.param
        return
    duplicator = Duplicator(platform.env["AMQP_URL"], platform.env["EVENTS_EXCHANGE"])
    async with duplicator.running():
        yield request.param
    assert duplicator.copies > 0, "the duplicator saw no event: it tested nothing"


async def pay(shopper: Shopper, token: str, key: str | None = None) -> httpx.Response:
    headers = dict(shopper.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await shopper.client.post(
        "/api/v1/checkout", headers=headers, json={"payment_token": token}
    )


async def placed(shopper: Shopper, token: str) -> dict[str, Any]:
    answer = await pay(shopper, token)
    assert answer.status_code == 202, answer.text
    order = dict(answer.json())
    assert (order["status"], order["payment_status"]) == ("PENDING", "PENDING")
    return order


async def settled_payment(shopper: Shopper, order_id: str, status: str) -> dict[str, Any]:
    """The order once its payment_status is `status` (the payment events follow the order's
    own status by a moment)."""
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await shopper.order(order_id))
        return bool(seen["payment_status"] == status)

    try:
        await eventually(reached, within=30, every=0.2)
    except TimeoutError:
        raise AssertionError(f"payment of {order_id} never {status}: {seen}") from None
    return seen


async def test_a_paid_checkout_is_authorised_confirmed_and_captured_once(
    client: httpx.AsyncClient, admin: Admin, provider: Provider, delivery: str
) -> None:
    lamp = await admin.create_product(stock=10, price_cents=2599)
    mug = await admin.create_product(stock=10, price_cents=850)
    shopper = await new_shopper(client)
    await shopper.add(lamp["id"], 2)
    await shopper.add(mug["id"], 1)

    pending = await placed(shopper, "pm_card_ok")
    assert pending["total_cents"] == 2 * 2599 + 850
    order = await shopper.final_order(pending["id"])
    assert (order["status"], order["cancel_reason"], order["payment_status"]) == (
        "CONFIRMED",
        None,
        "AUTHORIZED",
    )
    entries = await provider.settled(order["id"], "capture")
    assert entries == {"authorize": [2 * 2599 + 850], "capture": [2 * 2599 + 850]}
    assert await stock_of(client, lamp["id"]) == 8
    await asyncio.sleep(1)  # duplicates of the last events have landed by now: still once
    assert await provider.of(order["id"]) == entries


async def test_a_declined_card_cancels_the_order_gives_the_stock_back_and_another_card_pays(
    client: httpx.AsyncClient, admin: Admin, provider: Provider, delivery: str
) -> None:
    chair = await admin.create_product(stock=5, price_cents=4000)
    shopper = await new_shopper(client)
    await shopper.add(chair["id"], 2)

    declined = await shopper.final_order((await placed(shopper, "pm_card_declined"))["id"])
    assert (declined["status"], declined["cancel_reason"], declined["payment_status"]) == (
        "CANCELLED",
        "PAYMENT_DECLINED",
        "DECLINED",
    )
    # The reservation made before the payment was refused comes back.
    await eventually(lambda: _stock_is(client, chair["id"], 5), within=30)
    assert "capture" not in await provider.of(declined["id"])
    # The lines are still in the cart: the shopper pays with another card.
    assert await shopper.cart() == {chair["id"]: 2}
    paid = await shopper.final_order((await placed(shopper, "pm_card_ok"))["id"])
    assert (paid["status"], paid["payment_status"]) == ("CONFIRMED", "AUTHORIZED")
    assert (await provider.settled(paid["id"], "capture"))["capture"] == [8000]
    assert await stock_of(client, chair["id"]) == 3


async def test_an_unknown_payment_method_is_declined(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    pen = await admin.create_product(stock=3, price_cents=199)
    shopper = await new_shopper(client)
    await shopper.add(pen["id"], 1)
    order = await shopper.final_order((await placed(shopper, "pm_card_never_heard_of"))["id"])
    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "PAYMENT_DECLINED")


async def test_a_provider_failing_twice_is_retried_and_the_order_paid_once(
    client: httpx.AsyncClient, admin: Admin, provider: Provider
) -> None:
    book = await admin.create_product(stock=3, price_cents=1250)
    shopper = await new_shopper(client)
    await shopper.add(book["id"], 1)
    order = await shopper.final_order((await placed(shopper, "pm_card_flaky"))["id"])
    assert (order["status"], order["payment_status"]) == ("CONFIRMED", "AUTHORIZED")
    assert await provider.settled(order["id"], "capture") == {
        "authorize": [1250],
        "capture": [1250],
    }


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"payment_token": ""},
        {"payment_token": "4242424242424242"},
        {"payment_token": "pm_" + "x" * 65},
        {"payment_token": "pm_card ok"},
        {"payment_token": 42},
    ],
    ids=["no body", "no token", "empty", "a card number", "too long", "a space", "a number"],
)
async def test_a_checkout_without_a_well_formed_payment_token_is_422_naming_it(
    client: httpx.AsyncClient, admin: Admin, body: dict[str, Any] | None
) -> None:
    pen = await admin.create_product(stock=3, price_cents=199)
    shopper = await new_shopper(client)
    await shopper.add(pen["id"], 1)
    answer = await client.post("/api/v1/checkout", headers=shopper.headers, json=body)
    assert answer.status_code == 422, answer.text
    assert "payment_token" in answer.text
    assert await shopper.orders() == []


async def test_cancelling_a_confirmed_order_refunds_it_once_and_restocks(
    client: httpx.AsyncClient, admin: Admin, provider: Provider, delivery: str
) -> None:
    desk = await admin.create_product(stock=4, price_cents=12000)
    shopper = await new_shopper(client)
    await shopper.add(desk["id"], 1)
    order = await shopper.final_order((await placed(shopper, "pm_card_ok"))["id"])
    assert order["status"] == "CONFIRMED"

    cancelled = await shopper.cancel(order["id"])
    assert cancelled.status_code == 200, cancelled.text
    refunded = await settled_payment(shopper, order["id"], "REFUNDED")
    assert (refunded["status"], refunded["cancel_reason"]) == ("CANCELLED", "USER_CANCELLED")
    entries = await provider.settled(order["id"], "refund")
    assert entries["refund"] == [12000]
    assert (await shopper.cancel(order["id"])).status_code == 409
    await eventually(lambda: _stock_is(client, desk["id"], 4), within=30)
    await asyncio.sleep(1)
    assert await provider.of(order["id"]) == entries
    assert money_problems([refunded], await provider.entries()) == []


async def test_cancelling_while_a_slow_payment_is_on_its_way_voids_it_and_charges_nothing(
    client: httpx.AsyncClient, admin: Admin, provider: Provider
) -> None:
    lamp = await admin.create_product(stock=2, price_cents=3000)
    shopper = await new_shopper(client)
    await shopper.add(lamp["id"], 1)
    pending = await placed(shopper, "pm_card_slow")
    await asyncio.sleep(0.5)  # stock reserved by now, the provider still thinking (2 s)
    cancelled = await shopper.cancel(pending["id"])
    assert cancelled.status_code == 200, cancelled.text
    voided = await settled_payment(shopper, pending["id"], "VOIDED")
    assert (voided["status"], voided["cancel_reason"]) == ("CANCELLED", "USER_CANCELLED")
    await eventually(lambda: _stock_is(client, lamp["id"], 2), within=30)
    await asyncio.sleep(3)  # past the slow answer: whatever it said, nothing was kept
    assert money_problems([voided], await provider.entries()) == []
    assert "capture" not in await provider.of(pending["id"])


async def test_add_check_out_add_check_out_with_a_slow_card_makes_two_orders_of_one_unit(
    client: httpx.AsyncClient, admin: Admin, provider: Provider
) -> None:
    """The longer PENDING window of a slow payment orders nothing twice: the second checkout
    orders only what was added after the first."""
    cup = await admin.create_product(stock=10, price_cents=500)
    shopper = await new_shopper(client)
    await shopper.add(cup["id"], 1)
    first = await placed(shopper, "pm_card_slow")
    await shopper.add(cup["id"], 1)
    second = await placed(shopper, "pm_card_slow")
    assert first["id"] != second["id"]
    for order in (first, second):
        assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(cup["id"], 1)]
    finals = [await shopper.final_order(o["id"]) for o in (first, second)]
    assert [o["status"] for o in finals] == ["CONFIRMED", "CONFIRMED"]
    for order in finals:
        assert (await provider.settled(order["id"], "capture"))["capture"] == [500]
    assert await stock_of(client, cup["id"]) == 8
    await eventually(lambda: _cart_is(shopper, {}), within=30)


async def test_the_same_key_sent_at_once_charges_one_order_once(
    client: httpx.AsyncClient, admin: Admin, provider: Provider
) -> None:
    bag = await admin.create_product(stock=5, price_cents=7000)
    shopper = await new_shopper(client)
    await shopper.add(bag["id"], 1)
    key = f"pay-{uuid.uuid4()}"
    answers = await asyncio.gather(*(pay(shopper, "pm_card_ok", key) for _ in range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    order = await shopper.final_order(answers[0].json()["id"])
    assert order["status"] == "CONFIRMED"
    assert await provider.settled(order["id"], "capture") == {
        "authorize": [7000],
        "capture": [7000],
    }
    assert money_problems(await shopper.orders(), await provider.entries()) == []


async def _stock_is(client: httpx.AsyncClient, product_id: str, expected: int) -> bool:
    return await stock_of(client, product_id) == expected


async def _cart_is(shopper: Shopper, expected: dict[str, int]) -> bool:
    return await shopper.cart() == expected
