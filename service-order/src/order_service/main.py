"""Composition root of service-order: settings, runtime, adapters (pool, clients, token
verifier), handlers, servicer, startup and readiness, messaging and the saga sweeper, run."""

from __future__ import annotations

from dataclasses import dataclass

from chassis import postgres
from chassis.auth import TokenVerifier, user_service_jwks
from chassis.grpc_server import ServiceRuntime, run
from chassis.messaging import OutboxPublisher
from chassis.messaging.service import Outbox, attach_messaging
from chassis.settings import load_settings
from ecommerce.order.v1 import order_pb2_grpc
from ecommerce.user.v1 import user_pb2
from order_service.checkout_admission import BacklogBounds, CheckoutAdmission
from order_service.clients import CartClient, ProductClient
from order_service.grpc_api import SERVICE_NAME, OrderServicer
from order_service.handlers import CONSUMER, QUEUE, Orders, subscriptions
from order_service.settings import OrderSettings
from order_service.store import MIGRATIONS_DIR, IdempotencyKeys, OrderStore, OrderUnitOfWork
from order_service.sweeper import SagaTimeoutSweeper


@dataclass(frozen=True, slots=True)
class OrderApp:
    runtime: ServiceRuntime
    database_url: str


async def build_app(settings: OrderSettings) -> OrderApp:
    """Wire the service; nothing connects until `app.runtime.run()` (pool and channels are lazy)."""
    runtime = ServiceRuntime(settings)
    url = postgres.database_url(settings.postgres_url, settings.db_name)
    pool = await postgres.create_pool(
        url,
        max_size=settings.postgres_pool_max,
        idle_seconds=settings.postgres_pool_idle_seconds,
    )
    carts = CartClient.connect(
        settings.cart_service_addr, timeout_seconds=settings.rpc_timeout_seconds
    )
    products = ProductClient.connect(
        settings.product_service_addr, timeout_seconds=settings.rpc_timeout_seconds
    )
    fetch_jwks, user_channel = user_service_jwks(settings, user_pb2.GetJwksResponse.FromString)
    verifier = TokenVerifier.from_settings(settings, fetch_jwks)

    publisher = OutboxPublisher(pool)

    def new_unit_of_work() -> OrderUnitOfWork:
        return OrderUnitOfWork(pool, consumer=CONSUMER, publisher=publisher)

    admission = CheckoutAdmission(
        pool,
        BacklogBounds(
            stale_after_seconds=settings.checkout_backlog_stale_seconds,
            max_stale_orders=settings.checkout_backlog_max_stale_orders,
            max_outbox=settings.checkout_backlog_max_outbox,
            max_outbox_age_seconds=settings.checkout_backlog_max_outbox_age_seconds,
        ),
        sample_seconds=settings.checkout_backlog_sample_seconds,
    )
    orders = Orders(
        new_unit_of_work=new_unit_of_work,
        store=OrderStore(pool),
        idempotency_keys=IdempotencyKeys(pool),
        carts=carts,
        products=products,
        admission=admission,
        saga_version=settings.checkout_saga_version,
    )
    runtime.add_servicer(
        order_pb2_grpc.add_OrderServiceServicer_to_server,
        OrderServicer(orders, verifier),
        SERVICE_NAME,
    )

    async def prepare_database() -> None:
        await postgres.ensure_database(settings.postgres_url, settings.db_name)
        await postgres.migrate(url, MIGRATIONS_DIR)

    async def check_postgres() -> None:
        await postgres.check(pool)

    async def close_clients() -> None:
        await carts.close()
        await products.close()
        await user_channel.close()
        await pool.close()

    runtime.on_startup("postgres", prepare_database)
    # service-cart and service-product are not readiness conditions: without them a checkout
    # answers UNAVAILABLE, while orders can still be read and cancelled and the saga goes on.
    runtime.readiness_check("postgres", check_postgres)
    runtime.on_shutdown("clients", close_clients)
    attach_messaging(
        runtime,
        settings,
        queue=QUEUE,
        subscriptions=subscriptions(new_unit_of_work, orders.store),
        outbox=Outbox(database_url=url, pool=pool, publisher=publisher),
    )
    sweeper = SagaTimeoutSweeper(
        new_unit_of_work,
        timeout_seconds=settings.saga_timeout_seconds,
        interval_seconds=settings.saga_sweep_interval_seconds,
    )
    runtime.background("saga_timeout_sweeper", sweeper.run)
    runtime.background("checkout_admission", admission.run)
    return OrderApp(runtime=runtime, database_url=url)


def main() -> None:
    settings = load_settings(OrderSettings)

    async def serve() -> None:
        app = await build_app(settings)
        await app.runtime.run()

    run(serve)


if __name__ == "__main__":
    main()
