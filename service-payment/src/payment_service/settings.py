"""PaymentSettings: every environment variable service-payment reads, with its default."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from chassis.settings import (
    AmqpSettings,
    PostgresSettings,
    ServiceSettings,
    TokenVerificationSettings,
)


class PaymentSettings(ServiceSettings, PostgresSettings, AmqpSettings, TokenVerificationSettings):
    """The PAYMENT_* variables, plus the chassis ones (PostgreSQL, RabbitMQ, and token
    verification: GetPayment answers the buyer or an admin, by the token the call carries)."""

    service_name: ClassVar[str] = "service-payment"

    grpc_port: int = Field(50055, ge=0, le=65535, validation_alias="PAYMENT_GRPC_PORT")
    metrics_port: int = Field(9105, ge=0, le=65535, validation_alias="PAYMENT_METRICS_PORT")
    db_name: str = Field("payments", min_length=1, validation_alias="PAYMENT_DB_NAME")
    provider_url: str = Field(
        "http://127.0.0.1:8095", min_length=1, validation_alias="PAYMENT_PROVIDER_URL"
    )
    # Deadline of each call to the provider (connect, send, answer).
    provider_timeout_seconds: float = Field(
        5.0, gt=0, le=120, validation_alias="PAYMENT_PROVIDER_TIMEOUT_SECONDS"
    )
    # Backoff between attempts after a transient provider failure: base x 2^n, capped, jittered.
    retry_base_seconds: float = Field(0.2, gt=0, validation_alias="PAYMENT_RETRY_BASE_SECONDS")
    retry_max_seconds: float = Field(5.0, gt=0, validation_alias="PAYMENT_RETRY_MAX_SECONDS")
    # Authorising stops being retried this long after it was first wanted (the order's own
    # saga timeout cancels the order, and its order.cancelled voids the payment).
    authorize_deadline_seconds: float = Field(
        60.0, gt=0, validation_alias="PAYMENT_AUTHORIZE_DEADLINE_SECONDS"
    )
    # The worker looks for due payments this often when nothing woke it.
    worker_interval_seconds: float = Field(
        0.5, gt=0, le=60, validation_alias="PAYMENT_WORKER_INTERVAL_SECONDS"
    )
