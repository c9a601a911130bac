"""OrderSettings: every environment variable service-order reads, with its default."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from chassis.settings import (
    AmqpSettings,
    PostgresSettings,
    ServiceSettings,
    TokenVerificationSettings,
)
from order_service.domain import SagaVersion


class OrderSettings(ServiceSettings, PostgresSettings, AmqpSettings, TokenVerificationSettings):
    """The ORDER_*, SAGA_* and upstream address variables, plus the chassis ones (PostgreSQL,
    RabbitMQ, and token verification: every RPC acts for the user whose token it carries)."""

    service_name: ClassVar[str] = "service-order"

    grpc_port: int = Field(50054, ge=0, le=65535, validation_alias="ORDER_GRPC_PORT")
    metrics_port: int = Field(9104, ge=0, le=65535, validation_alias="ORDER_METRICS_PORT")
    db_name: str = Field("orders", min_length=1, validation_alias="ORDER_DB_NAME")
    cart_service_addr: str = Field("127.0.0.1:50053", validation_alias="CART_SERVICE_ADDR")
    product_service_addr: str = Field("127.0.0.1:50052", validation_alias="PRODUCT_SERVICE_ADDR")
    # Deadline of each call to service-cart and service-product during a checkout.
    rpc_timeout_seconds: float = Field(
        2.0, gt=0, le=60, validation_alias="ORDER_RPC_TIMEOUT_SECONDS"
    )
    # A PENDING order older than this is cancelled (TIMEOUT) by the sweeper.
    saga_timeout_seconds: float = Field(30.0, gt=0, validation_alias="SAGA_TIMEOUT_SECONDS")
    saga_sweep_interval_seconds: float = Field(
        1.0, gt=0, le=3600, validation_alias="SAGA_SWEEP_INTERVAL_SECONDS"
    )

    # The saga a checkout places its order under: 2 (the payment step: a token is required, the
    # order is confirmed once paid) or 1 (confirmed once the stock is reserved, nothing charged).
    # 1 only while upgrading a running platform from a release without the payment step, until
    # no replica of that release is left (README, "Upgrading to the payment step").
    checkout_saga_version: SagaVersion = Field(
        SagaVersion.PAYMENT, validation_alias="CHECKOUT_SAGA_VERSION"
    )

    # Checkout admission (checkout_admission.py): checkouts are refused (UNAVAILABLE with retry
    # advice; 503 + Retry-After at the gateway) while more than MAX_STALE_ORDERS orders have been
    # PENDING for over STALE_SECONDS, or the outbox holds more than MAX_OUTBOX unpublished events
    # or its oldest is older than MAX_OUTBOX_AGE_SECONDS; sampled every SAMPLE_SECONDS.
    checkout_backlog_stale_seconds: float = Field(
        20.0, gt=0, validation_alias="CHECKOUT_BACKLOG_STALE_SECONDS"
    )
    checkout_backlog_max_stale_orders: int = Field(
        200, ge=0, validation_alias="CHECKOUT_BACKLOG_MAX_STALE_ORDERS"
    )
    checkout_backlog_max_outbox: int = Field(
        2000, ge=0, validation_alias="CHECKOUT_BACKLOG_MAX_OUTBOX"
    )
    checkout_backlog_max_outbox_age_seconds: float = Field(
        30.0, gt=0, validation_alias="CHECKOUT_BACKLOG_MAX_OUTBOX_AGE_SECONDS"
    )
    checkout_backlog_sample_seconds: float = Field(
        1.0, gt=0, le=60, validation_alias="CHECKOUT_BACKLOG_SAMPLE_SECONDS"
    )
