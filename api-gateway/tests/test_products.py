"""Catalogue routes through the gateway against a real service-product: public reads,
admin-only writes, and the error statuses of each bad request."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

PRODUCTS = "/api/v1/products"


def new_product(**overrides: Any) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:10]
    return {
        "sku": f"GW-{suffix}",
        "name": f"Gateway lamp {suffix}",
        "description": "Warm light",
        "price_cents": 1999,
        "stock": 5,
        **overrides,
    }


async def create(api: httpx.AsyncClient, admin: Any, **overrides: Any) -> dict[str, Any]:
    reply = await api.post(PRODUCTS, json=new_product(**overrides), headers=admin.auth)
    assert reply.status_code == 201, reply.text
    product: dict[str, Any] = reply.json()
    return product


def problem_fields(reply: httpx.Response) -> set[str]:
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.text
    return {error["field"] for error in reply.json()["errors"]}


async def test_admin_creates_a_product_anyone_can_read(api: httpx.AsyncClient, admin: Any) -> None:
    body = new_product()
    created = await api.post(PRODUCTS, json=body, headers=admin.auth)
    assert created.status_code == 201, created.text
    product = created.json()
    assert set(product) == {"id", "sku", "name", "description", "price_cents", "currency", "stock"}
    assert {k: product[k] for k in body} == body
    assert product["currency"] == "USD"

    read = await api.get(f"{PRODUCTS}/{product['id']}")
    assert read.status_code == 200, read.text
    assert read.json() == product


async def test_list_filters_by_name_and_pages_with_a_token(
    api: httpx.AsyncClient, admin: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = {(await create(api, admin, name=f"Pager {tag} {i}"))["id"] for i in range(3)}
    first = await api.get(PRODUCTS, params={"q": tag.upper(), "limit": 2})
    assert first.status_code == 200, first.text
    assert len(first.json()["items"]) == 2
    token = first.json()["next_page_token"]
    assert token
    second = await api.get(PRODUCTS, params={"q": tag.upper(), "limit": 2, "page_token": token})
    assert second.status_code == 200, second.text
    assert second.json()["next_page_token"] is None
    seen = [p["id"] for p in first.json()["items"] + second.json()["items"]]
    assert sorted(seen) == sorted(ids)


async def test_list_defaults_to_twenty_items(api: httpx.AsyncClient, admin: Any) -> None:
    for _ in range(21 - len((await api.get(PRODUCTS, params={"limit": 100})).json()["items"])):
        await create(api, admin)
    reply = await api.get(PRODUCTS)
    assert reply.status_code == 200
    assert len(reply.json()["items"]) == 20


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page_token": "not-a-real-token"}, "page_token"),
        ({"q": "lamp\u0000"}, "q"),
    ],
    ids=["limit-0", "limit-101", "limit-not-int", "garbage-page-token", "nul-in-query"],
)
async def test_bad_list_parameters_are_422(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    reply = await api.get(PRODUCTS, params=params)
    assert reply.status_code == 422, reply.text
    assert field in problem_fields(reply)


async def test_malformed_product_id_is_422(api: httpx.AsyncClient) -> None:
    reply = await api.get(f"{PRODUCTS}/not-a-uuid")
    assert reply.status_code == 422, reply.text
    assert problem_fields(reply) == {"product_id"}


async def test_unknown_product_is_404(api: httpx.AsyncClient) -> None:
    reply = await api.get(f"{PRODUCTS}/{uuid.uuid4()}")
    assert reply.status_code == 404, reply.text
    assert reply.json()["status"] == 404


async def test_customer_cannot_create_or_patch_products(
    api: httpx.AsyncClient, admin: Any, customer: Any
) -> None:
    created = await api.post(PRODUCTS, json=new_product(), headers=customer.auth)
    assert created.status_code == 403, created.text
    product = await create(api, admin)
    patched = await api.patch(
        f"{PRODUCTS}/{product['id']}", json={"price_cents": 1}, headers=customer.auth
    )
    assert patched.status_code == 403, patched.text
    assert (await api.get(f"{PRODUCTS}/{product['id']}")).json()["price_cents"] == 1999


async def test_anonymous_create_is_401(api: httpx.AsyncClient) -> None:
    reply = await api.post(PRODUCTS, json=new_product())
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"


async def test_duplicate_sku_is_409(api: httpx.AsyncClient, admin: Any) -> None:
    product = await create(api, admin)
    again = await api.post(PRODUCTS, json=new_product(sku=product["sku"]), headers=admin.auth)
    assert again.status_code == 409, again.text


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price_cents": -1}, "price_cents"),
        ({"price_cents": 0}, "price_cents"),
        ({"stock": -1}, "stock"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"sku": "s" * 65}, "sku"),
        ({"currency": "usd"}, "currency"),
        ({"description": "d" * 5001}, "description"),
        ({"price_cents": "12"}, "price_cents"),
        ({"description": "nul \u0000 inside"}, "description"),
    ],
    ids=[
        "negative-price",
        "zero-price",
        "negative-stock",
        "empty-name",
        "long-name",
        "long-sku",
        "lowercase-currency",
        "long-description",
        "price-as-string",
        "nul-in-description",
    ],
)
async def test_invalid_product_is_422_naming_the_field(
    api: httpx.AsyncClient, admin: Any, overrides: dict[str, Any], field: str
) -> None:
    reply = await api.post(PRODUCTS, json=new_product(**overrides), headers=admin.auth)
    assert reply.status_code == 422, reply.text
    assert field in problem_fields(reply)


async def test_admin_patch_changes_only_the_given_fields_and_the_next_read_sees_it(
    api: httpx.AsyncClient, admin: Any
) -> None:
    product = await create(api, admin)
    url = f"{PRODUCTS}/{product['id']}"
    assert (await api.get(url)).json()["price_cents"] == 1999  # now in the gateway micro-cache
    patched = await api.patch(url, json={"price_cents": 2500, "stock": 9}, headers=admin.auth)
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**product, "price_cents": 2500, "stock": 9}
    assert (await api.get(url)).json() == patched.json()


async def test_patch_unknown_product_is_404(api: httpx.AsyncClient, admin: Any) -> None:
    reply = await api.patch(f"{PRODUCTS}/{uuid.uuid4()}", json={"stock": 1}, headers=admin.auth)
    assert reply.status_code == 404, reply.text


@pytest.mark.parametrize(
    ("body", "field"),
    [({"price_cents": -5}, "price_cents"), ({"stock": -1}, "stock"), ({"sku": "X"}, "sku")],
    ids=["negative-price", "negative-stock", "sku-is-not-patchable"],
)
async def test_invalid_patch_is_422(
    api: httpx.AsyncClient, admin: Any, body: dict[str, Any], field: str
) -> None:
    product = await create(api, admin)
    reply = await api.patch(f"{PRODUCTS}/{product['id']}", json=body, headers=admin.auth)
    assert reply.status_code == 422, reply.text
    assert field in problem_fields(reply)
