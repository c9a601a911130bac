"""ProviderSettings: every environment variable the simulated provider reads, with its default."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from chassis.settings import PostgresSettings, ProcessSettings


class ProviderSettings(ProcessSettings, PostgresSettings):
    """The PAYMENT_PROVIDER_* variables, plus POSTGRES_URL, POSTGRES_POOL_MAX and logging."""

    service_name: ClassVar[str] = "payment-provider"

    host: str = Field("127.0.0.1", min_length=1, validation_alias="PAYMENT_PROVIDER_HOST")
    port: int = Field(8095, ge=0, le=65535, validation_alias="PAYMENT_PROVIDER_PORT")
    db_name: str = Field(
        "payment_provider", min_length=1, validation_alias="PAYMENT_PROVIDER_DB_NAME"
    )
    # How long `pm_card_slow` makes an authorisation wait before it answers.
    slow_seconds: float = Field(2.0, ge=0, le=600, validation_alias="PAYMENT_PROVIDER_SLOW_SECONDS")
