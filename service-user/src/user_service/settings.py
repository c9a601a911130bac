"""Configuration of service-user from environment variables: ports, stores, keys, cost, throttle."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from argon2.profiles import RFC_9106_LOW_MEMORY
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from chassis.errors import InvalidArgument
from chassis.settings import PostgresSettings, RedisSettings, ServiceSettings
from user_service.domain import validate_new_email, validate_new_password


class UserSettings(ServiceSettings, PostgresSettings, RedisSettings):
    service_name: ClassVar[str] = "service-user"

    grpc_port: int = Field(50051, ge=0, le=65535, validation_alias="USER_GRPC_PORT")
    metrics_port: int = Field(9101, ge=0, le=65535, validation_alias="USER_METRICS_PORT")
    db_name: str = Field("users", min_length=1, validation_alias="USER_DB_NAME")

    jwt_private_key: SecretStr | None = Field(None, validation_alias="JWT_PRIVATE_KEY")
    jwt_private_key_file: Path | None = Field(None, validation_alias="JWT_PRIVATE_KEY_FILE")
    jwt_retired_public_keys: str | None = Field(None, validation_alias="JWT_RETIRED_PUBLIC_KEYS")
    jwt_issuer: str = Field("ecommerce-user-service", min_length=1, validation_alias="JWT_ISSUER")
    jwt_audience: str = Field("ecommerce-api", min_length=1, validation_alias="JWT_AUDIENCE")
    jwt_ttl_seconds: int = Field(3600, ge=60, le=86400, validation_alias="JWT_TTL_SECONDS")

    argon2_time_cost: int = Field(
        RFC_9106_LOW_MEMORY.time_cost, ge=1, validation_alias="ARGON2_TIME_COST"
    )
    argon2_parallelism: int = Field(
        RFC_9106_LOW_MEMORY.parallelism, ge=1, validation_alias="ARGON2_PARALLELISM"
    )
    argon2_memory_cost_kib: int = Field(
        RFC_9106_LOW_MEMORY.memory_cost, ge=8, validation_alias="ARGON2_MEMORY_COST_KIB"
    )
    # Hashes running at once (each holds ARGON2_MEMORY_COST_KIB) and callers allowed to wait for
    # one; any further login or registration is answered UNAVAILABLE at once.
    argon2_max_in_flight: int = Field(2, ge=1, le=64, validation_alias="ARGON2_MAX_IN_FLIGHT")
    argon2_max_queued: int = Field(8, ge=0, validation_alias="ARGON2_MAX_QUEUED")

    login_max_failures: int = Field(5, ge=1, validation_alias="LOGIN_MAX_FAILURES")
    login_window_seconds: int = Field(900, ge=1, validation_alias="LOGIN_WINDOW_SECONDS")
    login_delay_after_failures: int = Field(10, ge=1, validation_alias="LOGIN_DELAY_AFTER_FAILURES")
    login_max_delay_seconds: float = Field(
        1.0, ge=0, le=10, validation_alias="LOGIN_MAX_DELAY_SECONDS"
    )
    login_rate_per_client: int = Field(30, ge=1, validation_alias="LOGIN_RATE_PER_CLIENT")
    register_rate_per_client: int = Field(10, ge=1, validation_alias="REGISTER_RATE_PER_CLIENT")
    client_rate_window_seconds: int = Field(60, ge=1, validation_alias="CLIENT_RATE_WINDOW_SECONDS")
    redis_timeout_seconds: float = Field(1.0, gt=0, validation_alias="REDIS_TIMEOUT_SECONDS")
    postgres_timeout_seconds: float = Field(5.0, gt=0, validation_alias="POSTGRES_TIMEOUT_SECONDS")

    admin_email: str | None = Field(None, validation_alias="ADMIN_EMAIL")
    admin_password: SecretStr | None = Field(None, validation_alias="ADMIN_PASSWORD")

    @field_validator(
        "jwt_private_key",
        "jwt_private_key_file",
        "jwt_retired_public_keys",
        "admin_email",
        "admin_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose files pass optional variables as empty strings (`${ADMIN_EMAIL:-}`).
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("argon2_memory_cost_kib")
    @classmethod
    def _argon2_memory_covers_lanes(cls, value: int, info: ValidationInfo) -> int:
        # argon2 needs at least 8 KiB per lane; a field (not model) validator so that the error
        # echoes only this value, never the other settings (the signing key among them).
        lanes = info.data.get("argon2_parallelism", 1)
        if value < 8 * lanes:
            raise ValueError(f"must be at least 8 * ARGON2_PARALLELISM ({8 * lanes})")
        return value

    def admin_account_problem(self) -> str | None:
        """What is wrong with ADMIN_EMAIL / ADMIN_PASSWORD, if anything.

        Not a validator: pydantic's error would echo the input, and with it the password.
        """
        if not (self.admin_email and self.admin_password):
            return None
        try:
            validate_new_email(self.admin_email)
            validate_new_password(self.admin_password.get_secret_value())
        except InvalidArgument as error:
            variable = "ADMIN_EMAIL" if error.field == "email" else "ADMIN_PASSWORD"
            return f"{variable}: {error.message}"
        return None
