"""Shoppers of the platform, driven only through the gateway's public REST API.

Each simulated shopper registers and logs in through the API, then browses and searches the
catalogue, views products, fills and changes its cart, checks out (`{"payment_token":
"pm_card_ok"}`), polls its order until CONFIRMED or CANCELLED, and now and then cancels one. Every
shopper has its own client address, sent as `X-Forwarded-For` (the gateway believes it only from
its `GATEWAY_TRUSTED_PROXIES`, which `make dev` and compose set to where locust runs locally), so
per-client limits see a population, not one client.

Settings (environment):
- `LOAD_MIX`: `shop` (default: the mix below, with think time) or `checkout` (add one unit and
  check out again and again, no think time: the shape of bench/saga's full rate, to compare);
- `LOAD_THINK_SECONDS`: `min,max` think time of the shop mix (default `1,3`);
- `LOAD_CLIENT_NETWORK`: the first two octets of the shoppers' addresses (default `127.77`);
- `LOAD_ORDER_DEADLINE_SECONDS`: polling an order gives up after this (default 30, the saga
  timeout): the order then counts as a failed checkout.

Besides locust's per-request rows, each checkout adds one row named `checkout -> CONFIRMED`
(request type `SAGA`), its time from the checkout request to the poll that saw CONFIRMED: a
success when confirmed, a failure when cancelled (any reason, TIMEOUT included), refused or never
finished.
"""

from __future__ import annotations

import itertools
import os
import random
import time
import uuid
from typing import Any

from locust import HttpUser, between, constant, events, task
from locust.exception import StopUser

MIX = os.environ.get("LOAD_MIX", "shop")
THINK = tuple(float(v) for v in os.environ.get("LOAD_THINK_SECONDS", "1,3").split(","))
NETWORK = os.environ.get("LOAD_CLIENT_NETWORK", "127.77")
ORDER_DEADLINE = float(os.environ.get("LOAD_ORDER_DEADLINE_SECONDS", "30"))
PASSWORD = "load-generator-password"
SEARCH_WORDS = ("lamp", "mug", "desk", "chair", "book", "bench", "shirt", "a", "e")
FINAL = {"CONFIRMED", "CANCELLED"}
SIGN_IN_ATTEMPTS = 5
SAGA_ROW = "checkout -> CONFIRMED"

_addresses = itertools.count(1)


def next_address() -> str:
    """A client address of its own for each shopper: NETWORK.x.y, y in 1..250."""
    n = next(_addresses)
    return f"{NETWORK}.{(n // 250) % 256}.{n % 250 + 1}"


def saga_row(started: float, exception: Exception | None, order: dict[str, Any] | None) -> None:
    events.request.fire(
        request_type="SAGA",
        name=SAGA_ROW,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=exception,
        context={"order": order},
    )


class Shopper(HttpUser):
    wait_time = constant(0) if MIX == "checkout" else between(*THINK)

    def on_start(self) -> None:
        self.client.headers["X-Forwarded-For"] = next_address()
        if not self.sign_up_and_in():
            raise StopUser()
        page = self.client.get("/api/v1/products?limit=100", name="/api/v1/products?limit=")
        self.products = [p["id"] for p in page.json().get("items", [])] if page.ok else []
        if not self.products:
            raise StopUser()
        self.cart: dict[str, int] = {}
        self.orders: list[str] = []

    def sign_up_and_in(self) -> bool:
        """Register and log in, each tried up to SIGN_IN_ATTEMPTS times (a refusal or a timeout
        while every shopper signs in at once is retried after its Retry-After, as a person
        would; each failed attempt still counts in the report)."""
        email = f"load-{uuid.uuid4().hex[:16]}@example.com"
        body = {"email": email, "password": PASSWORD, "full_name": "Load Shopper"}
        # 409: an earlier attempt registered the account but its answer was lost.
        if not self.attempt(lambda: self.client.post("/api/v1/register", json=body), {201, 409}):
            return False
        credentials = {"email": email, "password": PASSWORD}
        replies: list[Any] = []

        def login() -> Any:
            replies.append(self.client.post("/api/v1/login", json=credentials))
            return replies[-1]

        if not self.attempt(login, {200}):
            return False
        self.client.headers["Authorization"] = f"Bearer {replies[-1].json()['access_token']}"
        return True

    @staticmethod
    def attempt(call: Any, accepted: set[int]) -> bool:
        for _ in range(SIGN_IN_ATTEMPTS):
            reply = call()
            if reply.status_code in accepted:
                return True
            time.sleep(float(reply.headers.get("Retry-After", "1")))
        return False

    # ---- browsing
    @task(10)
    def browse(self) -> None:
        if MIX == "checkout":
            return self.add_and_check_out()
        page = self.client.get("/api/v1/products?limit=20", name="/api/v1/products?limit=")
        token = page.json().get("next_page_token") if page.ok else None
        if token and random.random() < 0.5:
            self.client.get(
                f"/api/v1/products?limit=20&page_token={token}",
                name="/api/v1/products?page_token=",
            )
        return None

    @task(5)
    def search(self) -> None:
        if MIX == "checkout":
            return self.add_and_check_out()
        word = random.choice(SEARCH_WORDS)
        self.client.get(f"/api/v1/products?q={word}", name="/api/v1/products?q=")
        return None

    @task(20)
    def view_product(self) -> None:
        if MIX == "checkout":
            return self.add_and_check_out()
        product = random.choice(self.products)
        self.client.get(f"/api/v1/products/{product}", name="/api/v1/products/{id}")
        return None

    # ---- the cart
    @task(6)
    def add_to_cart(self) -> None:
        if MIX == "checkout":
            return self.add_and_check_out()
        self.add(random.choice(self.products), random.randint(1, 2))
        return None

    @task(2)
    def change_cart(self) -> None:
        if MIX == "checkout" or not self.cart:
            return None
        product = random.choice(list(self.cart))
        quantity = random.randint(0, 3)
        with self.client.put(
            f"/api/v1/cart/items/{product}",
            json={"quantity": quantity},
            name="/api/v1/cart/items/{id}",
            catch_response=True,
        ) as reply:
            if reply.status_code == 409:  # over stock: the shop said no, the platform is fine
                reply.success()
            elif reply.ok:
                self.remember(reply.json())
        return None

    @task(3)
    def view_cart(self) -> None:
        if MIX == "checkout":
            return self.add_and_check_out()
        reply = self.client.get("/api/v1/cart")
        if reply.ok:
            self.remember(reply.json())
        return None

    # ---- orders
    @task(3)
    def check_out(self) -> None:
        if not self.cart:
            self.add(random.choice(self.products), 1)
        self.checkout_and_follow()

    @task(1)
    def list_orders(self) -> None:
        if MIX == "checkout":
            return self.add_and_check_out()
        self.client.get("/api/v1/orders?limit=10", name="/api/v1/orders?limit=")
        return None

    def add_and_check_out(self) -> None:
        self.add(random.choice(self.products), 1)
        self.checkout_and_follow()

    def add(self, product: str, quantity: int) -> None:
        with self.client.post(
            "/api/v1/cart/items",
            json={"product_id": product, "quantity": quantity},
            catch_response=True,
        ) as reply:
            if reply.status_code == 409:  # the line would pass stock or 100: a shop answer
                reply.success()
            elif reply.ok:
                self.remember(reply.json())

    def remember(self, cart: dict[str, Any]) -> None:
        self.cart = {item["product_id"]: item["quantity"] for item in cart.get("items", [])}

    def checkout_and_follow(self) -> None:
        """Check out, poll the order until it is final, cancel one in ten confirmed."""
        started = time.perf_counter()
        with self.client.post(
            "/api/v1/checkout", json={"payment_token": "pm_card_ok"}, catch_response=True
        ) as reply:
            if reply.status_code != 202:
                reply.failure(f"HTTP {reply.status_code}")
                saga_row(started, RuntimeError(f"checkout HTTP {reply.status_code}"), None)
                return
            order = reply.json()
        self.cart = {}  # confirmed orders take their lines out of the cart
        deadline = time.monotonic() + ORDER_DEADLINE
        while order["status"] not in FINAL and time.monotonic() < deadline:
            time.sleep(0.1)
            polled = self.client.get(f"/api/v1/orders/{order['id']}", name="/api/v1/orders/{id}")
            if polled.ok:
                order = polled.json()
        if order["status"] == "CONFIRMED":
            saga_row(started, None, order)
            if MIX != "checkout" and random.random() < 0.1:
                self.client.post(
                    f"/api/v1/orders/{order['id']}/cancel", name="/api/v1/orders/{id}/cancel"
                )
        else:
            reason = order.get("cancel_reason") or "not final in time"
            saga_row(started, RuntimeError(f"order {order['status']} ({reason})"), order)
