"""Composition root of service-cart: settings -> runtime -> adapters (store, product client, token
verifier) -> handlers -> servicer and consumer -> startup hooks -> run."""

from __future__ import annotations

from datetime import timedelta

from cart_service.grpc_api import SERVICE_NAME, CartServicer
from cart_service.handlers import CONSUMER, QUEUE, Carts, subscriptions
from cart_service.products import ProductCatalog
from cart_service.settings import CartSettings
from cart_service.store import open_store
from chassis.auth import TokenVerifier, user_service_jwks
from chassis.grpc_server import ServiceRuntime, run
from chassis.messaging import DocumentInbox
from chassis.messaging.service import attach_messaging
from chassis.settings import load_settings
from ecommerce.cart.v1 import cart_pb2_grpc
from ecommerce.user.v1 import user_pb2


def build_runtime(settings: CartSettings) -> ServiceRuntime:
    """Wire the adapters and register the servicer, startup hook, readiness check and cleanup."""
    runtime = ServiceRuntime(settings)
    products = ProductCatalog.connect(
        settings.product_service_addr, timeout_seconds=settings.product_rpc_timeout_seconds
    )
    carts = Carts(products=products)
    fetch_jwks, user_channel = user_service_jwks(settings, user_pb2.GetJwksResponse.FromString)
    runtime.add_servicer(
        cart_pb2_grpc.add_CartServiceServicer_to_server,
        CartServicer(carts, TokenVerifier.from_settings(settings, fetch_jwks)),
        SERVICE_NAME,
    )

    inbox = DocumentInbox(CONSUMER, retention=timedelta(days=settings.inbox_retention_days))

    async def connect_store() -> None:
        # Retried with backoff by the runtime; each failure logs which store was unreachable.
        carts.attach(await open_store(settings, inbox))

    async def check_store() -> None:
        await carts.store.check()

    async def close_clients() -> None:
        store = carts.attached
        if store is not None:
            await store.close()
        await products.close()
        await user_channel.close()

    # The store first: the consumer (started after every startup hook) writes to it.
    runtime.on_startup("cart_store", connect_store)
    attach_messaging(runtime, settings, queue=QUEUE, subscriptions=subscriptions(carts))
    # service-product is not part of readiness: an empty cart and ClearCart work without
    # it, and a product outage already answers UNAVAILABLE per call instead of taking carts down.
    runtime.readiness_check("cart_store", check_store)
    runtime.on_shutdown("clients", close_clients)
    return runtime


async def serve() -> None:
    settings = load_settings(CartSettings)
    await build_runtime(settings).run()


def main() -> None:
    run(serve)
