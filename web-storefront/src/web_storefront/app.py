"""The composition root of the storefront: `create_app(settings)` wires the gateway client, the
session store, middleware (sessions, security headers, metrics), CSRF, error pages, routes and
the static files the pages load (htmx included: served here, never from a CDN)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI
from starlette.staticfiles import StaticFiles

from chassis.heap import settle_heap
from chassis.logging import configure_logging, get_logger
from chassis.metrics import start_metrics_server
from chassis.redis_client import create_redis
from chassis.settings import load_settings
from chassis.telemetry import configure_tracing, shutdown_tracing
from web_storefront.csrf import csrf_protected
from web_storefront.gateway import GatewayClient
from web_storefront.middleware import StorefrontMiddleware
from web_storefront.pages import install_error_pages, unavailable_page
from web_storefront.routes import account, admin, cart, catalogue, health, orders
from web_storefront.sessions import SessionMiddleware, SessionStore
from web_storefront.settings import StorefrontSettings

log = get_logger(__name__)

STATIC = Path(__file__).parent / "static"


def create_app(
    settings: StorefrontSettings, *, gateway_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    configure_logging(StorefrontSettings.service_name, settings.log_level)
    configure_tracing(
        StorefrontSettings.service_name,
        settings.otel_exporter_otlp_endpoint,
        traces_sampler=settings.otel_traces_sampler,
        ratio=settings.otel_traces_sampler_arg,
    )
    redis = create_redis(settings.redis_url, timeout_seconds=settings.redis_timeout_seconds)
    sessions = SessionStore(
        redis, key_prefix=settings.redis_key_prefix, idle_seconds=settings.session_idle_seconds
    )
    gateway = GatewayClient(
        settings.gateway_url,
        timeout_seconds=settings.gateway_timeout_seconds,
        transport=gateway_transport,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        start_metrics_server(settings.metrics_port, settings.metrics_host)
        settle_heap()  # before any traffic: see chassis.heap
        log.info("storefront_started", gateway=settings.gateway_url)
        try:
            yield
        finally:
            await gateway.close()
            await redis.aclose()
            shutdown_tracing()

    app = FastAPI(
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # Every unsafe request must carry its session's CSRF token (csrf.py).
        dependencies=[Depends(csrf_protected)],
    )
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.sessions = sessions
    install_error_pages(app)
    for module in (catalogue, cart, orders, account, admin, health):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Outermost last: the security headers and the request id wrap everything, sessions too.
    app.add_middleware(SessionMiddleware, store=sessions, unavailable=unavailable_page)
    app.add_middleware(StorefrontMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory`."""
    return create_app(load_settings(StorefrontSettings))
