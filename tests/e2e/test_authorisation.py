"""The authorisation matrix over every route of the OpenAPI document, and the envelope of every
answer: a protected route refuses a missing, garbage, tampered, expired or `alg: none` token
with 401; another user's order is 404; a shopper on an admin route is 403; every error is an
`application/problem+json`, and every answer carries `X-Request-ID`."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Platform
from .shop import Admin, login, new_shopper

ADMIN_ROUTES = {("POST", "/api/v1/products"), ("PATCH", "/api/v1/products/{product_id}")}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/products"): {
        "sku": "AUTH-1",
        "name": "Matrix",
        "price_cents": 100,
        "currency": "USD",
        "stock": 1,
    },
    ("PATCH", "/api/v1/products/{product_id}"): {"price_cents": 200},
    ("POST", "/api/v1/cart/items"): {"product_id": str(uuid.uuid4()), "quantity": 1},
    ("PUT", "/api/v1/cart/items/{product_id}"): {"quantity": 1},
}


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def protected(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document that asks for a bearer token."""
    document = (await client.get("/openapi.json")).json()
    routes = [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ]
    assert set(routes) >= ADMIN_ROUTES
    assert ("POST", "/api/v1/checkout") in routes
    return routes


def _request(route: tuple[str, str], token: str | None) -> dict[str, Any]:
    method, path = route
    url = path.replace("{product_id}", str(uuid.uuid4())).replace("{order_id}", str(uuid.uuid4()))
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return {"method": method, "url": url, "headers": headers, "json": BODIES.get(route)}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens(platform: Platform, valid: str) -> dict[str, str | None]:
    header = jwt.get_unverified_header(valid)
    claims = jwt.decode(valid, options={"verify_signature": False})
    signed_head, _, signature = valid.rpartition(".")
    key_pem = Path(platform.env["JWT_PRIVATE_KEY_FILE"]).read_bytes()
    key = serialization.load_pem_private_key(key_pem, password=None)
    expired = {**claims, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    return {
        "no token": None,
        "garbage": "not-a-jwt",
        "tampered": f"{signed_head.split('.')[0]}.{_b64({**claims, 'role': 'admin'})}.{signature}",
        "expired": jwt.encode(expired, key, algorithm="EdDSA", headers={"kid": header["kid"]}),  # type: ignore[arg-type]
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{_b64(claims)}.",
    }


def assert_enveloped(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == status
    assert response.headers.get("x-request-id")


async def test_every_protected_route_refuses_a_missing_or_bad_token_with_a_401_problem(
    platform: Platform, client: httpx.AsyncClient, protected: list[tuple[str, str]]
) -> None:
    shopper = await new_shopper(client)
    tokens = bad_tokens(platform, shopper.headers["Authorization"].removeprefix("Bearer "))
    for route in protected:
        for name, token in tokens.items():
            response = await client.request(**_request(route, token))
            assert response.status_code == 401, (route, name, response.text)
            assert_enveloped(response, 401)


async def test_a_shopper_on_an_admin_route_is_403_and_an_admin_passes(
    client: httpx.AsyncClient,
) -> None:
    shopper = await new_shopper(client)
    token = shopper.headers["Authorization"].removeprefix("Bearer ")
    for route in sorted(ADMIN_ROUTES):
        assert_enveloped(await client.request(**_request(route, token)), 403)
    admin = Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    product = await admin.create_product(stock=1)
    patched = await client.patch(
        f"/api/v1/products/{product['id']}", headers=admin.headers, json={"stock": 2}
    )
    assert patched.status_code == 200


async def test_another_users_order_is_404_to_read_and_to_cancel(client: httpx.AsyncClient) -> None:
    admin = Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    product = await admin.create_product(stock=3)
    owner, stranger = await new_shopper(client), await new_shopper(client)
    await owner.add(product["id"], 1)
    order = await owner.checkout_order()
    assert_enveloped(
        await client.get(f"/api/v1/orders/{order['id']}", headers=stranger.headers), 404
    )
    assert_enveloped(await stranger.cancel(order["id"]), 404)
    assert await stranger.orders() == []
    assert await stranger.cart() == {}
    assert (await owner.order(order["id"]))["id"] == order["id"]


async def test_every_answer_has_a_request_id_and_every_error_is_a_problem(
    client: httpx.AsyncClient,
) -> None:
    shopper = await new_shopper(client)
    answers = [
        await client.get("/healthz"),
        await client.get("/api/v1/products"),
        await client.get(f"/api/v1/products/{uuid.uuid4()}"),  # 404
        await client.get("/api/v1/products/not-a-uuid"),  # 422
        await client.get("/api/v1/nowhere"),  # 404 of the router itself
        await client.delete("/api/v1/products"),  # 405
        await client.post("/api/v1/login", json={"email": "x@example.com", "password": "nope"}),
        await client.post("/api/v1/register", content=b"{not json", headers=_json()),
        await client.post(  # 409 empty cart
            "/api/v1/checkout", headers=shopper.headers, json={"payment_token": "pm_card_ok"}
        ),
        await client.get("/api/v1/cart", headers=shopper.headers),
    ]
    for response in answers:
        assert response.headers.get("x-request-id"), response.request.url
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), (
                response.request.method,
                response.request.url,
                response.status_code,
            )
    assert {r.status_code for r in answers} >= {200, 401, 404, 405, 409, 422}
    echoed = await client.get("/api/v1/products", headers={"X-Request-ID": "journey-42"})
    assert echoed.headers["x-request-id"] == "journey-42"


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}
