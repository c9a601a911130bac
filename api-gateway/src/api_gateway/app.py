"""The composition root of the gateway: `create_app(settings)` wires settings, upstream
channels, token verifier, micro-cache, middleware, error handlers, routers and tracing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from api_gateway.admission import AdmissionControl
from api_gateway.api_docs import install_api_docs
from api_gateway.config import GatewaySettings
from api_gateway.errors import install_error_handlers, problems_only_as_problem_json
from api_gateway.forwarded import TrustedProxies
from api_gateway.middleware import GatewayMiddleware
from api_gateway.product_cache import ProductMicroCache
from api_gateway.routes import auth, cart, health, orders, products, users
from api_gateway.upstreams import Upstreams
from chassis.auth import TokenVerifier, jwk_mapping
from chassis.heap import settle_heap
from chassis.logging import configure_logging, get_logger
from chassis.metrics import start_metrics_server
from chassis.settings import load_settings
from chassis.telemetry import configure_tracing, shutdown_tracing
from ecommerce.user.v1 import user_pb2

log = get_logger(__name__)


def create_app(settings: GatewaySettings) -> FastAPI:
    configure_logging(GatewaySettings.service_name, settings.log_level, settings.log_format)
    configure_tracing(
        GatewaySettings.service_name,
        settings.otel_exporter_otlp_endpoint,
        traces_sampler=settings.otel_traces_sampler,
        ratio=settings.otel_traces_sampler_arg,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstreams = Upstreams.from_settings(settings)

        async def fetch_jwks() -> list[dict[str, str]]:
            reply = await upstreams.users.GetJwks(
                user_pb2.GetJwksRequest(), timeout=upstreams.timeout
            )
            return [jwk_mapping(key) for key in reply.keys]

        serve_metrics(settings)
        app.state.upstreams = upstreams
        app.state.token_verifier = TokenVerifier(
            fetch_jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
            max_age_seconds=settings.jwks_max_age_seconds,
        )
        app.state.product_cache = ProductMicroCache(
            settings.product_cache_ttl_seconds, settings.product_cache_max_entries
        )
        settle_heap()  # before any traffic: see chassis.heap
        log.info("gateway_started", upstreams=sorted(upstreams.channels))
        try:
            yield
        finally:
            await upstreams.close()
            shutdown_tracing()

    app = FastAPI(
        # /docs and /redoc are served with their scripts from this gateway (api_docs.py), so
        # they work on a machine without internet.
        docs_url=None,
        redoc_url=None,
        title="E-commerce API",
        version="1.0.0",
        description="The public REST entry of the platform. Errors are application/problem+json "
        "(RFC 9457); validation problems list each invalid field in `errors`.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry layer is off: server spans come from
        # opentelemetry-instrumentation-fastapi below (one source, no duplicate spans), and
        # its three spans per request cost a third of a cached read even when not exported.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.trusted_proxies = TrustedProxies(settings.trusted_proxy_networks)
    install_error_handlers(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems_only_as_problem_json(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # The catalogue first: route matching is linear and GET product is the hot path. The routes
    # join the application's own router: FastAPI 0.165 keeps an included router as a layer that
    # recounts its routes and re-enters its own matching on every request (a tenth of a cached
    # read). Each module's routes are complete as declared (paths with the prefix, tags, their
    # responses); the routers carry no dependencies, lifespans or handlers of their own.
    for module in (products, cart, orders, auth, users, health):
        if module.router.dependencies:
            raise RuntimeError(f"{module.__name__}: router-wide dependencies would be lost")
        app.router.routes.extend(module.router.routes)
    install_api_docs(app)
    # Inside GatewayMiddleware (added last, so outermost): a refusal still gets its request id,
    # metrics and access line.
    app.add_middleware(
        AdmissionControl,
        max_in_flight=settings.max_in_flight,
        retry_after_seconds=settings.admission_retry_after_seconds,
    )
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes)
    # Server spans only when they are exported: unexported, the instrumentation cost about a
    # third of a cached product read. receive/send sub-spans would double the span cost.
    if settings.otel_exporter_otlp_endpoint:
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="healthz,readyz", exclude_spans=["receive", "send"]
        )
    return app


def serve_metrics(settings: GatewaySettings) -> None:
    """Prometheus on GATEWAY_METRICS_PORT (METRICS_HOST), apart from the public port. With several
    workers the first to bind serves its own metrics; the others log that they do not."""
    try:
        start_metrics_server(settings.metrics_port, settings.metrics_host)
    except OSError as error:
        if settings.workers == 1:
            log.error("metrics_bind_failed", port=settings.metrics_port, error=str(error))
            raise
        log.warning("metrics_served_by_another_worker", port=settings.metrics_port)


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and for each worker process."""
    return create_app(load_settings(GatewaySettings))
