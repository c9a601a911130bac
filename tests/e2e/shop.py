"""A shopper and an admin driving the platform over REST only, as a client application would."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct horse battery"
FINAL = ("CONFIRMED", "CANCELLED")
# The simulated payment provider's token that is authorised.
PAYMENT_TOKEN = "pm_card_ok"


@dataclass
class Shopper:
    client: httpx.AsyncClient
    user_id: str
    email: str
    headers: dict[str, str]

    async def add(self, product_id: str, quantity: int) -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/cart/items",
            headers=self.headers,
            json={"product_id": product_id, "quantity": quantity},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def cart(self) -> dict[str, int]:
        response = await self.client.get("/api/v1/cart", headers=self.headers)
        assert response.status_code == 200, response.text
        return {item["product_id"]: item["quantity"] for item in response.json()["items"]}

    async def checkout(
        self, idempotency_key: str | None = None, payment_token: str = PAYMENT_TOKEN
    ) -> httpx.Response:
        headers = dict(self.headers)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return await self.client.post(
            "/api/v1/checkout", headers=headers, json={"payment_token": payment_token}
        )

    async def checkout_until_answered(self, attempts: int = 6) -> httpx.Response:
        """Check out as a careful client does: one Idempotency-Key for the intent, and the same
        request again after a 503 or 504 (the first try may have placed the order or not; the
        key makes the repeat return that order rather than a second one)."""
        key = str(uuid.uuid4())
        for attempt in range(attempts):
            response = await self.checkout(key)
            if response.status_code not in (503, 504):
                return response
            await asyncio.sleep(0.25 * 2**attempt)
        return response

    async def checkout_order(self, idempotency_key: str | None = None) -> dict[str, Any]:
        response = await self.checkout(idempotency_key)
        assert response.status_code == 202, response.text
        order = dict(response.json())
        assert order["status"] == "PENDING"
        return order

    async def order(self, order_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/orders/{order_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def final_order(self, order_id: str, within: float = 60.0) -> dict[str, Any]:
        """The order once it is CONFIRMED or CANCELLED."""
        deadline = time.monotonic() + within
        while True:
            order = await self.order(order_id)
            if order["status"] in FINAL:
                return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} still {order['status']} after {within}s")
            await asyncio.sleep(0.2)

    async def orders(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if token:
                params["page_token"] = token
            response = await self.client.get("/api/v1/orders", headers=self.headers, params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["items"]
            token = page["next_page_token"]
            if not token:
                return found

    async def cancel(self, order_id: str) -> httpx.Response:
        return await self.client.post(f"/api/v1/orders/{order_id}/cancel", headers=self.headers)


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    response = await client.post("/api/v1/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def new_shopper(client: httpx.AsyncClient) -> Shopper:
    email = f"shopper-{uuid.uuid4().hex[:12]}@example.com"
    response = await client.post(
        "/api/v1/register", json={"email": email, "password": PASSWORD, "full_name": "Shopper"}
    )
    assert response.status_code == 201, response.text
    return Shopper(client, response.json()["id"], email, await login(client, email, PASSWORD))


@dataclass
class Admin:
    client: httpx.AsyncClient
    headers: dict[str, str]

    async def create_product(
        self, *, stock: int, price_cents: int = 1000, currency: str = "USD"
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/products",
            headers=self.headers,
            json={
                "sku": f"E2E-{uuid.uuid4().hex[:12]}",
                "name": f"E2E product {uuid.uuid4().hex[:6]}",
                "description": "made by the end-to-end tests",
                "price_cents": price_cents,
                "currency": currency,
                "stock": stock,
            },
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


async def stock_of(client: httpx.AsyncClient, product_id: str) -> int:
    # The gateway's product micro-cache may hold a read for up to its TTL (1 s): wait it out.
    await asyncio.sleep(1.1)
    response = await client.get(f"/api/v1/products/{product_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["stock"])
