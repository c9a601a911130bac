"""The storefront in-process (ASGI, over httpx) with its sessions in the real Redis, isolated by
the run's key prefix, in front of a gateway address nothing listens on: what it does before and
without the platform. Its journeys with the platform are in tests/e2e (test_storefront*.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from chassis.testing.process import free_port
from web_storefront.app import create_app
from web_storefront.settings import StorefrontSettings

MakeClient = Callable[..., httpx.AsyncClient]


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_key_prefix: str
) -> StorefrontSettings:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", f"{redis_key_prefix}storefront:")
    # A port that was free a moment ago: connections to it are refused (the gateway is down).
    monkeypatch.setenv("GATEWAY_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("STOREFRONT_GATEWAY_TIMEOUT_SECONDS", "2")
    return StorefrontSettings()


@pytest.fixture
async def app(settings: StorefrontSettings) -> AsyncIterator[FastAPI]:
    """One storefront app, in-process."""
    app = create_app(settings)
    yield app
    await app.state.gateway.close()


@pytest.fixture
async def shop(app: FastAPI) -> AsyncIterator[MakeClient]:
    """Factory of clients of one storefront app (each its own cookie jar)."""
    clients: list[httpx.AsyncClient] = []

    def make(base_url: str = "http://shop.test") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        client = httpx.AsyncClient(transport=transport, base_url=base_url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
