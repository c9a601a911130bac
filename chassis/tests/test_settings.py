"""Settings: environment variables in, one clear line and exit code 2 for a bad one."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr, model_validator

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


@pytest.mark.slow
def test_malformed_variable_stops_the_service_with_one_line_naming_it(start_sample) -> None:
    process, _ = start_sample(SAMPLE_GRPC_PORT="abc")
    assert process.wait(20) == 2
    assert process.stderr_lines == [
        "sample-service: configuration error: SAMPLE_GRPC_PORT: Input should be a valid "
        "integer, unable to parse string as an integer (got 'abc')"
    ]


@pytest.mark.slow
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


class VaultSettings(ServiceSettings):
    service_name = "service-vault"
    api_password: SecretStr = Field(validation_alias="VAULT_API_PASSWORD", min_length=12)
    master_key_hex: str = Field(validation_alias="VAULT_MASTER_KEY", pattern="^[0-9a-f]{64}$")
    replicas: int = Field(1, validation_alias="VAULT_REPLICAS")

    @model_validator(mode="after")
    def _replicas_need_a_long_password(self) -> VaultSettings:
        if self.replicas > 1 and len(self.api_password.get_secret_value()) < 20:
            raise ValueError("several replicas need a password of 20 characters")
        return self


def test_a_bad_secret_is_named_but_its_value_never_printed(monkeypatch, capsys) -> None:
    monkeypatch.setenv("VAULT_API_PASSWORD", "hunter2")
    monkeypatch.setenv("VAULT_MASTER_KEY", "not-hex-but-secret")
    with pytest.raises(SystemExit):
        load_settings(VaultSettings)
    err = capsys.readouterr().err
    assert "VAULT_API_PASSWORD" in err
    assert "VAULT_MASTER_KEY" in err
    assert "hunter2" not in err
    assert "not-hex-but-secret" not in err


def test_a_whole_settings_error_does_not_echo_the_environment(monkeypatch, capsys) -> None:
    monkeypatch.setenv("VAULT_API_PASSWORD", "twelve-chars-ok")
    monkeypatch.setenv("VAULT_MASTER_KEY", "a" * 64)
    monkeypatch.setenv("VAULT_REPLICAS", "3")
    with pytest.raises(SystemExit):
        load_settings(VaultSettings)
    err = capsys.readouterr().err
    assert "several replicas need a password of 20 characters" in err
    assert "twelve-chars-ok" not in err
    assert "a" * 64 not in err


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


def test_an_aliased_setting_is_read_from_its_own_variable_only(monkeypatch, capsys) -> None:
    # Generic names (honcho sets PORT, shells set HOST) must never stand in for a service's own.
    monkeypatch.setenv("DB_NAME", "somebody-elses")
    monkeypatch.setenv("GRPC_PORT", "1")
    monkeypatch.delenv("SHOP_DB_NAME", raising=False)
    with pytest.raises(SystemExit):
        load_settings(ShopSettings)
    assert "SHOP_DB_NAME is required" in capsys.readouterr().err
    monkeypatch.setenv("SHOP_DB_NAME", "shop")
    assert load_settings(ShopSettings).grpc_port == 50099


def test_the_trace_sampler_is_read_from_the_standard_otel_variables(monkeypatch) -> None:
    monkeypatch.setenv("SHOP_DB_NAME", "shop")
    defaults = load_settings(ShopSettings)
    assert (defaults.otel_traces_sampler, defaults.otel_traces_sampler_arg) == (
        "parentbased_traceidratio",
        1.0,
    )
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    settings = load_settings(ShopSettings)
    assert (settings.otel_traces_sampler, settings.otel_traces_sampler_arg) == (
        "parentbased_always_off",
        0.25,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_TRACES_SAMPLER_ARG", "1.5"), ("OTEL_TRACES_SAMPLER", "traceidratio")],
)
def test_a_ratio_outside_0_1_or_a_sampler_that_ignores_the_parent_is_refused(
    monkeypatch, capsys, variable: str, value: str
) -> None:
    monkeypatch.setenv("SHOP_DB_NAME", "shop")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit):
        load_settings(ShopSettings)
    assert capsys.readouterr().err.startswith(f"service-shop: configuration error: {variable}: ")


def test_log_lines_are_json_unless_log_format_says_console_or_auto(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SHOP_DB_NAME", "shop")
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert load_settings(ShopSettings).log_format == "json"
    for value in ("console", "auto"):
        monkeypatch.setenv("LOG_FORMAT", value)
        assert load_settings(ShopSettings).log_format == value
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(SystemExit):
        load_settings(ShopSettings)
    assert capsys.readouterr().err.startswith("service-shop: configuration error: LOG_FORMAT: ")
