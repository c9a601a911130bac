"""Settings: environment variables in, one clear line and exit code 2 for a bad one."""

from __future__ import annotations

import pytest
from pydantic import Field

from chassis.settings import (
    AmqpSettings,
    PostgresSettings,
    RedisSettings,
    ServiceSettings,
    load_settings,
)


class ShopSettings(ServiceSettings, PostgresSettings, AmqpSettings, RedisSettings):
    service_name = "service-shop"
    grpc_port: int = Field(50099, validation_alias="SHOP_GRPC_PORT")
    db_name: str = Field(validation_alias="SHOP_DB_NAME")


def test_malformed_variable_stops_the_service_with_one_line_naming_it(start_sample) -> None:
    process, _ = start_sample(SAMPLE_GRPC_PORT="abc")
    assert process.wait(20) == 2
    assert process.stderr_lines == [
        "sample-service: configuration error: SAMPLE_GRPC_PORT: Input should be a valid "
        "integer, unable to parse string as an integer (got 'abc')"
    ]


def test_missing_required_variable_is_reported_as_required(start_sample) -> None:
    process, _ = start_sample(SAMPLE_GRPC_PORT=None)
    assert process.wait(20) == 2
    assert process.stderr_lines == [
        "sample-service: configuration error: SAMPLE_GRPC_PORT is required"
    ]


def test_every_bad_variable_is_named_on_the_same_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SHUTDOWN_GRACE_SECONDS", "-1")
    monkeypatch.delenv("SHOP_DB_NAME", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(ShopSettings)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err == (
        "service-shop: configuration error: SHUTDOWN_GRACE_SECONDS: Input should be greater "
        "than or equal to 0 (got '-1'); SHOP_DB_NAME is required\n"
    )


def test_store_mixins_read_their_variables_case_insensitively(monkeypatch) -> None:
    monkeypatch.setenv("SHOP_DB_NAME", "shop")
    monkeypatch.setenv("postgres_url", "postgresql://pg.internal:6543")
    monkeypatch.setenv("AMQP_URL", "amqp://u:p@rabbit:5672/")
    monkeypatch.setenv("QUEUE_PREFIX", "test.1.")
    monkeypatch.setenv("REDIS_KEY_PREFIX", "test:1:")
    monkeypatch.setenv("SHUTDOWN_GRACE_SECONDS", "2.5")
    settings = load_settings(ShopSettings)
    assert settings.db_name == "shop"
    assert settings.postgres_url == "postgresql://pg.internal:6543"
    assert settings.amqp_url == "amqp://u:p@rabbit:5672/"
    assert settings.queue_prefix == "test.1."
    assert settings.events_exchange == "ecommerce.events"
    assert settings.redis_key_prefix == "test:1:"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.grpc_port == 50099
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.otel_exporter_otlp_endpoint is None
