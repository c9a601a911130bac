"""Cart routes through the gateway against real service-cart and service-product. The user
id always comes from the token: one user never reads or changes another's cart."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

CART, ITEMS = "/api/v1/cart", "/api/v1/cart/items"


async def create_product(
    api: httpx.AsyncClient, admin: Any, *, stock: int = 10, price: int = 500
) -> str:
    suffix = uuid.uuid4().hex[:10]
    reply = await api.post(
        "/api/v1/products",
        json={
            "sku": f"CART-{suffix}",
            "name": f"Mug {suffix}",
            "price_cents": price,
            "stock": stock,
        },
        headers=admin.auth,
    )
    assert reply.status_code == 201, reply.text
    product_id: str = reply.json()["id"]
    return product_id


async def add(api: httpx.AsyncClient, who: Any, product_id: str, quantity: Any) -> httpx.Response:
    return await api.post(
        ITEMS, json={"product_id": product_id, "quantity": quantity}, headers=who.auth
    )


async def test_empty_cart_for_a_new_user(api: httpx.AsyncClient, customer: Any) -> None:
    reply = await api.get(CART, headers=customer.auth)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"items": [], "total_cents": 0, "currency": "USD"}


async def test_cart_requires_a_token(api: httpx.AsyncClient) -> None:
    reply = await api.get(CART)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"


async def test_adding_twice_adds_to_the_line_and_prices_it(
    api: httpx.AsyncClient, admin: Any, customer: Any
) -> None:
    product_id = await create_product(api, admin, price=250)
    assert (await add(api, customer, product_id, 2)).status_code == 200
    reply = await add(api, customer, product_id, 3)
    assert reply.status_code == 200, reply.text
    cart = reply.json()
    assert [(line["product_id"], line["quantity"]) for line in cart["items"]] == [(product_id, 5)]
    assert cart["items"][0]["unit_price_cents"] == 250
    assert cart["items"][0]["line_total_cents"] == 1250
    assert cart["total_cents"] == 1250


async def test_unknown_product_is_404(api: httpx.AsyncClient, customer: Any) -> None:
    reply = await add(api, customer, str(uuid.uuid4()), 1)
    assert reply.status_code == 404, reply.text


async def test_more_than_stock_is_409(api: httpx.AsyncClient, admin: Any, customer: Any) -> None:
    product_id = await create_product(api, admin, stock=3)
    reply = await add(api, customer, product_id, 4)
    assert reply.status_code == 409, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("quantity", [0, 101, "x", -1, 1.5, None])
async def test_bad_quantity_is_422_naming_quantity(
    api: httpx.AsyncClient, customer: Any, quantity: Any
) -> None:
    reply = await add(api, customer, str(uuid.uuid4()), quantity)
    assert reply.status_code == 422, reply.text
    assert {e["field"] for e in reply.json()["errors"]} == {"quantity"}


async def test_malformed_product_id_is_422(api: httpx.AsyncClient, customer: Any) -> None:
    reply = await add(api, customer, "not-a-uuid", 1)
    assert reply.status_code == 422, reply.text
    assert {e["field"] for e in reply.json()["errors"]} == {"product_id"}


async def test_put_sets_the_quantity_and_zero_removes_the_line(
    api: httpx.AsyncClient, admin: Any, customer: Any
) -> None:
    product_id = await create_product(api, admin)
    await add(api, customer, product_id, 1)
    put = await api.put(f"{ITEMS}/{product_id}", json={"quantity": 7}, headers=customer.auth)
    assert put.status_code == 200, put.text
    assert put.json()["items"][0]["quantity"] == 7
    removed = await api.put(f"{ITEMS}/{product_id}", json={"quantity": 0}, headers=customer.auth)
    assert removed.status_code == 200, removed.text
    assert removed.json()["items"] == []


@pytest.mark.parametrize("quantity", [-1, 101, "x"])
async def test_put_bad_quantity_is_422(
    api: httpx.AsyncClient, customer: Any, quantity: Any
) -> None:
    reply = await api.put(
        f"{ITEMS}/{uuid.uuid4()}", json={"quantity": quantity}, headers=customer.auth
    )
    assert reply.status_code == 422, reply.text
    assert {e["field"] for e in reply.json()["errors"]} == {"quantity"}


async def test_put_over_stock_is_409(api: httpx.AsyncClient, admin: Any, customer: Any) -> None:
    product_id = await create_product(api, admin, stock=2)
    await add(api, customer, product_id, 1)
    reply = await api.put(f"{ITEMS}/{product_id}", json={"quantity": 3}, headers=customer.auth)
    assert reply.status_code == 409, reply.text


async def test_removing_a_line_not_in_the_cart_is_404(
    api: httpx.AsyncClient, customer: Any
) -> None:
    reply = await api.delete(f"{ITEMS}/{uuid.uuid4()}", headers=customer.auth)
    assert reply.status_code == 404, reply.text


async def test_delete_line_and_clear_cart(
    api: httpx.AsyncClient, admin: Any, customer: Any
) -> None:
    first, second = await create_product(api, admin), await create_product(api, admin)
    await add(api, customer, first, 1)
    await add(api, customer, second, 2)
    after_delete = await api.delete(f"{ITEMS}/{first}", headers=customer.auth)
    assert after_delete.status_code == 200, after_delete.text
    assert [line["product_id"] for line in after_delete.json()["items"]] == [second]
    cleared = await api.delete(CART, headers=customer.auth)
    assert cleared.status_code == 204
    assert cleared.content == b""
    assert (await api.get(CART, headers=customer.auth)).json()["items"] == []


async def test_one_user_never_reads_or_changes_another_users_cart(
    api: httpx.AsyncClient, admin: Any, make_customer: Any
) -> None:
    alice, bob = await make_customer(), await make_customer()
    product_id = await create_product(api, admin)
    await add(api, alice, product_id, 2)

    # Bob's requests, even naming Alice's id in the body or query, touch only Bob's cart.
    assert (await api.get(CART, headers=bob.auth, params={"user_id": alice.id})).json()[
        "items"
    ] == []
    sneaky = await api.post(
        ITEMS,
        json={"product_id": product_id, "quantity": 1, "user_id": alice.id},
        headers=bob.auth,
    )
    assert sneaky.status_code == 422  # unknown fields are refused, not silently ignored
    assert (await api.delete(f"{ITEMS}/{product_id}", headers=bob.auth)).status_code == 404
    assert (await api.delete(CART, headers=bob.auth)).status_code == 204

    alice_cart = (await api.get(CART, headers=alice.auth)).json()
    assert [(line["product_id"], line["quantity"]) for line in alice_cart["items"]] == [
        (product_id, 2)
    ]


async def test_admin_price_change_shows_in_the_next_cart_read(
    api: httpx.AsyncClient, admin: Any, customer: Any
) -> None:
    product_id = await create_product(api, admin, price=1000)
    await add(api, customer, product_id, 2)
    patched = await api.patch(
        f"/api/v1/products/{product_id}", json={"price_cents": 1500}, headers=admin.auth
    )
    assert patched.status_code == 200, patched.text
    cart = (await api.get(CART, headers=customer.auth)).json()
    assert cart["items"][0]["unit_price_cents"] == 1500
    assert cart["total_cents"] == 3000
