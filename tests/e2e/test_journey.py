"""A shopper's whole journey over REST, as a client application would drive it: register, log
in, browse and search the catalogue, fill a cart, check out, see the order CONFIRMED, the cart
cleaned and the order listed, then cancel it and see the stock come back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from chassis.testing.waiting import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Platform
from .shop import PASSWORD, Admin, Shopper, login, stock_of


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as http:
        yield http


async def test_a_shopper_registers_browses_buys_sees_the_order_and_cancels_it(
    client: httpx.AsyncClient,
) -> None:
    admin = Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    word = uuid.uuid4().hex[:8]
    lamp = await admin.create_product(stock=6, price_cents=2500)
    await client.patch(
        f"/api/v1/products/{lamp['id']}", headers=admin.headers, json={"name": f"Lamp {word}"}
    )
    mug = await admin.create_product(stock=4, price_cents=800)
    await client.patch(
        f"/api/v1/products/{mug['id']}", headers=admin.headers, json={"name": f"Mug {word}"}
    )

    email = f"journey-{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post(
        "/api/v1/register", json={"email": email, "password": PASSWORD, "full_name": "Ada"}
    )
    assert registered.status_code == 201, registered.text
    shopper = Shopper(client, registered.json()["id"], email, await login(client, email, PASSWORD))
    me = await client.get("/api/v1/users/me", headers=shopper.headers)
    assert (me.status_code, me.json()["email"]) == (200, email)

    # Browse: pages of one, then a search by a word of the names.
    first = (await client.get("/api/v1/products", params={"limit": 1})).json()
    assert len(first["items"]) == 1
    assert first["next_page_token"]
    second = await client.get(
        "/api/v1/products", params={"limit": 1, "page_token": first["next_page_token"]}
    )
    assert second.json()["items"][0]["id"] != first["items"][0]["id"]
    found = (await client.get("/api/v1/products", params={"q": word.upper()})).json()
    assert sorted(p["name"] for p in found["items"]) == [f"Lamp {word}", f"Mug {word}"]
    shown = (await client.get(f"/api/v1/products/{lamp['id']}")).json()
    assert (shown["price_cents"], shown["stock"]) == (2500, 6)

    await shopper.add(lamp["id"], 1)
    await shopper.add(mug["id"], 3)
    changed = await client.put(
        f"/api/v1/cart/items/{lamp['id']}", headers=shopper.headers, json={"quantity": 2}
    )
    assert changed.json()["total_cents"] == 2 * 2500 + 3 * 800
    removed = await client.delete(f"/api/v1/cart/items/{mug['id']}", headers=shopper.headers)
    assert [i["product_id"] for i in removed.json()["items"]] == [lamp["id"]]
    await shopper.add(mug["id"], 1)

    pending = await shopper.checkout_order()
    assert pending["total_cents"] == 2 * 2500 + 800
    order = await shopper.final_order(pending["id"])
    assert (order["status"], order["cancel_reason"]) == ("CONFIRMED", None)

    async def cart_cleaned() -> bool:
        return await shopper.cart() == {}

    await eventually(cart_cleaned, within=30)
    assert [o["id"] for o in await shopper.orders()] == [order["id"]]
    assert await stock_of(client, lamp["id"]) == 4
    assert await stock_of(client, mug["id"]) == 3

    cancelled = await shopper.cancel(order["id"])
    assert (cancelled.status_code, cancelled.json()["cancel_reason"]) == (200, "USER_CANCELLED")

    async def restocked() -> bool:
        return (await stock_of(client, lamp["id"]), await stock_of(client, mug["id"])) == (6, 4)

    await eventually(restocked, within=30)
    assert (await shopper.order(order["id"]))["status"] == "CANCELLED"
