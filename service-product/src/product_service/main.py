"""Composition root of service-product: settings -> runtime -> adapters -> handlers -> servicer and
consumers -> startup hooks -> run.

`service-product` (or `service-product serve`) serves gRPC and takes part in the checkout saga;
`service-product seed` loads the sample catalogue and exits.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from chassis import postgres
from chassis.auth import TokenVerifier, user_service_jwks
from chassis.grpc_server import ServiceRuntime, run
from chassis.messaging import OutboxPublisher
from chassis.messaging.service import Outbox, attach_messaging
from chassis.redis_client import create_redis
from chassis.settings import load_settings
from ecommerce.product.v1 import product_pb2_grpc
from ecommerce.user.v1 import user_pb2
from product_service import seed
from product_service.cache import ProductCache
from product_service.grpc_api import SERVICE_NAME, ProductServicer
from product_service.handlers import QUEUE, Catalog, Stock, subscriptions
from product_service.settings import ProductSettings
from product_service.store import MIGRATIONS_DIR, ProductStore
from product_service.unit_of_work import CONSUMER, ProductUnitOfWork


@dataclass(frozen=True, slots=True)
class ProductApp:
    """The wired service; tests reach its store and cache through it."""

    runtime: ServiceRuntime
    store: ProductStore
    cache: ProductCache


async def build_app(settings: ProductSettings) -> ProductApp:
    """Wire the service; nothing connects until `app.runtime.run()` (pool and clients are lazy)."""
    runtime = ServiceRuntime(settings)

    database_url = postgres.database_url(settings.postgres_url, settings.db_name)
    pool = await postgres.create_pool(
        database_url,
        max_size=settings.postgres_pool_max,
        idle_seconds=settings.postgres_pool_idle_seconds,
    )
    redis = create_redis(settings.redis_url, timeout_seconds=settings.redis_timeout_seconds)
    store = ProductStore(pool)
    cache = ProductCache(
        redis,
        store,
        key_prefix=settings.redis_key_prefix,
        ttl_seconds=settings.cache_ttl_seconds,
        tombstone_seconds=settings.cache_tombstone_seconds,
        timeout_seconds=settings.redis_timeout_seconds,
    )
    fetch_jwks, user_channel = user_service_jwks(settings, user_pb2.GetJwksResponse.FromString)

    publisher = OutboxPublisher(pool)

    def new_unit_of_work() -> ProductUnitOfWork:
        return ProductUnitOfWork(pool, consumer=CONSUMER, publisher=publisher)

    catalog = Catalog(store, cache, new_unit_of_work)
    runtime.add_servicer(
        product_pb2_grpc.add_ProductServiceServicer_to_server,
        ProductServicer(catalog, TokenVerifier.from_settings(settings, fetch_jwks)),
        SERVICE_NAME,
    )
    attach_messaging(
        runtime,
        settings,
        queue=QUEUE,
        subscriptions=subscriptions(new_unit_of_work, Stock(cache)),
        outbox=Outbox(database_url, pool, publisher),
    )

    async def prepare_database() -> None:
        await postgres.ensure_database(settings.postgres_url, settings.db_name)
        await postgres.migrate(database_url, MIGRATIONS_DIR)

    async def check_postgres() -> None:
        await postgres.check(pool)

    async def close_clients() -> None:
        await pool.close()
        await redis.aclose()
        await user_channel.close()

    # First, so the database exists and is migrated before the consumer and relay start.
    runtime.on_startup("postgres", prepare_database)
    # Redis is deliberately not a readiness check: every read falls back to Postgres when Redis
    # is down (counted in product_cache_errors_total), so the service can still serve.
    runtime.readiness_check("postgres", check_postgres)
    runtime.on_shutdown("clients", close_clients)
    return ProductApp(runtime, store, cache)


async def serve() -> None:
    settings = load_settings(ProductSettings)
    app = await build_app(settings)
    await app.runtime.run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="service-product", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the ProductService gRPC API (the default)")
    commands.add_parser("seed", help="migrate and load the sample catalogue, then exit")
    args = parser.parse_args(argv)
    if args.command == "seed":
        seed.main()
        return
    run(serve)


if __name__ == "__main__":
    main()
