"""Shoppers driving the platform over its public REST API: each adds one unit to its cart, checks
out and waits for its order to be confirmed or cancelled (as a shopper polling the order would,
and as the floor's checkout ends with its last event; checking out again before the previous
order's cart clean-up could find the cart emptied under it). A closed loop (every shopper again
and again) finds the full rate with `--shoppers` checkouts in the system at once; an open loop
(checkouts scheduled at a fixed rate, whatever the answers) measures latency without the clients'
own queueing."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from steady_state import Checkout, SagaLedger, Window

# The gateway will require a payment token at checkout; the simulated provider authorises this one.
CHECKOUT_BODY = {"payment_token": "pm_card_ok"}


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    reply = await client.post("/api/v1/login", json={"email": email, "password": password})
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


@dataclass
class Shopper:
    """A shopper with a client of its own, on aiohttp: the load generator's own CPU is counted
    with the platform's, and httpx cost about 0.5 ms of CPU per request against aiohttp's 0.1
    (one connection per client; with one httpx pool shared by every shopper it cost more than
    the gateway it measures, httpcore scanning its whole pool on each request)."""

    session: aiohttp.ClientSession
    headers: dict[str, str]

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """The answer's status and its JSON body (None when it has none)."""
        async with self.session.post(path, json=body, headers=self.headers) as reply:
            payload = await reply.json(content_type=None) if reply.content_length != 0 else None
            return reply.status, payload

    async def close(self) -> None:
        await self.session.close()


async def new_shopper(base_url: str) -> Shopper:
    session = aiohttp.ClientSession(
        base_url=base_url,
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(limit=8),
    )
    shopper = Shopper(session, {})
    try:
        email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
        password = "bench password 1"
        status, _ = await shopper.post(
            "/api/v1/register", {"email": email, "password": password, "full_name": "Bench"}
        )
        if status != 201:
            raise RuntimeError(f"registering a shopper answered {status}")
        status, token = await shopper.post("/api/v1/login", {"email": email, "password": password})
        if status != 200:
            raise RuntimeError(f"logging a shopper in answered {status}")
    except BaseException:
        await session.close()
        raise
    shopper.headers = {"Authorization": f"Bearer {token['access_token']}"}
    return shopper


# How long a shopper waits for its order's outcome: past the saga timeout (30 s) it is
# counted as unfinished anyway.
OUTCOME_WAIT_SECONDS = 35.0


async def one_checkout(
    shopper: Shopper,
    products: list[str],
    checkouts: list[Checkout],
    started: float,
    ledger: SagaLedger,
) -> None:
    """Add one unit, check out and wait for the order's outcome; any non-2xx answer or
    transport error fails the checkout."""
    checkout = Checkout(started=started)
    checkouts.append(checkout)
    try:
        status, _ = await shopper.post(
            "/api/v1/cart/items", {"product_id": random.choice(products), "quantity": 1}
        )
        if status != 200:
            checkout.failure = f"HTTP {status} at add-to-cart"
            return
        status, order = await shopper.post("/api/v1/checkout", CHECKOUT_BODY)
        if status != 202:
            checkout.failure = f"HTTP {status} at checkout"
            return
        checkout.order_id = order["id"]
    except (aiohttp.ClientError, TimeoutError) as error:
        checkout.failure = f"transport error ({type(error).__name__})"
        return
    await ledger.settled(checkout.order_id, OUTCOME_WAIT_SECONDS)


async def closed_loop(
    shoppers: list[Shopper],
    products: list[str],
    window: Window,
    checkouts: list[Checkout],
    ledger: SagaLedger,
) -> None:
    """Every shopper checks out again and again until the window ends."""

    async def loop(shopper: Shopper) -> None:
        while (now := time.perf_counter()) < window.end:
            await one_checkout(shopper, products, checkouts, now, ledger)

    await asyncio.gather(*(loop(shopper) for shopper in shoppers))


async def open_loop(
    shoppers: list[Shopper],
    products: list[str],
    window: Window,
    rate: float,
    checkouts: list[Checkout],
    ledger: SagaLedger,
) -> int:
    """Checkouts scheduled every 1/`rate` seconds until the window ends, each by a shopper with
    none in flight (two at once on one cart would check out each other's lines); a shopper is
    free again once its order's outcome is known. Latency runs
    from the scheduled moment; returns how many started late because every shopper was busy."""
    idle: asyncio.Queue[Shopper] = asyncio.Queue()
    for shopper in shoppers:
        idle.put_nowait(shopper)
    tasks: list[asyncio.Task[None]] = []
    late = 0

    async def run(shopper: Shopper, scheduled: float) -> None:
        try:
            await one_checkout(shopper, products, checkouts, scheduled, ledger)
        finally:
            idle.put_nowait(shopper)

    index = 0
    while (scheduled := window.begin + index / rate) < window.end:
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        if idle.empty():
            late += 1
        tasks.append(asyncio.create_task(run(await idle.get(), scheduled)))
        index += 1
    await asyncio.gather(*tasks)
    return late
