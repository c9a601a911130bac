"""Settings from the environment: defaults, empty means unset, one clear line for a bad value."""

import pytest

from user_service.main import serve
from user_service.settings import UserSettings
from user_service.tokens import SigningKey

VALID_PEM = SigningKey.generate().to_pem().decode()
VARIABLES = (
    "USER_GRPC_PORT",
    "USER_METRICS_PORT",
    "USER_DB_NAME",
    "JWT_PRIVATE_KEY",
    "JWT_PRIVATE_KEY_FILE",
    "JWT_RETIRED_PUBLIC_KEYS",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_TTL_SECONDS",
    "ARGON2_TIME_COST",
    "ARGON2_MEMORY_COST_KIB",
    "ARGON2_PARALLELISM",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW_SECONDS",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_match_the_documented_ones(clean_env: pytest.MonkeyPatch) -> None:
    settings = UserSettings()
    assert (settings.grpc_port, settings.metrics_port, settings.db_name) == (50051, 9101, "users")
    assert (settings.jwt_issuer, settings.jwt_audience) == (
        "ecommerce-user-service",
        "ecommerce-api",
    )
    assert settings.jwt_ttl_seconds == 3600
    # argon2-cffi's RFC 9106 low-memory profile.
    assert (settings.argon2_time_cost, settings.argon2_memory_cost_kib) == (3, 65536)
    assert settings.argon2_parallelism == 4
    assert (settings.login_max_failures, settings.login_window_seconds) == (5, 900)
    assert settings.admin_email is None
    assert settings.jwt_private_key is None


def test_empty_optional_variables_count_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    for name in ("JWT_PRIVATE_KEY", "JWT_PRIVATE_KEY_FILE", "ADMIN_EMAIL", "ADMIN_PASSWORD"):
        clean_env.setenv(name, "")
    settings = UserSettings()
    assert settings.jwt_private_key is None
    assert settings.jwt_private_key_file is None
    assert settings.admin_account_problem() is None


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"USER_GRPC_PORT": "abc"}, "USER_GRPC_PORT"),
        ({"JWT_PRIVATE_KEY": "not a key"}, "JWT_PRIVATE_KEY"),
        (
            {"JWT_PRIVATE_KEY": VALID_PEM, "JWT_RETIRED_PUBLIC_KEYS": "not a key"},
            "JWT_RETIRED_PUBLIC_KEYS",
        ),
        ({"ADMIN_EMAIL": "root", "ADMIN_PASSWORD": "long enough secret"}, "ADMIN_EMAIL"),
        ({"ADMIN_EMAIL": "root@example.com", "ADMIN_PASSWORD": "short"}, "ADMIN_PASSWORD"),
        ({"ARGON2_PARALLELISM": "4", "ARGON2_MEMORY_COST_KIB": "16"}, "ARGON2_MEMORY_COST_KIB"),
    ],
)
async def test_bad_setting_stops_the_start_with_one_line_naming_it_and_no_secret(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    named: str,
) -> None:
    clean_env.setenv("JWT_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nsecret-material")
    for name, value in variables.items():
        clean_env.setenv(name, value)
    with pytest.raises(SystemExit) as raised:
        await serve()
    assert raised.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"service-user: configuration error: {named}")
    for secret in ("short", "long enough secret", "secret-material"):
        assert secret not in line
