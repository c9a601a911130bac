"""The gateway routes the pages use, one method each, for one shopper (`Caller`). Answers are the
gateway's JSON as it is (dicts): the pages read the documented fields and nothing else."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from web_storefront.gateway import Caller, GatewayClient

JSON = dict[str, Any]


def _segment(value: str) -> str:
    """An id placed in a path: quoted, so no input can reach another route."""
    return quote(value, safe="")


class ShopApi:
    def __init__(self, client: GatewayClient, caller: Caller) -> None:
        self._client = client
        self.caller = caller

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self._client.call(self.caller, method, path, **kwargs)

    # accounts
    async def register(self, email: str, password: str, full_name: str) -> JSON:
        body = {"email": email, "password": password, "full_name": full_name}
        result: JSON = await self._call("POST", "/register", json=body)
        return result

    async def login(self, email: str, password: str) -> JSON:
        result: JSON = await self._call(
            "POST", "/login", json={"email": email, "password": password}
        )
        return result

    async def me(self) -> JSON:
        result: JSON = await self._call("GET", "/users/me")
        return result

    # catalogue
    async def products(self, *, query: str, page_token: str, limit: int) -> JSON:
        params: dict[str, Any] = {"limit": limit}
        if query:
            params["q"] = query
        if page_token:
            params["page_token"] = page_token
        result: JSON = await self._call("GET", "/products", params=params)
        return result

    async def product(self, product_id: str) -> JSON:
        result: JSON = await self._call("GET", f"/products/{_segment(product_id)}")
        return result

    async def create_product(self, fields: JSON) -> JSON:
        result: JSON = await self._call("POST", "/products", json=fields)
        return result

    async def update_product(self, product_id: str, fields: JSON) -> JSON:
        result: JSON = await self._call("PATCH", f"/products/{_segment(product_id)}", json=fields)
        return result

    # cart
    async def cart(self) -> JSON:
        result: JSON = await self._call("GET", "/cart")
        return result

    async def add_to_cart(self, product_id: str, quantity: int) -> JSON:
        body = {"product_id": product_id, "quantity": quantity}
        result: JSON = await self._call("POST", "/cart/items", json=body)
        return result

    async def set_quantity(self, product_id: str, quantity: int) -> JSON:
        result: JSON = await self._call(
            "PUT", f"/cart/items/{_segment(product_id)}", json={"quantity": quantity}
        )
        return result

    async def remove_from_cart(self, product_id: str) -> JSON:
        result: JSON = await self._call("DELETE", f"/cart/items/{_segment(product_id)}")
        return result

    # orders
    async def checkout(self, payment_token: str, idempotency_key: str) -> JSON:
        result: JSON = await self._call(
            "POST",
            "/checkout",
            json={"payment_token": payment_token},
            headers={"Idempotency-Key": idempotency_key},
        )
        return result

    async def orders(self, *, page_token: str, limit: int) -> JSON:
        params: dict[str, Any] = {"limit": limit}
        if page_token:
            params["page_token"] = page_token
        result: JSON = await self._call("GET", "/orders", params=params)
        return result

    async def order(self, order_id: str) -> JSON:
        result: JSON = await self._call("GET", f"/orders/{_segment(order_id)}")
        return result

    async def cancel_order(self, order_id: str) -> JSON:
        result: JSON = await self._call("POST", f"/orders/{_segment(order_id)}/cancel")
        return result
