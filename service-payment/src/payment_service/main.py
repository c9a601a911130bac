"""Composition root of service-payment: settings, runtime, adapters (pool, provider client, token
verifier), handlers, servicer, startup and readiness, messaging and the provider worker, run."""

from __future__ import annotations

from dataclasses import dataclass

from chassis import postgres
from chassis.auth import TokenVerifier, user_service_jwks
from chassis.grpc_server import ServiceRuntime, run
from chassis.messaging import OutboxPublisher
from chassis.messaging.service import Outbox, attach_messaging
from chassis.settings import load_settings
from ecommerce.payment.v1 import payment_pb2_grpc
from ecommerce.user.v1 import user_pb2
from payment_service.grpc_api import SERVICE_NAME, PaymentServicer
from payment_service.handlers import CONSUMER, QUEUE, subscriptions
from payment_service.provider import HttpPaymentProvider, PaymentProvider
from payment_service.settings import PaymentSettings
from payment_service.store import MIGRATIONS_DIR, PaymentStore, PaymentUnitOfWork
from payment_service.worker import PaymentWorker, WorkerSettings


@dataclass(frozen=True, slots=True)
class PaymentApp:
    runtime: ServiceRuntime
    database_url: str
    worker: PaymentWorker


async def build_app(
    settings: PaymentSettings, *, provider: PaymentProvider | None = None
) -> PaymentApp:
    """Wire the service; nothing connects until `app.runtime.run()` (pool and channels are lazy).
    `provider` replaces the HTTP client of PAYMENT_PROVIDER_URL (tests)."""
    runtime = ServiceRuntime(settings)
    url = postgres.database_url(settings.postgres_url, settings.db_name)
    pool = await postgres.create_pool(
        url,
        max_size=settings.postgres_pool_max,
        idle_seconds=settings.postgres_pool_idle_seconds,
    )
    if provider is None:
        provider = HttpPaymentProvider(
            settings.provider_url, timeout_seconds=settings.provider_timeout_seconds
        )
    fetch_jwks, user_channel = user_service_jwks(settings, user_pb2.GetJwksResponse.FromString)
    verifier = TokenVerifier.from_settings(settings, fetch_jwks)

    publisher = OutboxPublisher(pool)

    def new_unit_of_work() -> PaymentUnitOfWork:
        return PaymentUnitOfWork(pool, consumer=CONSUMER, publisher=publisher)

    store = PaymentStore(pool)
    worker = PaymentWorker(
        new_unit_of_work,
        store,
        provider,
        WorkerSettings(
            provider_timeout_seconds=settings.provider_timeout_seconds,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            authorize_deadline_seconds=settings.authorize_deadline_seconds,
            interval_seconds=settings.worker_interval_seconds,
        ),
    )
    runtime.add_servicer(
        payment_pb2_grpc.add_PaymentServiceServicer_to_server,
        PaymentServicer(store, verifier),
        SERVICE_NAME,
    )

    async def prepare_database() -> None:
        await postgres.ensure_database(settings.postgres_url, settings.db_name)
        await postgres.migrate(url, MIGRATIONS_DIR)

    async def check_postgres() -> None:
        await postgres.check(pool)

    async def close_clients() -> None:
        await provider.close()
        await user_channel.close()
        await pool.close()

    runtime.on_startup("postgres", prepare_database)
    # The provider is no readiness condition: while it is away, payments wait and are retried,
    # and GetPayment still answers.
    runtime.readiness_check("postgres", check_postgres)
    runtime.on_shutdown("clients", close_clients)
    attach_messaging(
        runtime,
        settings,
        queue=QUEUE,
        subscriptions=subscriptions(new_unit_of_work, worker.wake),
        outbox=Outbox(database_url=url, pool=pool, publisher=publisher),
    )
    runtime.background("payment_worker", worker.run)
    return PaymentApp(runtime=runtime, database_url=url, worker=worker)


def main() -> None:
    settings = load_settings(PaymentSettings)

    async def serve() -> None:
        app = await build_app(settings)
        await app.runtime.run()

    run(serve)


if __name__ == "__main__":
    main()
